"""Property: the channels-last depthwise kernel ``qdepthwise_nhwc`` equals the NCHW one.

``int_depthwise_nhwc.qdepthwise_nhwc`` must compute, bit for bit, what
``int_depthwise.qdepthwise`` computes (itself checked against ``irc.reference`` in
``test_int_kernels``) on the transposed tensors: out_nhwc == transpose(qdepthwise(
transpose(x_nhwc))). Draws reach the corners as ``test_int_kernels`` does: activations at
-128/127, weights at qmin and qmax (8 bits, or packed 4 and 2 bits), input zero points at
-128/127, biases at the int32 limits, multipliers realistic, random, huge (saturation, the
int64 requantization path), tiny and tie-prone, per channel or one for all; kernels 1..5,
strides 1..3, dilations 1..2, pads asymmetric and beyond the kernel's reach, depth
multipliers 1 and 2, channel counts that fill no vector (nor a 16- or 32-channel block),
per-channel mixes of channels on the float64 and the int64 requantization paths, one or
two Numba threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kernel_draws import activations

from irc import quant
from irc.backends.numba.int_depthwise import qdepthwise
from irc.backends.numba.int_depthwise_nhwc import (
    prepare_depthwise,
    qdepthwise_nhwc,
    qdepthwise_nhwc_serial,
)

THREADS = st.sampled_from(sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}))
seeds = st.integers(0, 2**32 - 1)
zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
TAILS = st.sampled_from(["realistic", "random", "huge", "tiny", "ties", "mixed"])
VALUES = st.sampled_from(["uniform", "extremes", "small"])
CLAMPS = st.sampled_from([(-128, 127), (None, 127), (None, "relu6"), (-100, 90)])


def weight_rows(rng, channels, taps, bits, mode) -> np.ndarray:
    """Weight rows [channels, taps] as the kernels read them: int8 levels at 8 bits,
    ``quant.pack``ed bytes at 4 and 2 ("extremes": only qmin and qmax)."""
    qmin, qmax = quant.weight_qmin(bits), quant.weight_qmax(bits)
    if mode == "extremes":
        levels = rng.choice(np.array([qmin, qmax]), (channels, taps))
    else:
        levels = rng.choice(quant.weight_levels(bits), (channels, taps))
    levels = levels.astype(np.int8)
    return levels if bits == 8 else quant.pack(levels, bits)


def tail(rng, mode, channels, per_channel):
    """int32 multiplier and shift of the drawn kind ([channels] or [1])."""
    if mode == "realistic":
        w_scales = (rng.random(channels) * 0.05 + 1e-3).astype(np.float32)
        m, s = quant.layer_multipliers(0.02, w_scales, rng.choice([0.01, 0.1, 1.0]))
        m, s = np.asarray(m, np.int32), np.asarray(s, np.int32)
    else:
        m = rng.integers(2**30, 2**31, channels).astype(np.int32)
        if mode == "ties":
            m = rng.choice(np.array([2**30, 3 * 2**29], np.int32), channels)
            s = rng.integers(31, 34, channels)
        elif mode == "random":
            s = rng.integers(1, quant.MAX_SHIFT + 1, channels)
        elif mode == "mixed":  # realistic channels among random shifts: fast and int64 mixed
            w_scales = (rng.random(channels) * 0.05 + 1e-3).astype(np.float32)
            m_r, s_r = quant.layer_multipliers(0.02, w_scales, 0.1)
            s = rng.integers(1, quant.MAX_SHIFT + 1, channels)
            keep = rng.random(channels) < 0.7
            m = np.where(keep, np.asarray(m_r, np.int64), m).astype(np.int32)
            s = np.where(keep, np.asarray(s_r, np.int64), s)
        elif mode == "huge":  # everything saturates; the int64 path
            s = rng.integers(1, 8, channels)
        else:  # tiny: M = 0 at the largest shifts, or nearly
            m[rng.random(channels) < 0.5] = 0
            s = rng.integers(quant.MAX_SHIFT - 2, quant.MAX_SHIFT + 1, channels)
        s = s.astype(np.int32)
    if not per_channel:
        m, s = m[:1].copy(), s[:1].copy()
    return m, s


def check(x, w, bits, bias, m, s, oh, ow, conv, x_zero, zp, lo, hi, threads):
    """qdepthwise_nhwc on NHWC ``x`` equals the transposed qdepthwise, written over junk."""
    n, h, wd, c = x.shape
    cout = bias.size
    params = (*conv, x_zero, zp, lo, hi)
    want = np.full((n, cout, oh, ow), 77, np.int8)
    got = np.full((n, oh, ow, cout), -99, np.int8)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        qdepthwise(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w, bits, bias, m, s, want,
                   *params)  # fmt: skip
        # the chunks sized for this thread count, or for 0: the most of them
        qdepthwise_nhwc(x, w, bits, bias, m, s, got, *params, threads if threads > 1 else 0)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))
    if threads == 1:  # the serial twin a one-thread compiled model calls
        twin = np.full_like(got, 33)
        layer = prepare_depthwise(w, bits, bias, m, s, conv[0], conv[1])
        qdepthwise_nhwc_serial(x, layer, twin, *params, 1)
        np.testing.assert_array_equal(twin, got)


@st.composite
def layers(draw):
    """Shapes, convolution parameters and quantization constants of one depthwise layer."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = [draw(st.one_of(st.integers(0, 2), st.integers(0, 7))) for _ in range(4)]
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    assume(oh >= 1 and ow >= 1)
    c = draw(st.one_of(st.sampled_from([1, 3, 16, 17, 32, 33, 48, 70]), st.integers(1, 40)))
    return {
        "x_shape": (draw(st.integers(1, 2)), h, w, c),
        "mult": draw(st.sampled_from([1, 1, 2])),
        "conv": (kh, kw, sh, sw, pads[0], pads[1], dh, dw),
        "out": (oh, ow),
        "bits": draw(st.sampled_from([8, 4, 2])),
        "values": draw(VALUES),
        "tail": draw(TAILS),
        "per_channel": draw(st.booleans()),
        "bias_extreme": draw(st.integers(0, 4)) == 0,
        "x_zero": draw(zero_points),
        "zp": draw(zero_points),
        "clamp": draw(CLAMPS),
    }


