"""The declarative op table: each op kind's operands, attributes with defaults, and type rule.

An entry says what an op *is*; what it *computes* lives only in ``irc.reference``. The
table is filled by the modules of ``irc.ops`` (imported at the bottom of this file), so
``OPS`` is complete as soon as this module is imported.

Operand specs are names; a trailing ``?`` marks an optional operand (only trailing ones may
be absent) and a trailing ``*`` a variadic tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from irc.errors import TypeInferenceError
from irc.ir import Graph, Op, Value
from irc.tensor import ElidedTensor
from irc.types import TensorType

REQUIRED = object()  # marks an attribute with no default

ATTR_KINDS = ("int", "float", "str", "ints", "floats", "tensor")


@dataclass(frozen=True)
class Attr:
    """An attribute's kind (one of ``ATTR_KINDS``) and default (``REQUIRED`` if none)."""

    kind: str
    default: Any = REQUIRED
    choices: tuple = ()

    def __post_init__(self):
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind}")


InferFn = Callable[[list[TensorType], dict[str, Any]], list[TensorType]]


@dataclass(frozen=True)
class OpDef:
    """One op kind: operand specs, attributes, and its type inference rule."""

    name: str
    operands: tuple[str, ...]
    attrs: dict[str, Attr] = field(default_factory=dict)
    infer: InferFn | None = None
    doc: str = ""
    traits: frozenset[str] = frozenset()

    @property
    def min_operands(self) -> int:
        return sum(1 for s in self.operands if not s.endswith(("?", "*")))

    @property
    def max_operands(self) -> int | None:
        if any(s.endswith("*") for s in self.operands):
            return None
        return len(self.operands)

    def normalize_attrs(self, attrs: dict[str, Any], where: str) -> dict[str, Any]:
        """Check ``attrs`` against the table and fill defaults; raises TypeInferenceError.

        Keys starting with ``note_`` are *annotations* (analysis results such as a layer's
        sensitivity or measured latency): kept as given, printed and parsed, never part of
        an op's meaning. Their values are strings, numbers or tuples of numbers.
        """
        notes = {k: v for k, v in attrs.items() if k.startswith(NOTE_PREFIX)}
        for key, value in notes.items():
            if not isinstance(value, (str, int, float, tuple)) or isinstance(value, bool):
                raise TypeInferenceError(
                    f"{where}: annotation '{key}' must be a string, number or tuple of numbers"
                )
        unknown = set(attrs) - set(self.attrs) - set(notes)
        if unknown:
            raise TypeInferenceError(
                f"{where}: unknown attribute(s) {sorted(unknown)} for {self.name}; "
                f"it takes {sorted(self.attrs)}"
            )
        out: dict[str, Any] = {}
        for key, spec in self.attrs.items():
            if key in attrs:
                out[key] = _coerce(spec, attrs[key], f"{where}: attribute '{key}'")
            elif spec.default is REQUIRED:
                raise TypeInferenceError(f"{where}: {self.name} needs attribute '{key}'")
            else:
                out[key] = spec.default
        out.update(notes)
        return out

    def check_arity(self, count: int, where: str) -> None:
        hi = self.max_operands
        if count < self.min_operands or (hi is not None and count > hi):
            expect = f"{self.min_operands}" + ("+" if hi is None else f"..{hi}")
            raise TypeInferenceError(f"{where}: {self.name} takes {expect} operands, got {count}")


NOTE_PREFIX = "note_"


