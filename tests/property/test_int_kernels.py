"""Property: the Numba integer kernels agree with ``irc.reference`` bit for bit.

Each test builds its op on a throwaway graph as the lowering passes leave it (L2/L3):
weights and biases are ``qconstant`` ops (4- and 2-bit weights packed or not), the
requantization multiplier and shift ``constant`` ops. The kernel gets the payloads as the
generated driver does (read-only arrays, packed bytes as stored), writes into a result
pre-filled with junk, and must equal ``evaluate_op`` on the unpacked levels exactly.

Draws reach the arithmetic's corners: activations at -128/127, weights at qmin and qmax, zero
points at both ends, biases at the int32 limits, multipliers realistic, random, huge
(everything saturates), tiny (M = 0) and tie-prone (M a power of two), per channel or one
for all. Examples run on one or two Numba threads, and conv tiles are sometimes shrunk to
cross tile boundaries.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kernel_draws import activations, conv_geometry
from numba import njit

from irc import quant
from irc.backends.numba import kernels_quant
from irc.backends.numba.int_common import requantize_one, rounding_shift
from irc.backends.numba.kernel_table import BackendError, bind_kernel
from irc.ir import Graph
from irc.opdef import build
from irc.reference import evaluate_op
from irc.types import DType, QuantParams, TensorType

THREADS = st.sampled_from(sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}))
seeds = st.integers(0, 2**32 - 1)
zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
scales = st.sampled_from([0.0039, 0.02, 0.1, 1.7, 0.125, 0.5])  # powers of two: ties
CLAMPS = st.sampled_from(
    [
        {},
        {"activation": "relu"},
        {"activation": "clip", "act_min": 0.0, "act_max": 6.0},
        {"activation": "clip", "act_min": -0.5, "act_max": 0.25},
    ]
)
VALUES = st.sampled_from(["uniform", "extremes", "small"])
TAILS = st.sampled_from(["realistic", "random", "huge", "tiny", "ties"])
BITS = st.sampled_from([8, 4, 2])
LAYOUTS = st.sampled_from(["nchw", "nhwc"])


def readonly(array) -> np.ndarray:
    """``array`` as the driver passes a constant: contiguous and read-only."""
    view = np.ascontiguousarray(array).view()
    view.flags.writeable = False
    return view


def qi8(shape, scale, zero_point) -> TensorType:
    """A per-tensor int8 activation type."""
    return TensorType(DType.I8, tuple(shape), QuantParams.per_tensor(scale, zero_point))


def weight_levels(rng, shape, bits, mode) -> np.ndarray:
    """Weight levels of the ``bits`` grid (``quant.weight_levels``: every integer in [qmin,
    qmax], the odd ones at 2 bits); "extremes" draws only qmin and qmax."""
    qmin, qmax = quant.weight_qmin(bits), quant.weight_qmax(bits)
    if mode == "extremes":
        return rng.choice(np.array([qmin, qmax]), shape).astype(np.int8)
    return rng.choice(quant.weight_levels(bits), shape).astype(np.int8)


class Layer:
    """A qconv2d / qgemm with its constants; ``run`` checks kernel against reference."""

    def __init__(self, kind, x_shape, w_shape, attrs, bits, packed, rng, draw):
        self.rng, self.graph = rng, Graph()
        x_scale, x_zero = draw["x_scale"], draw["x_zero"]
        self.x = activations(rng, x_shape, draw["values"])
        x = self.graph.add_input("x", qi8(x_shape, x_scale, x_zero))
        self.levels = weight_levels(rng, w_shape, bits, draw["values"])
        w_scales = (rng.random(w_shape[0]) * 0.05 + 1e-3).astype(np.float32)
        payload = quant.pack(self.levels, bits) if packed else self.levels
        w = self.qconstant(payload, f"i{bits}", w_shape, w_scales, packed)
        channels = w_shape[0]
        k = int(math.prod(w_shape[1:]))
        # output scale: about the accumulator's spread, times a drawn factor
        spread = x_scale * float(w_scales.mean()) * quant.weight_qmax(bits) * 40 * math.sqrt(k)
        out_scale = quant.as_f32(spread * draw["out_factor"])
        bias = quant.quantize_bias(rng.standard_normal(channels) * spread, x_scale, w_scales)
        if draw["tail"] == "ties":
            bias = rng.integers(-8, 9, channels).astype(np.int32)
        if draw["bias_extreme"]:
            bias[rng.random(channels) < 0.5] = quant.INT32_MAX
            bias[rng.random(channels) < 0.3] = quant.INT32_MIN
        b = self.qconstant(bias, "i32", (channels,), quant.bias_scales(x_scale, w_scales), 0)
        mult, shift = self.tail(draw["tail"], x_scale, w_scales, out_scale, channels)
        if not draw["per_channel"]:
            mult, shift = mult[:1].copy(), shift[:1].copy()
        m = build(self.graph, "constant", [], {"value": mult}).result
        s = build(self.graph, "constant", [], {"value": shift}).result
        if draw.get("weight_input"):  # a weight the kernel must sum itself
            w = self.graph.add_input("w", w.type)
            payload = self.levels.copy()
        attrs = dict(attrs, out_scale=out_scale, out_zero_point=draw["out_zero"])
        self.op = build(self.graph, kind, [x, w, b, m, s], attrs)
        weight = payload if draw.get("weight_input") else readonly(payload)
        self.kernel_args = [self.x, weight, readonly(bias), readonly(mult), readonly(shift)]
        self.reference_args = [self.x, self.levels, bias, mult, shift]

    def qconstant(self, value, dtype, shape, scales, packed):
        """A qconstant along axis 0 holding ``value`` (packed bytes when ``packed``)."""
        attrs = {"value": value, "dtype": dtype, "shape": tuple(shape), "scales": scales}
        return build(self.graph, "qconstant", [], dict(attrs, axis=0, packed=int(packed))).result

    def tail(self, mode, x_scale, w_scales, out_scale, channels):
        """Multiplier and shift [channels] of the drawn kind."""
        rng = self.rng
        if mode == "realistic":
            return quant.layer_multipliers(x_scale, w_scales, out_scale)
        m = rng.integers(2**30, 2**31, channels).astype(np.int32)
        if mode == "ties":  # M a power of two (or 1.5 times one): many exact halves
            m = rng.choice(np.array([2**30, 3 * 2**29], np.int32), channels)
            return m, rng.integers(31, 34, channels).astype(np.int32)
        if mode == "random":
            shift = rng.integers(1, quant.MAX_SHIFT + 1, channels)
        elif mode == "huge":
            shift = rng.integers(1, 8, channels)
        else:  # tiny: quant.quantize_multiplier's M = 0 at the largest shift, or nearly
            m[rng.random(channels) < 0.5] = 0
            shift = rng.integers(quant.MAX_SHIFT - 2, quant.MAX_SHIFT + 1, channels)
        return m, shift.astype(np.int32)

    def run(self, threads=1):
        """Run the bound kernel on ``threads`` threads; assert it equals the reference."""
        kernel = bind_kernel(self.op)
        out = np.full(self.op.result.type.shape, 77, np.int8)
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            kernel(*self.kernel_args, out)
        finally:
            numba.set_num_threads(previous)
        (want,) = evaluate_op(self.op, self.reference_args)
        assert out.dtype == want.dtype == np.int8 and out.shape == want.shape
        np.testing.assert_array_equal(out, want)


@st.composite
def layer_draws(draw):
    """Quantization parameters, value kind and requantization kind of one layer."""
    drawn = {
        "x_scale": draw(scales),
        "x_zero": draw(zero_points),
        "out_zero": draw(zero_points),
        "values": draw(VALUES),
        "tail": draw(TAILS),
        "per_channel": draw(st.booleans()),
        "bias_extreme": draw(st.integers(0, 5)) == 0,
        "out_factor": draw(st.sampled_from([0.02, 0.3, 1.0, 8.0])),
    }
    if drawn["tail"] == "ties":  # small accumulators, so that the halves are not clamped
        drawn.update(values="small", x_zero=0, bias_extreme=False)
    return drawn


def fixed_draw(**values) -> dict:
    """A ``layer_draws`` value for a hand-written case: realistic, per channel."""
    base = {"values": "uniform", "tail": "realistic", "per_channel": True, "bias_extreme": False}
    return {**base, **values}


@st.composite
def conv_cases(draw):
    """(input shape, weight shape, attributes) of a general, grouped, depthwise or
    pointwise convolution."""
    form = draw(st.sampled_from(["general", "grouped", "depthwise", "pointwise"]))
    group = draw(st.integers(2, 3)) if form in ("grouped", "depthwise") else 1
    cin_g = 1 if form == "depthwise" else draw(st.integers(1, 5))
    cout = group * draw(st.integers(1, 3))
    geometry = conv_geometry(draw, form == "pointwise", 9)
    kernel, strides, dilations, pads, height, width = geometry
    batch = draw(st.sampled_from([1, 2]))
    layout = draw(LAYOUTS)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    attrs.update(draw(CLAMPS), layout=layout)
    x_shape = stored((batch, cin_g * group, height, width), layout)
    return x_shape, (cout, cin_g) + kernel, attrs


def stored(nchw_shape, layout) -> tuple:
    """An activation's NCHW shape as ``layout`` stores it."""
    n, c, h, w = nchw_shape
    return (n, h, w, c) if layout == "nhwc" else (n, c, h, w)


