"""fold-batchnorm: fold an inference batchnorm into the conv2d or gemm that feeds it.

    y = batchnorm(conv(x, w, b)) = conv(x, w * f, (b - mean) * f + beta),
    f = gamma / sqrt(var + epsilon), one factor per output channel

(for gemm, ``alpha * op(a) @ op(b) + beta_c * c``, the columns of op(b) are scaled, so b's
rows when ``trans_b`` is 1, and the new ``c`` absorbs ``beta_c``). The factors are computed
in float64 and the new weights stored in the weight's element type. The batchnorm is
removed and the layer's result takes the batchnorm result's name.

``check`` says why a batchnorm fed by a conv2d or gemm is not folded (as onnxscript's
rewriter rules do); the statistics count folds and refusals by reason. A weight used by
another op is refused: folding would have to copy it, doubling its memory. A shared bias
is not refused, because a new bias costs one number per channel and the common
subexpression elimination of ``canonicalize`` merges equal biases (zeros, often), which
would otherwise block every fold after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from irc.ir import Graph, Op
from irc.matching import (
    absorb,
    constant_array,
    erase_dead_producers,
    new_constant,
    rebuild,
    set_constant,
    sole_user,
)
from irc.opdef import has_trait
from irc.pass_manager import Pass, PassContext, register_pass


def check(graph: Graph, layer: Op, bn: Op) -> str | None:
    """Why ``bn`` (fed by ``layer``) cannot be folded into ``layer``; None when it can."""
    if sole_user(graph, layer.result) is not bn:
        return "the layer's result has other uses"
    if layer.attrs["activation"] != "none":
        return "the layer has a fused activation"
    if not layer.result.type.dtype.is_float:
        return "the layer is not a float layer"
    weight = layer.operands[1]
    if constant_array(weight) is None:
        return "the weight is not a constant with data"
    if len(layer.operands) > 2 and constant_array(layer.operands[2]) is None:
        return "the bias is not a constant with data"
    if any(constant_array(p) is None for p in bn.operands[1:]):
        return "the batchnorm parameters are not constants with data"
    if len(weight.uses) > 1:
        return "the weight is shared with another op"
    return None


def fold(graph: Graph, layer: Op, bn: Op) -> None:
    """Fold ``bn`` into ``layer`` (``check`` must have returned None)."""
    gamma, beta, mean, var = (constant_array(p).astype(np.float64) for p in bn.operands[1:])
    factor = gamma / np.sqrt(var + bn.attrs["epsilon"])
    shift = beta - mean * factor
    weight = layer.operands[1]
    w = constant_array(weight).astype(np.float64)
    old_bias = layer.operands[2] if len(layer.operands) > 2 else None
    b = 0.0 if old_bias is None else constant_array(old_bias).astype(np.float64)
    attrs = {}
    if layer.kind == "conv2d":
        w = w * factor.reshape(-1, 1, 1, 1)
    else:
        w = w * (factor.reshape(-1, 1) if layer.attrs["trans_b"] else factor)
        b = b * layer.attrs["beta"]
        attrs["beta"] = 1.0
    b = np.asarray(b * factor + shift, dtype=weight.type.dtype.numpy)
    set_constant(graph, weight, w)

    bias_name = old_bias.name if old_bias is not None else bn.operands[2].name
    if old_bias is not None and len(old_bias.uses) == 1 and b.shape == old_bias.type.shape:
        set_constant(graph, old_bias, b)
        bias = old_bias
    else:
        bias = new_constant(graph, b, bias_name + ".folded", before=layer)
    dead = list(bn.operands[1:]) + ([old_bias] if old_bias is not None else [])
    if bias is old_bias:
        layer.attrs.update(attrs)
    else:
        layer = rebuild(graph, layer, layer.operands[:2] + [bias], attrs)
    absorb(graph, bn, layer.result)
    erase_dead_producers(graph, dead)
    if bias is not old_bias and not graph.has_value(bias_name):
        graph.rename(bias, bias_name)


@register_pass
@dataclass(frozen=True)
class FoldBatchnorm(Pass):
    """Fold every batchnorm that follows a conv2d or gemm into its weights and bias."""

    name: ClassVar[str] = "fold-batchnorm"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        stats = {"folded": 0, "refused": 0}
        for bn in list(graph.ops):
            if bn.kind != "batchnorm" or bn.graph is not graph:
                continue
            layer = bn.operands[0].producer
            if layer is None or not has_trait(layer.kind, "layer"):
                continue
            reason = check(graph, layer, bn)
            if reason is None:
                fold(graph, layer, bn)
                stats["folded"] += 1
            else:
                stats["refused"] += 1
                key = f"refused: {reason}"
                stats[key] = stats.get(key, 0) + 1
        return stats