def _coerce(spec: Attr, value: Any, where: str) -> Any:
    kind = spec.kind
    try:
        if kind == "int":
            if isinstance(value, (float, np.floating)) and not float(value).is_integer():
                raise TypeError
            value = int(value)
        elif kind == "float":
            value = float(value)
        elif kind == "str":
            if isinstance(value, bytes):
                value = value.decode()
            if not isinstance(value, str):
                raise TypeError
        elif kind == "ints":
            value = tuple(int(v) for v in value)
        elif kind == "floats":
            value = tuple(float(v) for v in value)
        elif kind == "tensor":
            if not isinstance(value, (np.ndarray, ElidedTensor)):
                raise TypeError
    except (TypeError, ValueError):
        raise TypeInferenceError(f"{where} must be of kind {kind}, got {value!r}") from None
    if spec.choices and value not in spec.choices:
        raise TypeInferenceError(f"{where} must be one of {list(spec.choices)}, got {value!r}")
    return value


OPS: dict[str, OpDef] = {}


# What an op kind is, for the passes and analyses that treat kinds alike (one place for
# what used to be kind tuples written at each use):
TRAITS = {
    "layer": "a float layer with a weight operand (conv2d, gemm): what a precision plan names",
    "integer-layer": "an integer layer (qconv2d, qgemm): int8 activations, packed weights",
    "elementwise": "computes each result element from the same-index operand elements",
    "constant": "holds its value in an attribute (constant, qconstant)",
    "view": "its result is its operand's bytes under another shape (no copy needed)",
}


def define(name: str, operands, attrs=None, infer: InferFn | None = None, doc: str = "",
           traits=()) -> OpDef:  # fmt: skip
    """Register an op kind in the table, with its ``traits`` (keys of ``TRAITS``)."""
    if name in OPS:
        raise ValueError(f"op {name} defined twice")
    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise ValueError(f"op {name}: unknown traits {sorted(unknown)}")
    opdef = OpDef(name, tuple(operands), dict(attrs or {}), infer, doc, frozenset(traits))
    OPS[name] = opdef
    return opdef


def has_trait(kind: str, trait: str) -> bool:
    """Whether op kind ``kind`` has ``trait`` (False for a kind the table lacks)."""
    if trait not in TRAITS:
        raise ValueError(f"unknown trait {trait!r}; traits: {', '.join(TRAITS)}")
    opdef = OPS.get(kind)
    return opdef is not None and trait in opdef.traits


def kinds_with(trait: str) -> frozenset[str]:
    """Every op kind that has ``trait``."""
    if trait not in TRAITS:
        raise ValueError(f"unknown trait {trait!r}; traits: {', '.join(TRAITS)}")
    return frozenset(name for name, opdef in OPS.items() if trait in opdef.traits)


def get_opdef(kind: str) -> OpDef:
    """The table entry for ``kind``; TypeInferenceError if there is none."""
    try:
        return OPS[kind]
    except KeyError:
        raise TypeInferenceError(
            f"unknown op kind '{kind}'; known: {', '.join(sorted(OPS))}"
        ) from None


def infer_types(kind: str, operand_types: list[TensorType], attrs: dict, where: str):
    """Result types of a ``kind`` op; attributes must be normalised already."""
    opdef = get_opdef(kind)
    opdef.check_arity(len(operand_types), where)
    try:
        return opdef.infer(operand_types, attrs)
    except TypeInferenceError as e:
        raise TypeInferenceError(f"{where}: {e}") from None
    except (ValueError, IndexError, ZeroDivisionError) as e:
        raise TypeInferenceError(f"{where}: {kind}: {e}") from None


def build(
    graph: Graph,
    kind: str,
    operands: list[Value],
    attrs: dict[str, Any] | None = None,
    *,
    name: str = "",
    result_names: list[str] | None = None,
    index: int | None = None,
) -> Op:
    """Create a ``kind`` op in ``graph``: attributes checked and defaulted, types inferred."""
    opdef = get_opdef(kind)
    where = f"op '{name}' ({kind})" if name else f"op {kind}"
    full = opdef.normalize_attrs(attrs or {}, where)
    types = infer_types(kind, [v.type for v in operands], full, where)
    return graph.create_op(
        kind, operands, full, types, name=name, result_names=result_names, index=index
    )


from irc import ops as _ops  # noqa: E402,F401  (fills OPS)