@settings(max_examples=80, deadline=None)
@given(conv_cases(), layer_draws(), BITS, st.booleans(), seeds, THREADS, st.booleans())
def test_qconv2d(case, draw, bits, packed, seed, threads, small_tiles):
    x_shape, w_shape, attrs = case
    packed = packed and bits < 8
    rng = np.random.default_rng(seed)
    with pytest.MonkeyPatch.context() as patch:
        if small_tiles:  # a few pixels per product tile
            patch.setattr(kernels_quant, "_CONV_TILE_PIXELS", (1, 3))
        layer = Layer("qconv2d", x_shape, w_shape, attrs, bits, packed, rng, draw)
        layer.run(threads)


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((1, 16, 30, 30), (24, 16, 1, 1), {"activation": "relu"}),  # several product tiles
        ((1, 3, 33, 30), (8, 3, 3, 3), {"strides": (2, 2), "pads": (0, 0, 1, 1)}),
        # depthwise over several accumulator blocks, multiplier 2, stride 2
        ((1, 4, 70, 70), (4, 1, 3, 3), {"group": 4, "pads": (1, 1, 1, 1)}),
        ((2, 3, 71, 66), (6, 1, 5, 5), {"group": 3, "strides": (2, 2), "pads": (2, 1, 2, 2)}),
    ],
)
@pytest.mark.parametrize("bits, packed", [(8, False), (4, True), (2, True)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_qconv2d_large_planes(x_shape, w_shape, attrs, bits, packed, layout):
    draw = fixed_draw(x_scale=0.02, x_zero=-7, out_zero=5, out_factor=0.3)
    x_shape, attrs = stored(x_shape, layout), dict(attrs, layout=layout)
    layer = Layer("qconv2d", x_shape, w_shape, attrs, bits, packed, np.random.default_rng(3), draw)
    layer.run(min(2, numba.config.NUMBA_NUM_THREADS))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 12), layer_draws(), BITS,
       st.booleans(), st.booleans(), CLAMPS, seeds, THREADS)  # fmt: skip
