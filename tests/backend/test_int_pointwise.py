"""The outer-product pointwise kernel (few input channels) bit-exact with the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import irc
from irc import quant
from irc.backends.numba import int_simd
from irc.ir import Graph
from irc.opdef import build
from irc.reference import evaluate_op
from irc.types import DType, QuantParams, TensorType

pytestmark = pytest.mark.skipif(not int_simd.HAVE_AVX2, reason="no AVX2 on this CPU / target")


def pointwise_graph(cin, cout, height, width, bits, x_zero, seed):
    rng = np.random.default_rng(seed)
    graph = Graph()
    x_type = TensorType(DType.I8, (2, cin, height, width), QuantParams.per_tensor(0.05, x_zero))
    x = graph.add_input("x", x_type)
    levels = rng.choice(quant.weight_levels(bits), (cout, cin, 1, 1)).astype(np.int8)
    scales = rng.uniform(0.001, 0.02, cout).astype(np.float32)
    payload = quant.pack(levels, bits) if bits < 8 else levels
    w = build(graph, "qconstant", [], {"value": payload, "dtype": f"i{bits}",
              "shape": levels.shape, "scales": scales, "packed": int(bits < 8)})  # fmt: skip
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    b = build(graph, "qconstant", [], {"value": bias, "dtype": "i32", "shape": (cout,),
              "scales": quant.bias_scales(0.05, scales)})  # fmt: skip
    m, s = quant.layer_multipliers(0.05, scales, 0.02)
    mc = build(graph, "constant", [], {"value": m})
    sc = build(graph, "constant", [], {"value": s})
    y = build(graph, "qconv2d", [x, w.result, b.result, mc.result, sc.result],
              {"out_scale": 0.02, "out_zero_point": 3, "activation": "relu"})  # fmt: skip
    graph.outputs.append(y.result)
    return graph, rng.integers(-128, 128, x_type.shape).astype(np.int8)


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 40),
    cout=st.integers(1, 13),
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    bits=st.sampled_from([8, 4, 2]),
    x_zero=st.sampled_from([-128, 0, 127]),
    seed=st.integers(0, 10**6),
)
def test_pointwise_small_k_is_bit_exact(cin, cout, height, width, bits, x_zero, seed):
    graph, x = pointwise_graph(cin, cout, height, width, bits, x_zero, seed)
    assert cin <= 64  # the outer-product path
    (got,) = irc.compile(graph, pipeline="", num_threads=2)(x)
    conv = graph.ops[-1]
    args = [x] + [op.attrs["value"] for op in graph.ops[:-1]]
    args[1] = quant.unpack(args[1], bits, conv.operands[1].type.shape) if bits < 8 else args[1]
    (want,) = evaluate_op(conv, args)
    np.testing.assert_array_equal(got, want)


def test_pointwise_covers_blocks_and_tails():
    """More pixels than a block (256) and a tail of a tile; odd K; channels not a multiple
    of the 4-channel tile."""
    graph, x = pointwise_graph(17, 7, 23, 19, 8, -5, 1)
    (got,) = irc.compile(graph, pipeline="", num_threads=1)(x)
    (want,) = irc.run(graph, [x])
    np.testing.assert_array_equal(got, want)
