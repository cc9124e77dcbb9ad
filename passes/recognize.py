"""recognize-activations: activations an exporter wrote out as arithmetic, made one op.

paddle2onnx writes HardSwish as ``x * clip(x + 3, 0, 6) / 6``: four float ops that neither
fuse into the layer before them nor run in integers. This pass finds

    div(mul(x, clip(add(x, 3), 0, 6)), 6)      (or mul(·, 1/6) for the div; any operand
                                                 order of the add and the mul)

where each intermediate value has its one user in the pattern, and replaces it by
``hard_swish(x)``, which ``fuse`` can then merge into the layer before it and the quantize
pass can run as a lookup table. The result keeps the name of the last op replaced. The two
forms differ only in float rounding (a few units in the last place).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from irc.ir import Graph, Op, Value
from irc.matching import constant_array, sole_user
from irc.opdef import build
from irc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class RecognizeActivations(Pass):
    """Replace written-out HardSwish arithmetic by ``hard_swish``."""

    name: ClassVar[str] = "recognize-activations"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        found = 0
        for op in list(graph.ops):
            if op.graph is not graph or op.kind not in ("div", "mul"):
                continue
            x = _hard_swish_input(graph, op)
            if x is not None:
                _replace(graph, op, x)
                found += 1
        if found:
            graph.remove_dead_ops()  # the add, clip and mul each pattern left unused
        return {"hard-swish": found}


def _scalar(value: Value) -> float | None:
    """The one number a constant ``value`` holds (any shape of one element), else None."""
    array = constant_array(value)
    if array is None or array.size != 1 or not np.issubdtype(array.dtype, np.floating):
        return None
    return float(array.reshape(-1)[0])


def _other(op: Op, value: Value) -> Value | None:
    """The operand of binary ``op`` other than ``value`` (None when ``value`` is neither)."""
    a, b = op.operands
    if a is value:
        return b
    return a if b is value else None


def _hard_swish_input(graph: Graph, last: Op) -> Value | None:
    """x when ``last`` ends ``x * clip(x + 3, 0, 6) / 6`` (or ``* (1/6)``), else None."""
    if len(last.operands) != 2 or not np.isclose(_sixth(last), 1.0 / 6.0, rtol=1e-6):
        return None
    product = last.operands[0].producer
    if product is None or product.kind != "mul" or sole_user(graph, product.result) is not last:
        return None
    for clipped in product.operands:
        clip = clipped.producer
        if clip is None or clip.kind != "clip" or sole_user(graph, clipped) is not product:
            continue
        if (clip.attrs["min"], clip.attrs["max"]) != (0.0, 6.0):
            continue
        shifted = clip.operands[0].producer
        if shifted is None or shifted.kind != "add" or shifted.attrs.get("activation") != "none":
            continue
        if sole_user(graph, shifted.result) is not clip:
            continue
        x = _other(product, clipped)
        three = None if x is None else _other(shifted, x)
        if three is not None and _scalar(three) == 3.0 and x.type == last.result.type:
            return x
    return None


def _sixth(op: Op) -> float:
    """What ``op`` multiplies its first operand by when its second is a scalar constant
    (``div`` by c: 1/c); nan otherwise."""
    c = _scalar(op.operands[1])
    if c is None or c == 0.0:
        return float("nan")
    return 1.0 / c if op.kind == "div" else c


def _replace(graph: Graph, last: Op, x: Value) -> None:
    """``hard_swish(x)`` in place of the pattern ending at ``last`` (the ops before it are
    left dead, for the caller to erase)."""
    name = last.result.name
    new = build(graph, "hard_swish", [x], name=last.name,
                result_names=[graph.fresh_name(name + ".hs")],
                index=graph.index_of(last))  # fmt: skip
    graph.replace_all_uses_with(last.result, new.result)
    graph.erase_op(last)
    graph.rename(new.result, name)