def test_qgemm(m, k, n, draw, bits, packed, weight_input, clamp, seed, threads):
    packed = packed and bits < 8
    draw["weight_input"] = weight_input and not packed
    rng = np.random.default_rng(seed)
    layer = Layer("qgemm", (m, k), (n, k), clamp, bits, packed, rng, draw)
    layer.run(threads)


def test_qgemm_many_rows_and_features():
    draw = fixed_draw(x_scale=0.1, x_zero=127, out_zero=-128, out_factor=1.0)
    for bits, packed in [(8, False), (4, True), (2, True)]:
        rng = np.random.default_rng(1)
        layer = Layer("qgemm", (300, 77), (21, 77), {}, bits, packed, rng, draw)
        layer.run(min(2, numba.config.NUMBA_NUM_THREADS))


@settings(max_examples=30, deadline=None)
@given(conv_cases(), layer_draws(), seeds)
def test_qconv2d_weight_from_a_graph_input(case, draw, seed):
    """A weight that is no constant: the kernel sums its levels on every call."""
    x_shape, w_shape, attrs = case
    channels = x_shape[3 if attrs["layout"] == "nhwc" else 1]
    assume(not (w_shape[1] == 1 and attrs["group"] == channels))  # depthwise needs no sums
    draw["weight_input"] = True
    Layer("qconv2d", x_shape, w_shape, attrs, 4, False, np.random.default_rng(seed), draw).run()


