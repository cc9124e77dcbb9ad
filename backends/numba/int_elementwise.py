"""Integer elementwise kernels: quantize, dequantize, qadd, the integer global mean
(over NCHW rows, or channels last: per image, a sum of pixel rows vectorised over channels)
qconcat's requantized copy of a block of columns (``requantize_columns``, one lookup in
a 256-level table per element) and qlut's lookup of every element (``lookup``).

``quantize`` and ``dequantize`` compute in float32 exactly as ``irc.quant`` does (x / scale
is one float32 division, ``np.rint`` rounds half to even), so they match numpy bit for
bit. ``qadd`` walks ``kernels_elementwise.broadcast_plan``'s loop nest (at most four axes,
innermost run at stride 1 or 0) and rescales both operands with ``irc.quant.
add_multipliers``'s fixed-point pair, rounding once; it computes in float64, where every
step before the rounding is exact (see ``_qadd_one``), so it equals the int64 arithmetic.
Every kernel works on flat views, so one specialisation serves every rank.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from irc.backends.numba.int_common import requantize_one

_QMIN, _QMAX = np.float32(-128.0), np.float32(127.0)


@njit(cache=True)
def quantize(x, out, scale, zero_point):
    """``quantize_flat`` on arrays of any rank (a thin shell per rank)."""
    quantize_flat(x.reshape(x.size), out.reshape(out.size), scale, zero_point)


@njit(cache=True)
def dequantize(x, out, scales, zero_points, inner):
    """``dequantize_flat`` on arrays of any rank (a thin shell per rank)."""
    dequantize_flat(x.reshape(x.size), out.reshape(out.size), scales, zero_points, inner)


@njit(cache=True)
def qadd(a, b, out, shape, sa, sb, za, zb, ra, rb, zp, lo, hi):
    """``qadd_flat`` on arrays of any rank (a thin shell per rank)."""
    af, bf, of = a.reshape(a.size), b.reshape(b.size), out.reshape(out.size)
    qadd_flat(af, bf, of, shape, sa, sb, za, zb, ra, rb, zp, lo, hi)


@njit(cache=True)
def qmean(x, out, count, x_zero, mult, shift, zp):
    """``qmean_rows`` on arrays of any rank (a thin shell per rank)."""
    qmean_rows(x.reshape(x.size), out.reshape(out.size), count, x_zero, mult, shift, zp)


@njit(cache=True)
def quantize_flat(xf, of, scale, zero_point):
    """of[i] = clamp(rint(float32(xf[i]) / scale) + zero_point) as int8; NaN -> zero_point.

    ``scale`` and ``zero_point`` are float32 scalars.
    """
    for i in range(uint64(xf.size)):
        v = np.rint(np.float32(xf[i]) / scale) + zero_point
        if v != v:
            v = zero_point
        v = _QMIN if v < _QMIN else v
        v = _QMAX if v > _QMAX else v
        of[i] = np.int8(v)


@njit(cache=True)
def dequantize_flat(xf, of, scales, zero_points, inner):
    """of = (float32(x) - zero_points[c]) · scales[c] in float32, where the channel c of
    flat element i is (i // inner) % scales.size (one channel: per tensor)."""
    channels = scales.size
    for start in range(0, xf.size, inner):
        c = (start // inner) % channels
        s, z = scales[c], zero_points[c]
        base = uint64(start)
        for i in range(uint64(inner)):
            of[base + i] = (np.float32(xf[base + i]) - z) * s


@njit(cache=True)
def qadd_flat(af, bf, of, shape, sa, sb, za, zb, ra, rb, zp, lo, hi):
    """of = clamp(rint((a - za)·ra + (b - zb)·rb) + zp, lo, hi) over the broadcast plan
    ``shape`` with operand strides ``sa``, ``sb`` (``broadcast_plan``); all float64, where
    ra = ma · 2^-shift and rb = mb · 2^-shift (``irc.quant.add_multipliers``)."""
    n0, n1, n2, n3 = shape
    o = 0
    for i0 in range(n0):
        for i1 in range(n1):
            for i2 in range(n2):
                ao = i0 * sa[0] + i1 * sa[1] + i2 * sa[2]
                bo = i0 * sb[0] + i1 * sb[1] + i2 * sb[2]
                _qadd_run(af, ao, sa[3], bf, bo, sb[3], of, o, n3, za, zb, ra, rb, zp, lo, hi)
                o += n3


@njit(cache=True, inline="always")
def _qadd_one(x, y, za, zb, ra, rb, zp, lo, hi):
    """One rescaled sum of int8 levels x, y as the output's int8 level, in float64.

    With ra = ma · 2^-shift (and rb), (x - za)·ra + (y - zb)·rb is exact: both terms are
    multiples of 2^-shift below 2^(40 - shift), 41 significant bits at most. So ``rint``
    rounds the exact value half to even, as the integer path does.
    """
    v = np.rint((np.float64(x) - za) * ra + (np.float64(y) - zb) * rb) + zp
    v = lo if v < lo else v
    return np.int8(hi if v > hi else v)


@njit(cache=True)
def _qadd_run(af, ao, sa, bf, bo, sb, of, oo, count, za, zb, ra, rb, zp, lo, hi):
    """of[oo + k] = qadd(af[ao + k·sa], bf[bo + k·sb]) for k < count; unit and zero strides
    get loops of their own (uint64 indices, so they vectorise)."""
    ao, bo, oo, n = uint64(ao), uint64(bo), uint64(oo), uint64(count)
    if sa == 1 and sb == 1:
        for k in range(n):
            of[oo + k] = _qadd_one(af[ao + k], bf[bo + k], za, zb, ra, rb, zp, lo, hi)
    elif sa == 1 and sb == 0:
        y = bf[bo]
        for k in range(n):
            of[oo + k] = _qadd_one(af[ao + k], y, za, zb, ra, rb, zp, lo, hi)
    elif sa == 0 and sb == 1:
        x = af[ao]
        for k in range(n):
            of[oo + k] = _qadd_one(x, bf[bo + k], za, zb, ra, rb, zp, lo, hi)
    else:
        step_a, step_b = uint64(sa), uint64(sb)
        for k in range(n):
            x, y = af[ao + k * step_a], bf[bo + k * step_b]
            of[oo + k] = _qadd_one(x, y, za, zb, ra, rb, zp, lo, hi)


@njit(cache=True)
def qmean_rows(xf, of, count, x_zero, mult, shift, zp):
    """of[r] = requant(Σ_i xf[r·count + i] - count·x_zero) by (mult, shift), for every row
    of ``count`` levels (the integer global average pool)."""
    for r in range(of.size):
        base = uint64(r * count)
        total = np.int64(0)
        for i in range(uint64(count)):
            total += np.int64(xf[base + i])
        total -= np.int64(count) * x_zero
        of[r] = np.int8(requantize_one(total, mult, shift, zp, -128, 127))


@njit(cache=True)
def qmean_channels_last(x, out, count, x_zero, mult, shift, zp):
    """out[b, c] = requant(Σ_p x[b, p, c] - count·x_zero) for NHWC ``x`` of ``count``
    pixels per image (viewed [N, count, C]); ``out`` holds N·C levels."""
    images, channels = x.shape[0], x.shape[-1]
    xf, of = x.reshape(x.size), out.reshape(out.size)
    totals = np.empty(channels, dtype=np.int64)
    n = uint64(channels)
    for b in range(images):
        totals[:] = -np.int64(count) * x_zero
        for p in range(count):
            base = uint64((b * count + p) * channels)
            for c in range(n):
                totals[c] += np.int64(xf[base + c])
        for c in range(channels):
            v = requantize_one(totals[c], mult, shift, zp, -128, 127)
            of[b * channels + c] = np.int8(v)


@njit(cache=True)
def requantize_columns(src, dst, rows, src_cols, dst_cols, col_offset, table):
    """dst viewed as [rows, dst_cols] gets table[src + 128] (src: int8 [rows, src_cols]) at
    column ``col_offset``: ``table`` holds the output level of every input level."""
    n = uint64(src_cols)
    for r in range(rows):
        s, d = uint64(r * src_cols), uint64(r * dst_cols + col_offset)
        for j in range(n):
            dst[d + j] = table[np.int64(src[s + j]) + 128]


@njit(cache=True)
def lookup(x, out, table):
    """out[i] = table[x[i] + 128] over int8 arrays of any rank (the same size): ``table``
    holds the output level of every input level."""
    xf, of = x.reshape(x.size), out.reshape(out.size)
    for i in range(uint64(xf.size)):
        of[i] = table[np.int64(xf[i]) + 128]
