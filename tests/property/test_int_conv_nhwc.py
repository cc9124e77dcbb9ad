"""Property: the channels-last int8 conv equals the NCHW one bit for bit.

``int_conv_nhwc.qconv_nhwc`` on NHWC activations must give exactly
``transpose(int_conv.qconv_gemm(transpose(x)))`` for every input: pointwise, general
(kernel up to 3×3, strides, dilations, asymmetric pads) and grouped convs, channel counts
that fill no vector and counts past the outer-product kernel's tiles and K chunks, weights
at 8 bits and packed 4/2 bits, activations and weights at their extremes, input zero points
at both ends, biases at the int32 limits, multipliers realistic, random, huge (everything
saturates), tiny (M = 0) and tie-prone, per channel or one for all, and every clamp. Each
example runs one product the host has (automatic choice, the dot-product GEMM, the 8- and
16-lane outer-product kernels, the u8 × s8 ``vpdpbusd`` quad kernel), whole or in tiles of
a few pixels, on one or two threads, into a result pre-filled with junk. On AVX-512 VNNI
hosts the quad kernel is also forced on every draw of its own test (plus pointwise convs
with K = 1..300, most not a multiple of 4), so its correction (x_zero + 128) and K padding
meet every zero point and weight grid.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_draws import activations

from irc import quant
from irc.backends.numba import int_conv_nhwc as nhwc
from irc.backends.numba import int_weight_tables as tables
from irc.backends.numba.int_common import weight_sums
from irc.backends.numba.int_conv import qconv_gemm
from irc.backends.numba.int_simd import HAVE_AVX2

THREADS = st.sampled_from(sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}))
PATHS = [nhwc.PATH_AUTO, nhwc.PATH_GEMM]
PATHS += [nhwc.PATH_OUTER8] if HAVE_AVX2 else []
PATHS += [nhwc.PATH_OUTER16] if nhwc.HAVE_AVX512 else []
QUAD_PATHS = [nhwc.PATH_VNNI] if nhwc.HAVE_VNNI else []
QUAD_PATHS += [nhwc.PATH_AVX_VNNI] if nhwc.HAVE_AVX_VNNI else []
PATHS += QUAD_PATHS
NO_VNNI = "no AVX-512 VNNI or AVX-VNNI here (or IRC_DISABLE_VNNI=1): no quad kernel compiled"
needs_vnni = pytest.mark.skipif(not QUAD_PATHS, reason=NO_VNNI)
zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
CLAMPS = st.sampled_from([(-128, 127), (0, 127), (-128, -128), (-20, 90), (5, 5)])


def weights(rng, shape, bits, mode):
    """Weight levels of the ``bits`` grid; "extremes" draws only qmin and qmax."""
    if mode == "extremes":
        qmin, qmax = quant.weight_qmin(bits), quant.weight_qmax(bits)
        return rng.choice(np.array([qmin, qmax]), shape).astype(np.int8)
    return rng.choice(quant.weight_levels(bits), shape).astype(np.int8)


def layer_tail(rng, mode, channels, k, per_channel, bias_extreme):
    """(bias int32 [O], multiplier, shift int32 [O] or [1]) of the drawn kind."""
    bias = rng.integers(-(2**20), 2**20, channels).astype(np.int32)
    m = rng.integers(2**30, 2**31, channels).astype(np.int32)
    if mode == "realistic":  # about the accumulator's spread onto the int8 range
        shift = np.full(channels, 31 + int(np.log2(np.sqrt(k) * 84)), np.int64)
    elif mode == "random":
        shift = rng.integers(1, quant.MAX_SHIFT + 1, channels)
    elif mode == "huge":
        shift = rng.integers(1, 8, channels)
    elif mode == "tiny":  # M = 0 at the largest shifts, or nearly
        m[rng.random(channels) < 0.5] = 0
        shift = rng.integers(quant.MAX_SHIFT - 2, quant.MAX_SHIFT + 1, channels)
    else:  # ties: M a power of two (or 1.5 times one), small biases
        m = rng.choice(np.array([2**30, 3 * 2**29], np.int32), channels)
        shift = rng.integers(31, 34, channels)
        bias = rng.integers(-8, 9, channels).astype(np.int32)
    if bias_extreme:
        bias[rng.random(channels) < 0.5] = quant.INT32_MAX
        bias[rng.random(channels) < 0.3] = quant.INT32_MIN
    shift = shift.astype(np.int32)
    if not per_channel:
        m, shift = m[:1].copy(), shift[:1].copy()
    return bias, m, shift


def check(x, levels, bits, geometry, group, tail, x_zero, zp, clamp, path, tile, threads):
    """Run both kernels on NCHW ``x`` / its NHWC copy; assert the results are identical."""
    kh, kw, sh, sw, top, left, bottom, right, dh, dw = geometry
    n, cin, height, width = x.shape
    cout = levels.shape[0]
    k = levels[0].size
    oh = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    assert oh >= 1 and ow >= 1
    wt = quant.pack(levels, bits) if bits < 8 else levels
    wsums = weight_sums(wt, bits, k)
    lo, hi = clamp
    pointwise = kh == kw == 1 and sh == sw == 1 and not any(geometry[4:8])
    args = (kh, kw, sh, sw, top, left, dh, dw, group)
    want = np.full((n, cout, oh, ow), 77, np.int8)
    qconv_gemm(x, wt, bits, *tail, wsums, want, *args, pointwise, 3, x_zero, zp, lo, hi)
    xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    got = np.full((n, oh, ow, cout), -77, np.int8)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        # on two threads, plan for eight: layers of few pixel tiles split their channels
        hint = 8 if threads > 1 else 0
        nhwc.qconv_nhwc(xn, wt, bits, *tail, wsums, got, *args, x_zero, zp, lo, hi, path, tile,
                        hint)  # fmt: skip
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))
    if threads == 1:  # the serial twin a one-thread compiled model calls, on the same plan
        lanes, tile_px = nhwc.conv_plan(path, k, cout // group, n * oh * ow, oh * ow, tile)
        table = nhwc.prepare_weights(wt, bits, group, cin // group, kh, kw, cout // group, lanes)
        consts = nhwc.prepare_tail(*tail, wsums, x_zero, k, lanes)
        twin = np.full_like(got, 33)
        nhwc.qconv_nhwc_serial(xn, wt, bits, table, consts, twin, kh, kw, sh, sw, top, left, dh,
                               dw, group, x_zero, zp, lo, hi, lanes, tile_px, 1)  # fmt: skip
        np.testing.assert_array_equal(twin, got)


@st.composite
def conv_cases(draw):
    """(NCHW input shape, OIHW weight shape, geometry, group)."""
    pointwise = draw(st.booleans())
    group = draw(st.integers(1, 3))
    wide = draw(st.booleans())  # channel counts past a vector (K up to ~70 at 1×1)
    cin_g = draw(st.integers(1, 35 if wide else 6))
    og = draw(st.integers(1, 40 if wide else 5))
    if pointwise:
        kh = kw = sh = sw = dh = dw = 1
        pads = (0, 0, 0, 0)
    else:
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    # inputs at least as large as the dilated kernel inside the padding
    height = max(height, dh * (kh - 1) + 1 - pads[0] - pads[2])
    width = max(width, dw * (kw - 1) + 1 - pads[1] - pads[3])
    n = draw(st.integers(1, 2))
    geometry = (kh, kw, sh, sw, *pads, dh, dw)
    return (n, cin_g * group, height, width), (og * group, cin_g, kh, kw), geometry, group


@st.composite
def quad_cases(draw):
    """``conv_cases``, or a pointwise conv with K = 1..300 (the quad kernel's K padding) and
    up to 130 channels a group."""
    if draw(st.booleans()):
        return draw(conv_cases())
    group = draw(st.integers(1, 2))
    # past 64 channels a group, tiles of one or two pixels run the one-row kernel
    cin_g, og = draw(st.integers(1, 300)), draw(st.one_of(st.integers(1, 40),
                                                          st.integers(60, 130)))  # fmt: skip
    height, width, n = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 2))
    geometry = (1, 1, 1, 1, 0, 0, 0, 0, 1, 1)
    return (n, cin_g * group, height, width), (og * group, cin_g, 1, 1), geometry, group


@settings(max_examples=300, deadline=None)
@given(conv_cases(), st.sampled_from([8, 4, 2]), st.sampled_from(["uniform", "extremes", "small"]),
       st.sampled_from(["realistic", "random", "huge", "tiny", "ties"]), st.booleans(),
       st.integers(0, 7), zero_points, zero_points, CLAMPS, st.sampled_from(PATHS),
       st.sampled_from([0, 0, 1, 2, 5]), THREADS, st.integers(0, 2**32 - 1))  # fmt: skip
def test_qconv_nhwc_equals_nchw(case, bits, values, tail_mode, per_channel, bias_draw, x_zero,
                                zp, clamp, path, tile, threads, seed):  # fmt: skip
    x_shape, w_shape, geometry, group = case
    rng = np.random.default_rng(seed)
    if tail_mode == "ties":  # small accumulators, so that the halves are not clamped
        values, x_zero = "small", 0
    x = activations(rng, x_shape, values)
    levels = weights(rng, w_shape, bits, values)
    k = int(np.prod(w_shape[1:]))
    tail = layer_tail(rng, tail_mode, w_shape[0], k, per_channel, bias_draw == 0)
    check(x, levels, bits, geometry, group, tail, x_zero, zp, clamp, path, tile, threads)


@needs_vnni
@settings(max_examples=300, deadline=None)
@given(quad_cases(), st.sampled_from([8, 4, 2]), st.sampled_from(["uniform", "extremes", "small"]),
       st.sampled_from(["realistic", "random", "huge", "tiny", "ties"]), st.booleans(),
       st.integers(0, 7), zero_points, zero_points, CLAMPS, st.sampled_from([0, 0, 1, 2, 5]),
       THREADS, st.integers(0, 2**32 - 1))  # fmt: skip
def test_qconv_nhwc_vnni_equals_nchw(case, bits, values, tail_mode, per_channel, bias_draw, x_zero,
                                     zp, clamp, tile, threads, seed):  # fmt: skip
    """Each quad kernel the host has (512- and 256-bit) forced on each draw, and the
    automatic choice, then, on the same."""
    x_shape, w_shape, geometry, group = case
    rng = np.random.default_rng(seed)
    if tail_mode == "ties":
        values, x_zero = "small", 0
    x = activations(rng, x_shape, values)
    levels = weights(rng, w_shape, bits, values)
    k = int(np.prod(w_shape[1:]))
    tail = layer_tail(rng, tail_mode, w_shape[0], k, per_channel, bias_draw == 0)
    for path in (*QUAD_PATHS, nhwc.PATH_AUTO):
        check(x, levels, bits, geometry, group, tail, x_zero, zp, clamp, path, tile, threads)


@needs_vnni
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quad_table_holds_the_levels(bits):
    """Word j of channel o holds levels 4j..4j+3 in (kernel row, column, channel) order."""
    rng = np.random.default_rng(bits)
    group, og, cin_g, kh, kw = 2, 21, 5, 3, 2
    levels = weights(rng, (group * og, cin_g, kh, kw), bits, "uniform")
    wt = quant.pack(levels, bits) if bits < 8 else levels
    table = tables.quad_table(wt, bits, group, cin_g, kh, kw, 32)
    k = cin_g * kh * kw
    ordered = levels.transpose(0, 2, 3, 1).reshape(group, og, k)  # (i, j, c) order
    padded = np.zeros((group, 32, 4 * table.shape[1]), np.int8)
    padded[:, :og, :k] = ordered
    want = padded.view(np.int32).transpose(0, 2, 1)
    np.testing.assert_array_equal(table, want)


@needs_vnni
@pytest.mark.parametrize("bits", [4, 2])
def test_nibble_table_packs_the_quads_as_shift_and_mask_fields(bits):
    """Field i of byte b of word j is byte b of quad word j·f + i, offset to unsigned."""
    rng = np.random.default_rng(bits)
    group, og, cin_g, kh, kw = 2, 21, 7, 3, 2
    levels = weights(rng, (group * og, cin_g, kh, kw), bits, "uniform")
    wt = quant.pack(levels, bits)
    quads = tables.quad_table(wt, bits, group, cin_g, kh, kw, 32).view(np.uint8)
    table = tables.nibble_table(wt, bits, group, cin_g, kh, kw, 32).view(np.uint8)
    per = 8 // bits
    assert table.shape[1] == -(-quads.shape[1] // per)
    for i in range(per):
        fields = (table >> (i * bits)) & ((1 << bits) - 1)
        unpacked = fields.astype(np.int32) - 8 if bits == 4 else 2 * fields.astype(np.int32) - 3
        have = quads[:, i::per].astype(np.int8)
        got = unpacked[:, : have.shape[1]]
        if bits == 2:  # no zero level: the padding (level 0 in the quads) reads as -1
            got = np.where(have == 0, 0, got)
        np.testing.assert_array_equal(got, have)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize(
    "x_shape, w_shape, geometry, group",
    [
        # K = 300 and 150: several K chunks of the outer-product kernel; 200 channels: blocks
        ((1, 300, 9, 7), (200, 300, 1, 1), (1, 1, 1, 1, 0, 0, 0, 0, 1, 1), 1),
        ((2, 150, 10, 6), (102, 75, 1, 1), (1, 1, 1, 1, 0, 0, 0, 0, 1, 1), 2),
        # a stem-like 3×3 / 2 over more pixels than one tile, and a grouped 3×3 with K 144
        ((1, 3, 37, 33), (32, 3, 3, 3), (3, 3, 2, 2, 1, 1, 1, 0, 1, 1), 1),
        ((1, 32, 11, 12), (34, 16, 3, 3), (3, 3, 1, 2, 2, 0, 1, 1, 2, 1), 2),
    ],
)
def test_qconv_nhwc_large_layers(x_shape, w_shape, geometry, group, bits, path):
    rng = np.random.default_rng(5)
    x = activations(rng, x_shape, "uniform")
    levels = weights(rng, w_shape, bits, "uniform")
    k = int(np.prod(w_shape[1:]))
    tail = layer_tail(rng, "realistic", w_shape[0], k, True, False)
    for tile in (0, 7):
        check(x, levels, bits, geometry, group, tail, -5, 3, (-128, 127), path, tile, 2)


def test_the_automatic_product():
    """With AVX-512 VNNI every layer takes the quad kernel (lanes 64); else small K takes
    the outer product where the host has it, and the 7×7 layers with large K (whose int16
    pair table would cost more than it saves) take the GEMM."""
    vnni = 64 if nhwc.HAVE_VNNI else 0
    lanes = nhwc.conv_plan(nhwc.PATH_AUTO, 16, 96, 112 * 112, 112 * 112, 0)[0]
    assert lanes == ((vnni or 16) if nhwc.HAVE_AVX512 else 8 if HAVE_AVX2 else 0)
    assert nhwc.conv_plan(nhwc.PATH_AUTO, 960, 160, 49, 49, 0)[0] == vnni
    assert nhwc.conv_plan(nhwc.PATH_AUTO, 27, 32, 112 * 112, 112 * 112, 0)[0] == (vnni or lanes)
    assert nhwc.conv_plan(nhwc.PATH_GEMM, 16, 96, 49, 49, 5) == (0, 5)
    assert nhwc.conv_plan(nhwc.PATH_VNNI, 16, 96, 49, 49, 5) == (vnni, 5)


NO_AVX512 = "no AVX-512 here (or IRC_DISABLE_AVX512=1): the vector epilogue is not compiled"


@pytest.mark.skipif(not nhwc.HAVE_AVX512, reason=NO_AVX512)
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(0, 2), st.integers(1, 600),
       st.sampled_from(["realistic", "random", "huge", "tiny", "ties"]), st.booleans(),
       st.booleans(), zero_points, zero_points, CLAMPS, st.integers(0, 2**32 - 1))  # fmt: skip
def test_vector_epilogue_equals_the_scalar_one(rows, cols, groups_before, k, tail_mode,
                                               per_channel, bias_extreme, x_zero, zp, clamp,
                                               seed):  # fmt: skip
    """requantize_tile_simd writes what requantize_tile writes, partial vectors and channel
    offsets included, for sums anywhere in the layer's bound and every kind of constants."""
    rng = np.random.default_rng(seed)
    c0 = groups_before * cols
    channels = c0 + cols + rng.integers(0, 3)
    bias, m, s = layer_tail(rng, tail_mode, channels, k, per_channel, bias_extreme)
    wsums = rng.integers(-128 * k, 128 * k + 1, channels)
    consts, simd = nhwc.prepare_tail(bias, m, s, wsums, x_zero, k, 64)
    pitch_acc = -(-cols // 16) * 16
    bound = nhwc.ACC_PER_TERM * k
    acc = rng.integers(-bound, bound + 1, rows * pitch_acc + 16).astype(np.int32)
    acc[rng.random(acc.size) < 0.1] = rng.choice([-bound, bound, 0])
    lo, hi = clamp
    pitch = channels + 5
    want = np.full(rows * pitch + 7, 55, np.int8)
    got = want.copy()
    nhwc.requantize_tile(acc, pitch_acc, rows, cols, consts, c0, zp, lo, hi, want, 3, pitch)
    nhwc.requantize_tile_simd(acc, pitch_acc, rows, cols, consts, simd, c0, zp, lo, hi, got, 3,
                              pitch)  # fmt: skip
    np.testing.assert_array_equal(got, want)