@settings(max_examples=150, deadline=None)
@given(layers(), seeds, THREADS)
def test_nhwc_equals_nchw(layer, seed, threads):
    rng = np.random.default_rng(seed)
    n, h, w, c = layer["x_shape"]
    cout = c * layer["mult"]
    kh, kw = layer["conv"][:2]
    x = activations(rng, (n, h, w, c), layer["values"])
    wt = weight_rows(rng, cout, kh * kw, layer["bits"], layer["values"])
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    if layer["tail"] == "ties":
        bias = rng.integers(-8, 9, cout).astype(np.int32)
    if layer["bias_extreme"]:
        bias[rng.random(cout) < 0.5] = quant.INT32_MAX
        bias[rng.random(cout) < 0.3] = quant.INT32_MIN
    m, s = tail(rng, layer["tail"], cout, layer["per_channel"])
    zp = layer["zp"]
    lo, hi = layer["clamp"]
    lo = zp if lo is None else lo
    hi = min(127, zp + 60) if hi == "relu6" else hi
    check(x, wt, layer["bits"], bias, m, s, *layer["out"], layer["conv"], layer["x_zero"], zp,
          lo, hi, threads)  # fmt: skip


@pytest.mark.parametrize(
    "c, size, stride, mult, bits",
    [(32, 40, 1, 1, 8), (144, 23, 2, 1, 8), (960, 7, 1, 1, 4), (48, 19, 3, 1, 2),
     (5, 30, 1, 2, 8), (1, 13, 2, 1, 8), (70, 17, 1, 1, 8)],
)  # fmt: skip
@pytest.mark.parametrize("tail_kind", ["realistic", "huge", "mixed"])
@pytest.mark.parametrize("k", [3, 5])
def test_mobilenet_like_layers(c, size, stride, mult, bits, tail_kind, k):
    """k×k pads k // 2 on larger planes: many channel blocks and register tiles per output
    row, the float64 (realistic), int64 (huge) and mixed requantization."""
    rng = np.random.default_rng(c * size + stride)
    x = activations(rng, (1, size, size, c), "uniform")
    cout = c * mult
    wt = weight_rows(rng, cout, k * k, bits, "uniform")
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    m, s = tail(rng, tail_kind, cout, True)
    out = (size + 2 * (k // 2) - k) // stride + 1
    conv = (k, k, stride, stride, k // 2, k // 2, 1, 1)
    check(x, wt, bits, bias, m, s, out, out, conv, -7, -128, -128, 60,
          min(2, numba.config.NUMBA_NUM_THREADS))  # fmt: skip
