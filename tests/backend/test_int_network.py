"""A small integer network (L3) compiled by the Numba backend equals the interpreter exactly.

The graph is the lowered form the quantization passes produce: quantize at the input, a
stem qconv2d (int8, stride 2, fused ReLU6), a depthwise qconv2d on packed int4 weights, a
pointwise qconv2d on packed int2 weights, a qadd residual, qglobal_avg_pool, a reshape
(a free view of int8 levels), a qgemm on packed int4 weights and dequantize; a transposed
int8 feature map is a second output. Compiled through ``irc.compile`` (the generated
driver over one arena, constants read-only), it must equal ``irc.run`` bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import irc
from irc import quant
from irc.ir import Graph
from irc.opdef import build
from irc.types import DType, TensorType


def _layer(graph, kind, x, levels, bits, packed, out_scale, out_zero_point, rng, **attrs):
    """``kind`` on ``x`` with weight ``levels``, as lower-quantized / pack-weights leave it."""
    channels = levels.shape[0]
    x_scale = x.type.quant.scales[0]
    w_scales = (rng.random(channels) * 0.02 + 0.01).astype(np.float32)
    w = build(graph, "qconstant", [], {
        "value": quant.pack(levels, bits) if packed else levels, "dtype": f"i{bits}",
        "shape": levels.shape, "scales": w_scales, "packed": int(packed),
    }).result  # fmt: skip
    bias = quant.quantize_bias(rng.standard_normal(channels) * 0.1, x_scale, w_scales)
    b = build(graph, "qconstant", [], {
        "value": bias, "dtype": "i32", "shape": (channels,),
        "scales": quant.bias_scales(x_scale, w_scales),
    }).result  # fmt: skip
    m, s = quant.layer_multipliers(x_scale, w_scales, out_scale)
    m = build(graph, "constant", [], {"value": m}).result
    s = build(graph, "constant", [], {"value": s}).result
    attrs.update(out_scale=out_scale, out_zero_point=out_zero_point)
    return build(graph, kind, [x, w, b, m, s], attrs).result


def integer_network(seed: int = 0) -> Graph:
    """The L3 network of the module docstring, with seeded weights."""
    rng = np.random.default_rng(seed)

    def levels(shape, bits):
        """Random weight levels of the ``bits`` grid."""
        return rng.choice(quant.weight_levels(bits), shape).astype(np.int8)

    graph = Graph()
    x = graph.add_input("x", TensorType(DType.F32, (2, 3, 13, 12)))
    q = build(graph, "quantize", [x], {"scale": 0.03, "zero_point": 5}).result
    stem = _layer(graph, "qconv2d", q, levels((8, 3, 3, 3), 8), 8, False, 0.05, -128, rng,
                  strides=(2, 2), pads=(1, 1, 1, 1), activation="clip", act_min=0.0,
                  act_max=6.0)  # fmt: skip
    dw = _layer(graph, "qconv2d", stem, levels((8, 1, 3, 3), 4), 4, True, 0.04, -10, rng,
                group=8, pads=(1, 1, 1, 1), activation="relu")  # fmt: skip
    pw = _layer(graph, "qconv2d", dw, levels((8, 8, 1, 1), 2), 2, True, 0.06, 3, rng)
    res = build(graph, "qadd", [stem, pw], {"out_scale": 0.07, "out_zero_point": -2}).result
    gap = build(graph, "qglobal_avg_pool", [res], {"out_scale": 0.02, "out_zero_point": 1})
    flat = build(graph, "reshape", [gap.result], {"shape": (2, 8)}).result
    fc = _layer(graph, "qgemm", flat, levels((5, 8), 4), 4, True, 0.1, 0, rng)
    y = build(graph, "dequantize", [fc], {}).result
    side = build(graph, "transpose", [pw], {"perm": (0, 2, 3, 1)}).result
    graph.outputs = [y, side]
    return graph


@pytest.mark.parametrize("threads", [1, 2])
def test_integer_network_matches_the_interpreter(threads):
    graph = integer_network()
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    model = irc.compile(graph, pipeline="", num_threads=threads)
    x = np.random.default_rng(1).standard_normal((2, 3, 13, 12)).astype(np.float32) * 2
    got = model(x)
    want = irc.run(graph, [x])
    assert [g.dtype for g in got] == [np.float32, np.int8]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert "viewed as [2, 8]" in model.driver_source  # the reshape costs nothing
