"""Property: the int8 glue of detectors (qconcat, max_pool and nearest resize on qi8 values)
runs bit-exactly as ``irc.reference`` says, and that meaning is the float op's, exactly.

qconcat draws its operands' scales and zero points from a small pool that holds the
output's own, so that copied and requantized operands mix; ratios reach saturation (an
operand's range far wider than the output's) and ties (power-of-two ratios). max_pool and
nearest resize on qi8 levels must equal the float op on the dequantized reals, requantized
at the input's parameters: exact, padding included (the lowest level, never the zero point).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kernel_draws import activations

from irc import quant
from irc.backends.numba.kernel_table import bind_kernel
from irc.errors import TypeInferenceError
from irc.ir import Graph
from irc.opdef import build
from irc.ops.shape_rules import check_pool_pads
from irc.reference import evaluate_op
from irc.types import DType, QuantParams, TensorType

seeds = st.integers(0, 2**32 - 1)
zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
scales = st.sampled_from([0.0039, 0.02, 0.1, 1.7, 0.125, 0.5])  # powers of two: ties
VALUES = st.sampled_from(["uniform", "extremes", "small"])


def qi8(shape, scale, zero_point) -> TensorType:
    """A per-tensor int8 activation type."""
    return TensorType(DType.I8, tuple(shape), QuantParams.per_tensor(scale, zero_point))


def check(op, arrays) -> np.ndarray:
    """Run ``op``'s kernel on ``arrays`` into junk; assert it equals the reference exactly."""
    out = np.full(op.result.type.shape, 77, op.result.type.dtype.numpy)
    bind_kernel(op)(*arrays, out)
    (want,) = evaluate_op(op, arrays)
    assert out.dtype == want.dtype and out.shape == want.shape
    np.testing.assert_array_equal(out, want)
    return out


def real(levels, t: TensorType) -> np.ndarray:
    """The reals int8 ``levels`` of type ``t`` stand for."""
    return quant.dequantize(levels, t.quant.scales[0], t.quant.zero_points[0])


