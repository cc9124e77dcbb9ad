"""Constant folding: evaluate every op whose operands are all constants, through the
reference (``irc.reference``, the one meaning of every op), and replace it by a constant op
whose result keeps the op's result name; a ``shape`` op of a value whose shape is static
folds too (so shape arithmetic vanishes once input shapes are specialised). The
``constant-fold`` pass runs it over a graph; the ONNX importer folds each node's new ops
as it converts them (so shape computations vanish at import).

Not folded: constants without data (elided from a dump), ops the reference cannot run, and
ops whose computed array would not have the result's type (a quantized result type, say,
which an array alone cannot carry).

Size limit: no constant larger than ``max_constant_bytes()`` is materialised, here or by the
ONNX importer (ConstantOfShape): a 4 KB model must not make irc allocate gigabytes. The
limit is ``MAX_CONSTANT_BYTES`` (2 GiB, protobuf's own cap on a model file), or the
environment variable ``IRC_MAX_CONSTANT_BYTES`` (a byte count) when set; a larger constant
raises ``ConstantTooLargeError`` naming the op, before anything is allocated.
"""

from __future__ import annotations

import math
import os

import numpy as np

from irc.errors import ConstantTooLargeError, IrcError
from irc.ir import Graph, Value
from irc.matching import constant_array
from irc.opdef import build
from irc.reference import REFERENCE, evaluate_op
from irc.types import DType, TensorType, type_of_array

MAX_CONSTANT_BYTES = 2 * 1024**3
"""The default cap on one materialised constant, in bytes (see the module docstring)."""

LIMIT_VARIABLE = "IRC_MAX_CONSTANT_BYTES"


def max_constant_bytes() -> int:
    """The cap on one materialised constant: ``$IRC_MAX_CONSTANT_BYTES`` if set, else
    ``MAX_CONSTANT_BYTES``; IrcError when the variable is not a whole number of bytes."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return MAX_CONSTANT_BYTES
    try:
        limit = int(text.replace("_", ""))
    except ValueError:
        limit = -1
    if limit < 0:
        raise IrcError(f"{LIMIT_VARIABLE} must be a whole number of bytes, got '{text}'")
    return limit


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``2.0 MiB``, ``4.0 TiB``."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        n /= 1024
        if n < 1024 or unit == "EiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def check_constant_size(shape, dtype: DType | np.dtype, where: str) -> None:
    """ConstantTooLargeError naming ``where`` (an op or node) when a constant of ``shape``
    and ``dtype`` would exceed ``max_constant_bytes()``; call it before allocating."""
    itemsize = dtype.numpy.itemsize if isinstance(dtype, DType) else np.dtype(dtype).itemsize
    size = math.prod(int(d) for d in shape) * itemsize  # python ints: no int64 overflow
    limit = max_constant_bytes()
    if size > limit:
        raise ConstantTooLargeError(
            f"{where}: its constant result {list(shape)} would take {format_bytes(size)}, over "
            f"irc's limit of {format_bytes(limit)}; set {LIMIT_VARIABLE} (bytes) to raise it"
        )


def _check_results(op) -> None:
    """Refuse to fold an op whose static results would exceed the constant size limit."""
    for r in op.results:
        t: TensorType = r.type
        if t.is_static:
            check_constant_size(t.shape, t.dtype, f"op {op.label()}")


def _static_shape(op) -> list[np.ndarray] | None:
    """The result of a ``shape`` op whose input's shape is static (its data need not be
    known: once the inputs are specialised, shape arithmetic folds from here), else None."""
    if op.kind != "shape" or not op.operands[0].type.is_static:
        return None
    dims = op.operands[0].type.shape[op.attrs["start"] : op.attrs["end"]]
    return [np.array(dims, np.int64)]


def fold_constants(graph: Graph, start: int = 0) -> dict[int, Value]:
    """Fold the ops from index ``start`` on whose operands are all constants with data.

    Folding cascades: a folded op's constant feeds later ops in the same sweep. An op whose
    result would exceed ``max_constant_bytes()`` raises ConstantTooLargeError before it is
    evaluated. Returns the replacements, ``id(old value) -> new constant value``; the old
    operands are left in the graph (callers may still refer to them) and may now be dead.
    """
    replaced: dict[int, Value] = {}
    i = start
    while i < len(graph.ops):
        op = graph.ops[i]
        outputs = _static_shape(op)
        if outputs is None:
            arrays = [constant_array(v) for v in op.operands]
            if not op.operands or any(a is None for a in arrays) or op.kind not in REFERENCE:
                i += 1
                continue
            _check_results(op)
            outputs = [np.asarray(a, order="C") for a in evaluate_op(op, arrays)]
        if len(outputs) != len(op.results) or any(
            type_of_array(a) != r.type for a, r in zip(outputs, op.results)
        ):
            i += 1
            continue
        for k, (r, array) in enumerate(zip(list(op.results), outputs)):
            name = r.name
            # the constant takes the name, so the old result steps aside first
            graph.rename(r, graph.fresh_name(name + ".folded"))
            const = build(graph, "constant", [], {"value": array}, result_names=[name], index=i + k)
            graph.replace_all_uses_with(r, const.result)
            replaced[id(r)] = const.result
        graph.erase_op(op)
        i += len(outputs)
    return replaced
