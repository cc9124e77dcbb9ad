"""fuse: merge per-channel scales, biases and activations into the conv2d / gemm / add before.

Starting from each conv2d, gemm or add without a fused activation, and following the chain
of sole users:

- ``mul`` by a constant with one factor per output channel (conv2d, gemm): the weight's
  output channels and the bias are scaled. A weight used by another op is refused, as in
  ``fold-batchnorm`` (scaling it would need a copy);
- ``add`` of a constant that is a per-output-channel bias (conv2d), or any constant that
  broadcasts into the result without growing it (gemm): merged into the bias operand,
  which is created when absent;
- ``relu``, ``clip`` or ``hard_swish`` whose kind is in ``acts``: becomes the op's
  ``activation`` (``clip`` also sets ``act_min`` / ``act_max``), and ends the chain.

Naming rule: the fused op's result takes the name of the last op merged into it, so graph
outputs keep their names and a dump reads as the model did (``%relu_3 = conv2d(...)``).
The fused op keeps its own node name (``loc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from irc.ir import Graph, Op, Value
from irc.matching import (
    absorb,
    constant_array,
    erase_dead_producers,
    new_constant,
    per_channel,
    rebuild,
    set_constant,
    sole_user,
)
from irc.opdef import has_trait, kinds_with
from irc.pass_manager import Pass, PassContext, register_pass

ANCHORS = kinds_with("layer") | {"add"}  # chains start at ops with an activation attribute
ACTIVATION_OPS = ("relu", "clip", "hard_swish")


@register_pass
@dataclass(frozen=True)
class Fuse(Pass):
    """Fuse per-channel scales, biases and the activations in ``acts`` into layers."""

    name: ClassVar[str] = "fuse"
    acts: tuple[str, ...] = ACTIVATION_OPS

    def __post_init__(self):
        unknown = sorted(set(self.acts) - set(ACTIVATION_OPS))
        if unknown:
            raise ValueError(f"acts {unknown} are not fusable; choose from {list(ACTIVATION_OPS)}")

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        stats = {"fused-scale": 0, "fused-bias": 0, "fused-activation": 0, "refused": 0}
        for op in list(graph.ops):
            if op.graph is not graph or op.kind not in ANCHORS:
                continue
            while op.attrs["activation"] == "none":
                user = sole_user(graph, op.result)
                if user is None:
                    break
                if user.kind in self.acts:
                    _fuse_activation(graph, op, user)
                    stats["fused-activation"] += 1
                    break
                if not has_trait(op.kind, "layer") or user.kind not in ("add", "mul"):
                    break
                constant = _other_constant(op.result, user)
                if constant is None or user.result.type != op.result.type:
                    break
                array = constant_array(constant)
                vector = per_channel(array, op.result.type)
                if user.kind == "add" and op.kind == "gemm":
                    vector = array  # gemm's c takes any shape that broadcasts into [M, N]
                if vector is None:
                    break
                reason = check(op, user)
                if reason is not None:
                    stats["refused"] += 1
                    key = f"refused: {reason}"
                    stats[key] = stats.get(key, 0) + 1
                    break
                if user.kind == "add":
                    op = _fuse_bias(graph, op, user, vector)
                    stats["fused-bias"] += 1
                else:
                    op = _fuse_scale(graph, op, user, vector)
                    stats["fused-scale"] += 1
        return stats


def check(layer: Op, user: Op) -> str | None:
    """Why the constant ``add`` or ``mul`` ``user`` cannot merge into ``layer``; None if it can.

    The caller has matched the pattern: ``user`` is the sole use of ``layer``'s result and
    its other operand is a per-channel constant.
    """
    if len(layer.operands) > 2 and constant_array(layer.operands[2]) is None:
        return "the bias is not a constant with data"
    if user.kind == "mul":
        weight = layer.operands[1]
        if constant_array(weight) is None:
            return "the weight is not a constant with data"
        if len(weight.uses) > 1:
            return "the weight is shared with another op"
    return None


def _other_constant(value: Value, op: Op) -> Value | None:
    """The operand of binary ``op`` that is not ``value``, if it is a constant with data."""
    a, b = op.operands
    other = b if a is value else a
    if other is value or constant_array(other) is None:
        return None
    return other


def _fuse_activation(graph: Graph, op: Op, act: Op) -> None:
    attrs = {"activation": act.kind}
    if act.kind == "clip":
        attrs.update(act_min=act.attrs["min"], act_max=act.attrs["max"])
    op.attrs.update(attrs)
    absorb(graph, act, op.result)


def _fuse_bias(graph: Graph, layer: Op, add: Op, addend: np.ndarray) -> Op:
    old = constant_array(layer.operands[2]) if len(layer.operands) > 2 else None
    if layer.kind == "conv2d":
        bias, attrs = (addend if old is None else old + addend), {}
    else:
        bias, attrs = (addend if old is None else layer.attrs["beta"] * old + addend), {"beta": 1.0}
    return _merge(graph, layer, add, bias, attrs)


def _fuse_scale(graph: Graph, layer: Op, mul: Op, factor: np.ndarray) -> Op:
    weight = layer.operands[1]
    w = constant_array(weight)
    if layer.kind == "conv2d":
        set_constant(graph, weight, w * factor.reshape(-1, 1, 1, 1))
    else:
        set_constant(
            graph, weight, w * (factor.reshape(-1, 1) if layer.attrs["trans_b"] else factor)
        )
    if len(layer.operands) < 3:
        (constant,) = [v for v in mul.operands if v is not layer.result]
        absorb(graph, mul, layer.result)
        erase_dead_producers(graph, [constant])
        return layer
    c = constant_array(layer.operands[2])
    if layer.kind == "conv2d":
        return _merge(graph, layer, mul, c * factor, {})
    return _merge(graph, layer, mul, layer.attrs["beta"] * c * factor, {"beta": 1.0})


def _merge(graph: Graph, layer: Op, user: Op, bias: np.ndarray, attrs: dict) -> Op:
    """Rebuild ``layer`` with a new bias constant and remove ``user``, now merged into it.

    A new constant rather than an edit in place, because the old bias may be shared. It is
    named after the old bias, else after the merged op's constant, once those are gone.
    """
    old = layer.operands[2] if len(layer.operands) > 2 else None
    (merged,) = [v for v in user.operands if v is not layer.result]
    bias = np.asarray(bias, dtype=layer.result.type.dtype.numpy)
    value = new_constant(graph, bias, "bias.fused", before=layer)
    layer = rebuild(graph, layer, layer.operands[:2] + [value], attrs)
    absorb(graph, user, layer.result)
    erase_dead_producers(graph, [merged] + ([old] if old is not None else []))
    preferred = old.name if old is not None else merged.name
    if not graph.has_value(preferred):
        graph.rename(value, preferred)
    return layer
