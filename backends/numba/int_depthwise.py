"""The integer depthwise convolution kernel (every group one input channel, any multiplier).

The float kernel's scheme (``float_depthwise``) in integers: per (image, input channel)
task the input plane, centred on its zero point (x - z_x, an int16), is laid out zero
padded and split by stride phase, so every kernel tap reads one contiguous run; a tap is
then one long multiply-add into an int32 "wide" accumulator (output rows at the padded
pitch, the extra columns dropped by the epilogue). Centring makes the padding an exact
zero, and each product (|x - z_x| <= 255, |w| <= 127) fits int16, so LLVM multiplies in
16-bit lanes and widens to the int32 sum. Taps go three per pass over ~8 KB accumulator
blocks; inner loops are unit stride with uint64 indices, so they vectorise. Tasks are
split into chunks over Numba's threads; each output element is computed by one task.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from irc.backends.numba.float_depthwise import phase_tap_offsets
from irc.backends.numba.int_common import (
    ACC_PER_TERM,
    layer_constants,
    requantize_run,
    weight_level,
)

_CHUNKS = 64
_TAPS_PER_PASS = 3


@njit(cache=True, parallel=True)
def qdepthwise(x, w, bits, bias, multiplier, shift, out, kh, kw, sh, sw, top, left, dh, dw,
               x_zero, zp, lo, hi):  # fmt: skip
    """out = requant(depthwise conv(x - x_zero, w) + bias) for NCHW int8 ``x`` and weight
    rows ``w`` [C·mult, ...] at ``bits`` (8: int8 levels; 4, 2: packed bytes).

    Strides (sh, sw), leading pads (top, left), dilations (dh, dw); the trailing pads are
    implied by out's shape. ``multiplier`` and ``shift`` are [O] or [1].
    """
    n, cin, height, width = x.shape
    cout, oh_all, ow_all = out.shape[1], out.shape[2], out.shape[3]
    mult = cout // cin
    w2 = w.reshape((cout, w.size // cout))
    # Phase plane (pr, pc) holds padded[pr + sh·a, pc + sw·q] at [a, q]; tap (i, j) then
    # reads phase ((i·dh) % sh, (j·dw) % sw) from row (i·dh)//sh, column (j·dw)//sw on.
    pitch = ow_all + ((kw - 1) * dw) // sw
    prow = oh_all + ((kh - 1) * dh) // sh
    psize = prow * pitch + pitch + 32  # a spare row and lanes: passes run in whole vectors
    block = max(1, 2048 // pitch)  # output rows per accumulator block (~8 KB)
    taps = -(-kh * kw // _TAPS_PER_PASS) * _TAPS_PER_PASS  # padded with zero-weight taps
    offsets = phase_tap_offsets(kh, kw, sh, sw, dh, dw, pitch, psize, taps)
    no_sums = np.zeros(cout, dtype=np.int64)  # centred input: no zero-point term
    tail = layer_constants(bias, multiplier, shift, no_sums, 0, ACC_PER_TERM * kh * kw)
    xf, of = x.reshape(x.size), out.reshape(out.size)
    tasks = n * cin
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        # Scratch once per chunk: every task writes the same plane cells, so the padding
        # cells zeroed here stay zero.
        planes = np.zeros(sh * sw * psize, dtype=np.int16)
        acc = np.empty(block * pitch + 32, dtype=np.int32)
        row = np.zeros(sw * pitch, dtype=np.int16)
        weights = np.zeros(taps, dtype=np.int16)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            b, ic = task // cin, task % cin
            _fill_planes(xf, task * height * width, height, width, planes, row, sh, sw, top,
                         left, prow, pitch, psize, x_zero)  # fmt: skip
            for m in range(mult):
                oc = ic * mult + m
                for t in range(kh * kw):
                    weights[t] = np.int16(weight_level(w2, oc, t, bits))
                for r0 in range(0, oh_all, block):
                    rows = min(block, oh_all - r0)
                    span = -(-rows * pitch // 32) * 32
                    _taps(acc, planes, offsets, weights, r0 * pitch, span)
                    out_off = ((b * cout + oc) * oh_all + r0) * ow_all
                    for r in range(rows):  # each row's real columns
                        requantize_run(acc, r * pitch, of, out_off + r * ow_all, ow_all, oc,
                                       tail, zp, lo, hi)  # fmt: skip


@njit(cache=True)
def _taps(acc, planes, offsets, weights, shift, span):
    """acc[:span] = Σ_t weights[t] · planes[offsets[t] + shift :][:span], three taps a pass."""
    o, w = offsets, weights
    for t in range(0, o.size, _TAPS_PER_PASS):
        _three_taps(acc, planes, o[t] + shift, o[t + 1] + shift, o[t + 2] + shift, w[t],
                    w[t + 1], w[t + 2], span, t == 0)  # fmt: skip


@njit(cache=True, inline="always")
def _three_taps(acc, planes, o0, o1, o2, w0, w1, w2, span, first):
    """acc[p] (=, or += unless first) w0·planes[o0+p] + w1·planes[o1+p] + w2·planes[o2+p].

    Each product fits int16 (exactly), so it is formed in 16 bits and widened to the sum.
    """
    o0, o1, o2 = uint64(o0), uint64(o1), uint64(o2)
    if first:
        for p in range(uint64(span)):
            acc[p] = (np.int32(np.int16(w0 * planes[o0 + p]))
                      + np.int32(np.int16(w1 * planes[o1 + p]))
                      + np.int32(np.int16(w2 * planes[o2 + p])))  # fmt: skip
    else:
        for p in range(uint64(span)):
            acc[p] += (np.int32(np.int16(w0 * planes[o0 + p]))
                       + np.int32(np.int16(w1 * planes[o1 + p]))
                       + np.int32(np.int16(w2 * planes[o2 + p])))  # fmt: skip


@njit(cache=True)
def _fill_planes(xf, plane_in, height, width, planes, row, sh, sw, top, left, prow, pitch, psize,
                 x_zero):  # fmt: skip
    """Split the centred (x - x_zero), zero-padded input plane at ``plane_in`` into its
    sh·sw stride phases (as ``float_depthwise._fill_planes``)."""
    real = max(0, min(width, sw * pitch - left))  # input columns that land in the row
    zero = np.int16(x_zero)
    for pr in range(sh):
        for a in range(prow):
            ih = pr + sh * a - top
            if ih < 0 or ih >= height:
                continue  # stays zero: padding
            src = uint64(plane_in + ih * width)
            dst = uint64(pr * sw * psize + a * pitch)
            if sw == 1:
                lead = uint64(dst + left)
                for q in range(uint64(real)):
                    planes[lead + q] = np.int16(xf[src + q]) - zero
                continue
            lead = uint64(left)
            for q in range(uint64(real)):
                row[lead + q] = np.int16(xf[src + q]) - zero
            if sw == 2:
                odd = uint64(dst + psize)
                for q in range(uint64(pitch)):
                    planes[dst + q] = row[2 * q]
                    planes[odd + q] = row[2 * q + 1]
            else:
                for pc in range(sw):
                    base = uint64(dst + pc * psize)
                    for q in range(uint64(pitch)):
                        planes[base + q] = row[uint64(pc) + uint64(sw) * q]
