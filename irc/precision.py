"""Precisions and precision plans: which precision each layer runs at.

A *layer* is an op with a constant weight (conv2d, gemm); it is named by its node name
(``loc``) or, without one, its result name. A plan maps layer names to precisions; the
layers it does not name take its ``default``. ``"int4"`` means 4-bit weights with 8-bit
activations (W4A8), and so on: activations of integer layers are always 8-bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from irc.errors import IrcError
from irc.ir import Graph, Op
from irc.opdef import has_trait

PRECISIONS = ("fp32", "fp16", "int8", "int4", "int2")
ALIASES = {"w8a8": "int8", "w4a8": "int4", "w2a8": "int2", "float32": "fp32", "float16": "fp16"}
WEIGHT_BITS = {"int8": 8, "int4": 4, "int2": 2, "fp16": 16, "fp32": 32}


class PlanError(IrcError):
    """A precision or plan is malformed (unknown precision, unknown layer name)."""


def normalize_precision(text: str, where: str = "precision") -> str:
    """The canonical name of a precision (``"INT8"`` and ``"w8a8"`` give ``"int8"``)."""
    name = str(text).strip().lower()
    name = ALIASES.get(name, name)
    if name not in PRECISIONS:
        raise PlanError(f"{where}: unknown precision {text!r}; use one of {', '.join(PRECISIONS)}")
    return name


def layer_name(op: Op) -> str:
    """The name a plan uses for a layer: its node name, else its result's name."""
    return op.name or op.results[0].name


def layers(graph: Graph) -> list[Op]:
    """The graph's layers (ops with the "layer" trait: conv2d, gemm), in order."""
    return [op for op in graph.ops if has_trait(op.kind, "layer")]


@dataclass(frozen=True)
class PrecisionPlan:
    """Per-layer precisions; layers not in ``layers`` take ``default``."""

    default: str = "fp32"
    layers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "default", normalize_precision(self.default, "plan default"))
        object.__setattr__(
            self,
            "layers",
            {k: normalize_precision(v, f"plan entry '{k}'") for k, v in dict(self.layers).items()},
        )

    def precision_of(self, op: Op) -> str:
        """The precision planned for layer ``op``."""
        return self.layers.get(layer_name(op), self.default)

    def check_names(self, graph: Graph) -> None:
        """PlanError naming any plan entry that is not a layer of ``graph``."""
        known = {layer_name(op) for op in layers(graph)}
        unknown = sorted(set(self.layers) - known)
        if unknown:
            sample = ", ".join(sorted(known)[:5])
            raise PlanError(
                f"the precision plan names {len(unknown)} unknown layer(s): {unknown[:5]}; "
                f"layers are named like {sample}"
            )

    @property
    def is_float(self) -> bool:
        """True when no layer is planned at an integer precision."""
        values = set(self.layers.values()) | {self.default}
        return values <= {"fp32", "fp16"}


def as_plan(precision) -> PrecisionPlan:
    """A PrecisionPlan from a precision name, a {layer: precision} mapping (key
    ``"default"`` sets the default, else fp32), or a plan."""
    if isinstance(precision, PrecisionPlan):
        return precision
    if isinstance(precision, str):
        return PrecisionPlan(precision)
    if isinstance(precision, Mapping):
        entries = dict(precision)
        default = entries.pop("default", "fp32")
        return PrecisionPlan(default, entries)
    raise PlanError(
        f"precision must be a name ({', '.join(PRECISIONS)}), a mapping of layer names to "
        f"precisions, or a PrecisionPlan; got {type(precision).__name__}"
    )
