"""recognize-activations: activations an exporter wrote out as arithmetic, made one op.

paddle2onnx writes HardSwish as ``x * clip(x + 3, 0, 6) / 6``, and it and PyTorch (before
ONNX had a Gelu op) write GELU as ``x * (erf(x / √2) + 1) * 0.5``: four or five float ops
that neither fuse into the layer before them nor run in integers. This pass finds

    div(mul(x, clip(add(x, 3), 0, 6)), 6)      (or mul(·, 1/6) for the div; any operand
                                                 order of the add and the mul)
    mul(mul(x, add(erf(div(x, √2)), 1)), 0.5)  (or mul(x, 1/√2) for the div; the three
                                                 factors x, 1 + erf, 0.5 in any grouping
                                                 and order)

where each intermediate value has its one user in the pattern, and replaces it by
``hard_swish(x)`` or ``gelu(x)``, which ``fuse`` can then merge into the layer before it
(hard_swish) and the quantize pass can run as a lookup table. The result keeps the name of
the last op replaced. The forms differ only in float rounding (a few units in the last
place).
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
    """Replace written-out HardSwish and GELU arithmetic by ``hard_swish`` and ``gelu``."""

    name: ClassVar[str] = "recognize-activations"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        found = {"hard-swish": 0, "gelu": 0}
        for op in list(graph.ops):
            if op.graph is not graph or op.kind not in ("div", "mul"):
                continue
            for kind, match in (("hard_swish", _hard_swish_input), ("gelu", _gelu_input)):
                x = match(graph, op)
                if x is not None:
                    _replace(graph, op, x, kind)
                    found[kind.replace("_", "-")] += 1
                    break
        if sum(found.values()):
            graph.remove_dead_ops()  # the ops before the last one each pattern left unused
        return found


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
    if len(last.operands) != 2 or not np.isclose(_scale_factor(last), 1.0 / 6.0, rtol=1e-6):
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


def _factors(graph: Graph, last: Op) -> list[Value]:
    """The operands of the product ``last`` (a mul) computes, through the muls feeding it
    whose one user is the mul they feed (three levels at most: enough for GELU's factors)."""
    factors = []
    for operand in last.operands:
        inner = operand.producer
        if inner is not None and inner.kind == "mul" and sole_user(graph, operand) is last:
            factors.extend(inner.operands)
        else:
            factors.append(operand)
    return factors


def _gelu_input(graph: Graph, last: Op) -> Value | None:
    """x when ``last`` ends ``x * (erf(x / √2) + 1) * 0.5`` in any grouping, else None."""
    if last.kind != "mul":
        return None
    factors = _factors(graph, last)
    if len(factors) != 3:
        return None
    halves = [f for f in factors if _scalar(f) == 0.5]
    gates = [f for f in factors if _erf_gate_input(graph, f) is not None]
    if len(halves) != 1 or len(gates) != 1:
        return None
    (x,) = [f for f in factors if f is not halves[0] and f is not gates[0]]
    if _erf_gate_input(graph, gates[0]) is x and x.type == last.result.type:
        return x
    return None


def _erf_gate_input(graph: Graph, gate: Value) -> Value | None:
    """x when ``gate`` is ``erf(x / √2) + 1`` (or ``erf(x * (1/√2))``), each step used only
    by the next; else None."""
    shifted = gate.producer
    if shifted is None or shifted.kind != "add" or shifted.attrs.get("activation") != "none":
        return None
    if len(gate.uses) != 1:
        return None
    for erf_value in shifted.operands:
        erf = erf_value.producer
        one = _other(shifted, erf_value)
        if erf is None or erf.kind != "erf" or one is None or _scalar(one) != 1.0:
            continue
        if sole_user(graph, erf_value) is not shifted:
            continue
        scaled = erf.operands[0].producer
        if scaled is None or scaled.kind not in ("div", "mul"):
            continue
        if sole_user(graph, scaled.result) is not erf:
            continue
        if np.isclose(_scale_factor(scaled), 1.0 / np.sqrt(2.0), rtol=1e-6):  # x·c, c = 1/√2
            return scaled.operands[0]
    return None


def _scale_factor(op: Op) -> float:
    """What ``op`` multiplies its first operand by when its second is a scalar constant
    (``div`` by c: 1/c); nan otherwise."""
    c = _scalar(op.operands[1])
    if c is None or c == 0.0:
        return float("nan")
    return 1.0 / c if op.kind == "div" else c


def _replace(graph: Graph, last: Op, x: Value, kind: str) -> None:
    """``kind(x)`` in place of the pattern ending at ``last`` (the ops before it are left
    dead, for the caller to erase)."""
    name = last.result.name
    new = build(graph, kind, [x], name=last.name,
                result_names=[graph.fresh_name(f"{name}.{kind}")],
                index=graph.index_of(last))  # fmt: skip
    graph.replace_all_uses_with(last.result, new.result)
    graph.erase_op(last)
    graph.rename(new.result, name)