broadcast_pairs = st.sampled_from(
    [
        ((2, 3, 4, 5), (2, 3, 4, 5)),
        ((1, 7, 3, 3), (1, 7, 3, 3)),
        ((2, 3, 4, 5), (1, 3, 1, 1)),
        ((3, 1, 5), (4, 1)),
        ((6,), ()),
        ((), (2, 3)),
        ((2, 1, 3, 1), (1, 4, 1, 5)),
        ((2, 1, 3, 1, 2), (2, 1, 3, 5, 2)),
    ]
)


@settings(max_examples=40, deadline=None)
@given(broadcast_pairs, st.booleans(), zero_points, zero_points, zero_points, scales, scales,
       scales, CLAMPS, VALUES, seeds)  # fmt: skip
def test_qadd(shapes, swap, za, zb, zo, sa, sb, so, clamp, values, seed):
    a_shape, b_shape = shapes[::-1] if swap else shapes
    rng = np.random.default_rng(seed)
    graph = Graph()
    a = graph.add_input("a", qi8(a_shape, sa, za))
    b = graph.add_input("b", qi8(b_shape, sb, zb))
    op = build(graph, "qadd", [a, b], dict(clamp, out_scale=so, out_zero_point=zo))
    arrays = [activations(rng, a_shape, values), activations(rng, b_shape, values)]
    check_simple(op, arrays, op.result.type.dtype.numpy)


@pytest.mark.parametrize("sa, sb, so", [(0.5, 0.125, 0.5), (0.02, 0.1, 0.0039), (1.0, 1.0, 2.0)])
@pytest.mark.parametrize("clamp", [{}, {"activation": "relu"}])
def test_qadd_every_pair_of_levels(sa, sb, so, clamp):
    """All 256 × 256 level pairs (a column against a row); power-of-two ratios make ties."""
    graph = Graph()
    a = graph.add_input("a", qi8((256, 1), sa, -3))
    b = graph.add_input("b", qi8((256,), sb, 100))
    op = build(graph, "qadd", [a, b], dict(clamp, out_scale=so, out_zero_point=-20))
    levels = np.arange(-128, 128).astype(np.int8)
    check_simple(op, [levels.reshape(256, 1), levels], np.int8)


@settings(max_examples=60, deadline=None)
@given(st.integers(-(2**62), 2**62), st.integers(1, quant.MAX_SHIFT), st.booleans(),
       st.integers(0, 2**31 - 1), zero_points)  # fmt: skip
def test_requantize_one(p, shift, tie, multiplier, zero_point):
    """The kernels' scalar requantization equals ``irc.quant.requantize`` (ties included)."""
    if tie:  # an exact half: p = (2j + 1) · 2^(shift - 1)
        p = ((p >> shift) * 2 + 1) << (shift - 1)
    acc = p // max(1, multiplier) if multiplier else p & 0x7FFFFFFF
    want = quant.requantize(np.int64(acc), multiplier, shift, zero_point, -100, 90)
    assert _requantize(acc, multiplier, shift, zero_point, -100, 90) == int(want)
    want = quant.rounding_shift(np.int64(p), shift)
    assert _rounding_shift(p, shift) == int(want)


@njit
def _requantize(acc, multiplier, shift, zero_point, lo, hi):
    return requantize_one(np.int64(acc), np.int64(multiplier), np.int64(shift), zero_point, lo, hi)


@njit
def _rounding_shift(p, shift):
    return rounding_shift(np.int64(p), np.int64(shift))


def check_simple(op, arrays, dtype):
    """Run ``op``'s kernel on ``arrays``; assert it equals the reference exactly."""
    out = np.full(op.result.type.shape, 77, dtype)
    bind_kernel(op)(*arrays, out)
    (want,) = evaluate_op(op, arrays)
    assert out.dtype == want.dtype and out.shape == want.shape
    np.testing.assert_array_equal(out, want)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=3, max_size=5), zero_points, zero_points, scales,
       scales, VALUES, seeds, LAYOUTS)  # fmt: skip
def test_qglobal_avg_pool(shape, zx, zo, sx, so, values, seed, layout):
    layout = layout if len(shape) == 4 else "nchw"
    graph = Graph()
    x = graph.add_input("x", qi8(shape, sx, zx))
    attrs = {"out_scale": so, "out_zero_point": zo, "layout": layout}
    op = build(graph, "qglobal_avg_pool", [x], attrs)
    check_simple(op, [activations(np.random.default_rng(seed), shape, values)], np.int8)


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30], np.float32)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=0, max_size=4), zero_points, scales,
       st.sampled_from([np.float32, np.float64]), seeds)  # fmt: skip