# ------------------------------------------------------------------ qconcat
@st.composite
def concat_cases(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    axis = draw(st.integers(-rank, rank - 1))
    out_params = (draw(scales), draw(zero_points))
    pool = st.one_of(st.just(out_params), st.tuples(scales, zero_points))
    operands = []
    for _ in range(draw(st.integers(1, 4))):
        part = list(shape)
        part[axis] = draw(st.integers(1, 3))
        operands.append((part, draw(pool)))
    return axis, out_params, operands


@settings(max_examples=60, deadline=None)
@given(concat_cases(), VALUES, seeds)
def test_qconcat(case, values, seed):
    axis, (out_scale, out_zero), operands = case
    rng = np.random.default_rng(seed)
    graph = Graph()
    xs = [graph.add_input(f"x{i}", qi8(shape, s, z)) for i, (shape, (s, z)) in enumerate(operands)]
    attrs = {"axis": axis, "out_scale": out_scale, "out_zero_point": out_zero}
    op = build(graph, "qconcat", xs, attrs)
    arrays = [activations(rng, shape, values) for shape, _ in operands]
    out = check(op, arrays)
    # an operand quantized as the output is copied byte for byte
    offsets = np.cumsum([0] + [a.shape[axis] for a in arrays])
    for a, (_, params), start in zip(arrays, operands, offsets):
        if params == (out_scale, out_zero):
            block = np.take(out, np.arange(start, start + a.shape[axis]), axis=axis)
            np.testing.assert_array_equal(block, a)


@pytest.mark.parametrize(
    "s_in, z_in, s_out, z_out",
    [(0.5, -3, 0.125, 7), (0.125, 100, 0.5, -20), (0.02, 0, 0.1, -128), (1.7, 127, 0.0039, 0)],
)
def test_qconcat_every_level(s_in, z_in, s_out, z_out):
    """All 256 levels of a requantized operand beside a copied one: the integer path equals
    ``irc.quant.rescale`` and is within half a step of the real (where it does not clip)."""
    graph = Graph()
    a = graph.add_input("a", qi8((256,), s_in, z_in))
    b = graph.add_input("b", qi8((3,), s_out, z_out))
    op = build(graph, "qconcat", [a, b], {"axis": 0, "out_scale": s_out, "out_zero_point": z_out})
    levels = np.arange(-128, 128).astype(np.int8)
    out = check(op, [levels, np.array([-128, 0, 127], np.int8)])
    want = np.clip(np.rint(real(levels, a.type) / np.float64(s_out)) + z_out, -128, 127)
    assert np.abs(out[:256].astype(np.float64) - want).max() <= 1  # rounding of a tie at most
    np.testing.assert_array_equal(out[256:], [-128, 0, 127])


def test_qconcat_refuses_float_operands():
    graph = Graph()
    a = graph.add_input("a", qi8((2,), 0.1, 0))
    b = graph.add_input("b", TensorType(DType.F32, (2,)))
    with pytest.raises(TypeInferenceError, match="qconcat operand 1 must be a per-tensor qi8"):
        build(graph, "qconcat", [a, b], {"axis": 0, "out_scale": 0.1})


# ------------------------------------------------------------------ max pool on levels
@st.composite
def pool_cases(draw):
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    attrs = {
        "kernel": kernel,
        "strides": tuple(draw(st.integers(1, 3)) for _ in range(2)),
        "dilations": tuple(draw(st.integers(1, 2)) for _ in range(2)),
        "pads": tuple(draw(st.integers(0, kernel[i % 2] - 1)) for i in range(4)),
        "ceil_mode": draw(st.integers(0, 1)),
    }
    shape = (draw(st.sampled_from([1, 2])), draw(st.integers(1, 3)))
    shape += (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    for axis in range(2):
        span = attrs["dilations"][axis] * (kernel[axis] - 1) + 1
        assume(shape[2 + axis] + attrs["pads"][axis] + attrs["pads"][axis + 2] >= span)
    try:
        check_pool_pads(shape[2:], kernel, attrs["strides"], attrs["pads"], attrs["dilations"],
                        attrs["ceil_mode"], "max_pool")  # fmt: skip
    except TypeInferenceError:
        assume(False)
    return shape, attrs


@settings(max_examples=40, deadline=None)
@given(pool_cases(), scales, zero_points, VALUES, seeds)
def test_int8_max_pool_is_the_float_max_pool_exactly(case, scale, zero_point, values, seed):
    shape, attrs = case
    graph = Graph()
    x = graph.add_input("x", qi8(shape, scale, zero_point))
    op = build(graph, "max_pool", [x], attrs)
    assert op.result.type.quant == x.type.quant  # the result keeps the input's levels
    levels = activations(np.random.default_rng(seed), shape, values)
    out = check(op, [levels])
    floats = Graph()
    xf = floats.add_input("x", TensorType(DType.F32, shape))
    (want,) = evaluate_op(build(floats, "max_pool", [xf], attrs), [real(levels, x.type)])
    np.testing.assert_array_equal(real(out, x.type), want)


def test_int8_max_pool_pads_with_the_lowest_level():
    """A window over padding and levels below the zero point takes the levels' max."""
    graph = Graph()
    x = graph.add_input("x", qi8((1, 1, 2, 2), 0.1, 50))
    attrs = {"kernel": (2, 2), "strides": (2, 2), "pads": (1, 1, 1, 1)}
    op = build(graph, "max_pool", [x], attrs)
    out = check(op, [np.array([[[[-100, -90], [-80, -70]]]], np.int8)])
    np.testing.assert_array_equal(out.reshape(-1), [-100, -90, -80, -70])


def test_average_pool_and_linear_resize_refuse_levels():
    graph = Graph()
    x = graph.add_input("x", qi8((1, 1, 4, 4), 0.1, 0))
    with pytest.raises(TypeInferenceError, match="avg_pool takes float values"):
        build(graph, "avg_pool", [x], {"kernel": (2, 2)})
    with pytest.raises(TypeInferenceError, match="linear resize takes float values"):
        build(graph, "resize", [x], {"mode": "linear", "scales": (1.0, 1.0, 2.0, 2.0)})


# ------------------------------------------------------------------ nearest resize on levels
@settings(max_examples=30, deadline=None)
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    st.tuples(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]), st.sampled_from([0.5, 1.0, 2.0, 2.5])),
    st.sampled_from(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]),
    st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
    scales,
    zero_points,
    seeds,
)
def test_int8_nearest_resize_is_the_float_resize_exactly(shape, factors, mode, nearest,
                                                         scale, zero_point, seed):  # fmt: skip
    attrs = {"mode": "nearest", "scales": (1.0, 1.0, *factors),
             "coordinate_transformation_mode": mode, "nearest_mode": nearest}  # fmt: skip
    assume(all(int(d * f) >= 1 for d, f in zip(shape[2:], factors)))
    graph = Graph()
    x = graph.add_input("x", qi8(shape, scale, zero_point))
    op = build(graph, "resize", [x], attrs)
    assert op.result.type.quant == x.type.quant
    levels = activations(np.random.default_rng(seed), shape, "uniform")
    out = check(op, [levels])
    floats = Graph()
    xf = floats.add_input("x", TensorType(DType.F32, shape))
    (want,) = evaluate_op(build(floats, "resize", [xf], attrs), [real(levels, x.type)])
    np.testing.assert_array_equal(real(out, x.type), want)
