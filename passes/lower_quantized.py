"""lower-quantized (L1 → L2) and pack-weights (L2 → L3): the integer layers made explicit.

``lower-quantized`` gives every qconv2d / qgemm an int32 bias ``qconstant`` at scale
s_x·s_w[c] (zeros when it had none) and its per-channel fixed-point requantization as two
int32 constant operands, ``multiplier`` and ``shift`` (``irc.quant.layer_multipliers``),
so that a backend needs nothing from the types but zero points.

``pack-weights`` stores every 4- and 2-bit weight ``qconstant`` as packed bytes
(``irc.quant.pack``): what the kernels read, what a saved model holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from irc import quant
from irc.ir import Graph, Op
from irc.matching import constant_array, rebuild
from irc.opdef import build, has_trait
from irc.pass_manager import Pass, PassContext, register_pass


def lower_layer(graph: Graph, op: Op) -> None:
    """Give ``op`` (an L1 qconv2d / qgemm) its int32 bias, multiplier and shift operands."""
    x, w = op.operands[0], op.operands[1]
    x_scale = x.type.quant.scales[0]
    w_scales = np.asarray(w.type.quant.scales, np.float32)
    channels = w.type.shape[0]
    reduction = int(np.prod(w.type.shape[1:]))
    if reduction > quant.MAX_REDUCTION:
        raise ValueError(
            f"op {op.label()} sums {reduction} products per output, more than the "
            f"{quant.MAX_REDUCTION} an int32 accumulator holds exactly; keep it in float"
        )
    if len(op.operands) > 2:
        b = constant_array(op.operands[2])
        if b is None:
            raise ValueError(f"op {op.label()}: the bias is not a constant with data")
    else:
        b = np.zeros(channels, np.float32)
    base = op.results[0].name
    index = graph.index_of(op)
    bias = build(graph, "qconstant", [], {
        "value": quant.quantize_bias(b, x_scale, w_scales), "dtype": "i32",
        "shape": (channels,), "scales": quant.bias_scales(x_scale, w_scales), "axis": 0,
    }, result_names=[graph.fresh_name(base + ".bias")], index=index)  # fmt: skip
    multiplier, shift = quant.layer_multipliers(x_scale, w_scales, op.attrs["out_scale"])
    m = build(graph, "constant", [], {"value": multiplier},
              result_names=[graph.fresh_name(base + ".multiplier")], index=index + 1)  # fmt: skip
    s = build(graph, "constant", [], {"value": shift},
              result_names=[graph.fresh_name(base + ".shift")], index=index + 2)  # fmt: skip
    rebuild(graph, op, [x, w, bias.result, m.result, s.result], {})


@register_pass
@dataclass(frozen=True)
class LowerQuantized(Pass):
    """Make biases int32 and requantization multipliers explicit (L1 → L2)."""

    name: ClassVar[str] = "lower-quantized"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        lowered = 0
        for op in list(graph.ops):
            if has_trait(op.kind, "integer-layer") and len(op.operands) < 4:
                lowered += 1
                lower_layer(graph, op)
        erased = graph.remove_dead_ops() if lowered else 0
        return {"lowered": lowered, "erased": erased}


@register_pass
@dataclass(frozen=True)
class PackWeights(Pass):
    """Store 4- and 2-bit weight constants as packed bytes (L2 → L3)."""

    name: ClassVar[str] = "pack-weights"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        packed = saved = 0
        for op in graph.ops:
            if op.kind != "qconstant" or op.attrs["packed"]:
                continue
            if op.attrs["dtype"] not in ("i4", "i2"):
                continue
            levels = np.asarray(op.attrs["value"])
            data = quant.pack(levels, int(op.attrs["dtype"][1:]))
            op.attrs = {**op.attrs, "value": data, "packed": 1}
            packed += 1
            saved += levels.nbytes - data.nbytes
        return {"packed": packed, "bytes-saved": saved}