def test_quantize(shape, zero_point, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 100 * scale).astype(np.float32)
    ties = (np.round(x / np.float32(scale)) + 0.5) * np.float32(scale)  # about the .5 cases
    x = np.where(rng.random(shape) < 0.3, ties, x).astype(np.float32)
    x = np.where(rng.random(shape) < 0.2, rng.choice(SPECIALS, shape), x).astype(dtype)
    graph = Graph()
    value = graph.add_input("x", TensorType(DType.from_numpy(dtype), tuple(shape)))
    op = build(graph, "quantize", [value], {"scale": scale, "zero_point": zero_point})
    check_simple(op, [np.asarray(x, dtype)], np.int8)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data(),
       st.sampled_from([np.int8, np.int32]), seeds)  # fmt: skip
def test_dequantize(shape, data, dtype, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    count = 1 if axis is None else shape[axis]
    scale_list = (rng.random(count) * 0.1 + 1e-4).astype(np.float32).tolist()
    zeros = [0] * count if dtype == np.int32 else data.draw(st.lists(zero_points, min_size=count,
                                                                     max_size=count))  # fmt: skip
    if axis is None:
        quant_params = QuantParams.per_tensor(scale_list[0], zeros[0])
    else:
        quant_params = QuantParams.per_axis(scale_list, zeros, axis)
    graph = Graph()
    value = graph.add_input("x", TensorType(DType.from_numpy(dtype), tuple(shape), quant_params))
    op = build(graph, "dequantize", [value], {})
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, shape, dtype=np.int64, endpoint=True).astype(dtype)
    check_simple(op, [x], np.float32)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 11), st.sampled_from([4, 2]), seeds)
def test_dequantize_a_packed_constant(rows, k, bits, seed):
    levels = weight_levels(np.random.default_rng(seed), (rows, k), bits, "uniform")
    graph = Graph()
    scales_ = np.linspace(0.01, 0.02, rows).astype(np.float32)
    attrs = {"value": quant.pack(levels, bits), "dtype": f"i{bits}", "shape": (rows, k),
             "scales": scales_, "axis": 0, "packed": 1}  # fmt: skip
    w = build(graph, "qconstant", [], attrs)
    op = build(graph, "dequantize", [w.result], {})
    out = np.zeros((rows, k), np.float32)
    bind_kernel(op)(readonly(attrs["value"]), out)
    np.testing.assert_array_equal(out, evaluate_op(op, [levels])[0])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.lists(st.integers(1, 7), min_size=0, max_size=3),
       st.sampled_from([4, 2]), seeds)  # fmt: skip
def test_pack_unpack_identity(rows, inner, bits, seed):
    """unpack(pack(levels)) == levels, and pack(unpack(bytes)) == bytes for any bytes whose
    row padding is zero (the padding bits are the only freedom)."""
    rng = np.random.default_rng(seed)
    shape = (rows, *inner)
    k = int(math.prod(inner))
    levels = rng.choice(quant.weight_levels(bits), shape).astype(np.int8)
    packed = quant.pack(levels, bits)
    assert packed.dtype == np.uint8 and packed.shape == (rows, quant.packed_row_bytes(k, bits))
    np.testing.assert_array_equal(quant.unpack(packed, bits, shape), levels)
    raw = rng.integers(0, 256, packed.shape).astype(np.uint8)
    used = k * bits - (packed.shape[1] - 1) * 8  # bits used in the last byte of a row
    if packed.shape[1]:
        raw[:, -1] &= np.uint8((1 << used) - 1)
    np.testing.assert_array_equal(quant.pack(quant.unpack(raw, bits, shape), bits), raw)


@pytest.mark.parametrize("operands", [2, 3])
def test_layers_before_lower_quantized_are_refused(operands):
    graph = Graph()
    x = graph.add_input("x", qi8((1, 2, 3, 3), 0.1, 0))
    w = build(graph, "qconstant", [], {"value": np.ones((4, 2, 1, 1), np.int8), "dtype": "i8",
              "shape": (4, 2, 1, 1), "scales": np.full(4, 0.1, np.float32)}).result  # fmt: skip
    bias = build(graph, "constant", [], {"value": np.zeros(4, np.float32)}).result
    op = build(graph, "qconv2d", [x, w, bias][:operands], {"out_scale": 0.2})
    with pytest.raises(BackendError, match="lower-quantized"):
        bind_kernel(op)
