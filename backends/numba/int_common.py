"""Shared pieces of the integer kernels: fixed-point requantization and weight levels.

The arithmetic is ``irc.quant``'s, so the kernels agree with the reference bit for bit:
``p = acc · M`` in int64 (wrapping as numpy's int64 does), ``round_half_even(p / 2^shift)``,
the output zero point, the clamp to the fused activation's levels.

A channel takes a float64 path where that is exact, which LLVM vectorises far better than
64-bit integer multiplies and shifts: y = rint((acc + corr) · (M · 2^-shift)). When
|acc · M| < 2^53 every step is exact (a power-of-two scale adds no rounding, and ``rint``
rounds half to even), so y equals the integer result; when it is larger and shift <= 44,
|y| >= 2^9, so both paths saturate to the same end. ``layer_constants`` picks the path per
channel (exact for every accumulator the layer can produce, or shift <= 44), and requires
as well that the integer product cannot wrap (then the reference's int64 wraps and only
the integer path follows it). The kernels requantize a tile by the float path and redo
the few channels that may not take it (``requantize_rows``) by the integer one.

Layer tails are per output channel: ``layer_constants`` folds the int32 bias and the input
zero point's term ``-z_x · Σ_k w[o, k]`` into one int64 per channel and widens the
multiplier and shift (given as [O] or [1]) to [O], once per call.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

STAGE_PIXELS = 64  # pixels per transposed block of the conv epilogue
ACC_PER_TERM = 256 * 128  # bounds |x·w| of one product term, centred or not
FAST_SHIFT_MAX = 44  # the float64 path's bound: 53 mantissa bits - 9 (|y| < 2^9 unclamped)


@njit(cache=True, inline="always")
def rounding_shift(p, shift):
    """round_half_even(p / 2^shift) for int64 ``p`` and 1 <= shift <= 62.

    ``irc.quant.rounding_shift`` with the tie test folded into one comparison: with
    ``rem`` = p mod 2^shift, round up iff rem + (floor & 1) > half (no overflow: rem < 2^62).
    """
    floor = p >> shift
    rem = p & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    return floor + np.int64(rem + (floor & 1) > half)


@njit(cache=True, inline="always")
def requantize_one(acc, multiplier, shift, zero_point, lo, hi):
    """clamp(round_half_even(acc · multiplier / 2^shift) + zero_point, lo, hi), all int64."""
    v = rounding_shift(acc * multiplier, shift) + zero_point
    v = lo if v < lo else v
    return hi if v > hi else v


@njit(cache=True)
def layer_constants(bias, multiplier, shift, weight_sums, x_zero, acc_bound):
    """Per output channel c, as arrays [O]: the int64 term ``corr`` = bias - x_zero ·
    weight_sums, multiplier and shift (int64), and for the float64 path ``corr`` and
    M · 2^-shift as float64 and whether the channel may take it.

    ``multiplier`` and ``shift`` are [O] or [1] (one value for every channel); ``acc_bound``
    bounds |Σ_k x·w| (the product before ``corr``).
    """
    count = bias.size
    corr = np.empty(count, dtype=np.int64)
    mult = np.empty(count, dtype=np.int64)
    shf = np.empty(count, dtype=np.int64)
    corr_f = np.empty(count, dtype=np.float64)
    scale_f = np.empty(count, dtype=np.float64)
    fast = np.empty(count, dtype=np.bool_)
    m_step = 1 if multiplier.size > 1 else 0
    s_step = 1 if shift.size > 1 else 0
    for c in range(count):
        corr[c] = np.int64(bias[c]) - np.int64(x_zero) * np.int64(weight_sums[c])
        mult[c] = np.int64(multiplier[c * m_step])
        shf[c] = np.int64(shift[c * s_step])
        corr_f[c] = np.float64(corr[c])
        scale_f[c] = np.float64(mult[c]) / np.float64(np.int64(1) << shf[c])
        largest = (abs(corr_f[c]) + np.float64(acc_bound)) * np.float64(mult[c])
        exact = largest < 2.0**53 or shf[c] <= FAST_SHIFT_MAX
        fast[c] = exact and largest < 2.0**62 and abs(corr_f[c]) < 2.0**52
    return corr, mult, shf, corr_f, scale_f, fast


@njit(cache=True, inline="always")
def requantize_run(src, s0, dst, d0, count, c, tail, zp, lo, hi):
    """dst[d0 + i] = requant(src[s0 + i] + corr[c]) for i < count: one channel's run, by
    the float64 path when ``tail`` (``layer_constants``'s tuple) allows it."""
    corr, mult, shf, corr_f, scale_f, fast = tail
    s0, d0, n = uint64(s0), uint64(d0), uint64(count)
    if fast[c]:
        k, scale = corr_f[c], scale_f[c]
        fz, flo, fhi = np.float64(zp), np.float64(lo), np.float64(hi)
        for i in range(n):
            y = np.rint((np.float64(src[s0 + i]) + k) * scale) + fz
            y = flo if y < flo else y
            dst[d0 + i] = np.int8(fhi if y > fhi else y)
    else:
        k, m, s = corr[c], mult[c], shf[c]
        for i in range(n):
            dst[d0 + i] = np.int8(requantize_one(np.int64(src[s0 + i]) + k, m, s, zp, lo, hi))


@njit(cache=True)
def requantize_channels_major(acc, rows, cols, tail, c0, zp, lo, hi, of, off, pitch, stage):
    """of[off + o·pitch + p] = requant(acc[p, o] + corr[c0 + o]) for p < rows, o < cols.

    The conv epilogue: the product's [pixels, channels] tile written channel-major (NCHW).
    Blocks of ``STAGE_PIXELS`` pixels are first transposed into ``stage`` (int32, at least
    STAGE_PIXELS·cols), so that the requantization runs over unit-stride runs.
    """
    for p0 in range(0, rows, STAGE_PIXELS):
        count = min(STAGE_PIXELS, rows - p0)
        for p in range(count):
            for o in range(cols):
                stage[o * STAGE_PIXELS + p] = acc[p0 + p, o]
        for o in range(cols):
            requantize_run(stage, o * STAGE_PIXELS, of, off + o * pitch + p0, count, c0 + o,
                           tail, zp, lo, hi)  # fmt: skip


@njit(cache=True)
def requantize_rows(acc, rows, cols, tail, c0, zp, lo, hi, of, off, pitch):
    """of[off + p·pitch + o] = requant(acc[p, o] + corr[c0 + o]) for p < rows, o < cols.

    The gemm epilogue: rows of the product written as rows of the [M, N] result, by the
    float64 path vectorised along the row, then the channels that may not take it redone
    by the integer path.
    """
    corr, mult, shf, corr_f, scale_f, fast = tail
    fz, flo, fhi = np.float64(zp), np.float64(lo), np.float64(hi)
    k, s = corr_f[c0 : c0 + cols], scale_f[c0 : c0 + cols]
    for p in range(rows):
        dst = uint64(off + p * pitch)
        for o in range(uint64(cols)):
            y = np.rint((np.float64(acc[p, o]) + k[o]) * s[o]) + fz
            y = flo if y < flo else y
            of[dst + o] = np.int8(fhi if y > fhi else y)
    for o in range(cols):
        c = c0 + o
        if not fast[c]:
            for p in range(rows):
                v = requantize_one(np.int64(acc[p, o]) + corr[c], mult[c], shf[c], zp, lo, hi)
                of[off + p * pitch + o] = np.int8(v)


@njit(cache=True, inline="always")
def weight_level(w2, o, t, bits):
    """Level ``t`` of output channel ``o``: int8 rows at 8 bits, else ``irc.quant.pack`` bytes
    (b-bit two's-complement fields f, low bits first: the level f at 4 bits, 2f + 1 at 2)."""
    if bits == 8:
        return np.int64(w2[o, t])
    per_byte = 8 // bits
    field = (np.int64(w2[o, t // per_byte]) >> ((t % per_byte) * bits)) & ((1 << bits) - 1)
    sign = np.int64(1) << (bits - 1)
    value = (field ^ sign) - sign
    return 2 * value + 1 if bits == 2 else value


@njit(cache=True)
def weight_sums(w, bits, k):
    """Σ_t level(w, o, t) over the ``k`` levels of each output channel, as int64 [O]."""
    count = w.shape[0]
    w2 = w.reshape((count, w.size // count))
    sums = np.zeros(count, dtype=np.int64)
    for o in range(count):
        total = np.int64(0)
        for t in range(k):
            total += weight_level(w2, o, t, bits)
        sums[o] = total
    return sums
