"""The float depthwise convolution kernel (every group one input channel, any multiplier).

Per (image, input channel) task the zero-padded input plane is split by stride phase into
planes in which every kernel tap reads one contiguous run, so a tap is a single long
multiply-add over a "wide" accumulator: output rows at the padded pitch, the few extra
columns computed and dropped in the epilogue. Taps go five (three for tiny kernels) per
pass, over accumulator blocks of ~8 KB that stay in L1. Innermost loops are unit stride
and index with uint64, so Numba emits no wraparound selects and LLVM vectorises them
(with FMA: ``contract``). Tasks are split into a fixed number of chunks over threads, each
chunk allocating its scratch once, which matters for the 7×7 planes of late layers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from irc.backends.numba.float_activation import hard_swish_gate

# Depthwise tasks are split into this many chunks, each allocating its scratch once.
_CHUNKS = 64


@njit(cache=True, parallel=True)
def depthwise_conv(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi):
    """out = act(depthwise conv of NCHW x with weight w [C·mult, 1, kh, kw] + bias).

    Strides (sh, sw), leading pads (top, left) and dilations (dh, dw); the trailing pads are
    implied by out's shape. hs, lo, hi: the fused activation (``float_activation``).
    """
    n, cin, height, width = x.shape
    cout, _, kh, kw = w.shape
    oh_all, ow_all = out.shape[2], out.shape[3]
    mult = cout // cin
    # Phase plane (pr, pc) holds padded[pr + sh·a, pc + sw·q] at [a, q]; tap (i, j) then
    # reads phase ((i·dh) % sh, (j·dw) % sw) from row (i·dh)//sh, column (j·dw)//sw on.
    pitch = ow_all + ((kw - 1) * dw) // sw
    prow = oh_all + ((kh - 1) * dh) // sh
    # One spare row (wide rows read past the last real one) and spare lanes: passes run
    # over whole multiples of 32 elements, LLVM's unrolled vector step, so no scalar tail.
    psize = prow * pitch + pitch + 32
    # Output rows per accumulator block: ~8 KB, so the tap passes stay in L1.
    block = max(1, 2048 // pitch)
    # Taps go five (or for tiny kernels three) per pass over the accumulator, the last pass
    # padded with zero-weight taps that read offset 0.
    group = 5 if kh * kw >= 5 else 3
    taps = -(-kh * kw // group) * group
    offsets = phase_tap_offsets(kh, kw, sh, sw, dh, dw, pitch, psize, taps)
    xf, wf, of = x.reshape(x.size), w.reshape(w.size), out.reshape(out.size)
    tasks = n * cin
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        # Scratch once per chunk: every task writes the same plane cells, so the padding
        # cells zeroed here stay zero.
        planes = np.zeros(sh * sw * psize, dtype=x.dtype)
        acc = np.empty(block * pitch + 32, dtype=x.dtype)
        row = np.zeros(sw * pitch, dtype=x.dtype)
        weights = np.zeros(taps, dtype=w.dtype)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            b, ic = task // cin, task % cin
            _fill_planes(xf, task * height * width, height, width, planes, row, sh, sw, top, left,
                         prow, pitch, psize)  # fmt: skip
            for m in range(mult):
                oc = ic * mult + m
                for t in range(kh * kw):
                    weights[t] = wf[oc * kh * kw + t]
                for r0 in range(0, oh_all, block):
                    rows = min(block, oh_all - r0)
                    span = -(-rows * pitch // 32) * 32
                    _taps(acc, planes, offsets, weights, r0 * pitch, span, group)
                    out_off = ((b * cout + oc) * oh_all + r0) * ow_all
                    _dw_epilogue(acc, pitch, of, out_off, rows, ow_all, bias[oc], hs, lo, hi)


@njit(cache=True, fastmath={"contract"})
def _taps(acc, planes, offsets, weights, shift, span, group):
    """acc[:span] = sum over taps t of weights[t] · planes[offsets[t] + shift :][:span]."""
    o, w = offsets, weights
    for t in range(0, o.size, group):
        if group == 5:
            _five_taps(acc, planes, o[t] + shift, o[t + 1] + shift, o[t + 2] + shift,
                       o[t + 3] + shift, o[t + 4] + shift, w[t], w[t + 1], w[t + 2], w[t + 3],
                       w[t + 4], span, t == 0)  # fmt: skip
        else:
            _three_taps(acc, planes, o[t] + shift, o[t + 1] + shift, o[t + 2] + shift, w[t],
                        w[t + 1], w[t + 2], span, t == 0)  # fmt: skip


@njit(cache=True, fastmath={"contract"}, inline="always")
def _three_taps(acc, planes, o0, o1, o2, w0, w1, w2, span, first):
    """acc[p] (=, or += unless first) w0·planes[o0+p] + w1·planes[o1+p] + w2·planes[o2+p].

    ``contract`` lets LLVM fuse each multiply-add into one FMA (one rounding, not two).
    """
    o0, o1, o2 = uint64(o0), uint64(o1), uint64(o2)
    if first:
        for p in range(uint64(span)):
            acc[p] = w0 * planes[o0 + p] + w1 * planes[o1 + p] + w2 * planes[o2 + p]
    else:
        for p in range(uint64(span)):
            acc[p] += w0 * planes[o0 + p] + w1 * planes[o1 + p] + w2 * planes[o2 + p]


@njit(cache=True, fastmath={"contract"}, inline="always")
def _five_taps(acc, planes, o0, o1, o2, o3, o4, w0, w1, w2, w3, w4, span, first):
    """As ``_three_taps`` with five taps: one kernel row of a 5×5 kernel per pass."""
    o0, o1, o2, o3, o4 = uint64(o0), uint64(o1), uint64(o2), uint64(o3), uint64(o4)
    if first:
        for p in range(uint64(span)):
            acc[p] = (w0 * planes[o0 + p] + w1 * planes[o1 + p] + w2 * planes[o2 + p]
                      + w3 * planes[o3 + p] + w4 * planes[o4 + p])  # fmt: skip
    else:
        for p in range(uint64(span)):
            acc[p] += (w0 * planes[o0 + p] + w1 * planes[o1 + p] + w2 * planes[o2 + p]
                       + w3 * planes[o3 + p] + w4 * planes[o4 + p])  # fmt: skip


@njit(cache=True)
def _fill_planes(xf, plane_in, height, width, planes, row, sh, sw, top, left, prow, pitch, psize):
    """Split the zero-padded input plane at ``plane_in`` into its sh·sw stride phases.

    Each padded row is first built in ``row`` (sw·pitch long; its padding cells are never
    written, so they stay zero), then dealt out column by column to the sw column phases:
    a unit-stride copy, or for stride 2 an even/odd split that LLVM vectorises too.
    """
    real = max(0, min(width, sw * pitch - left))  # input columns that land in the row
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
                    planes[lead + q] = xf[src + q]
                continue
            lead = uint64(left)
            for q in range(uint64(real)):
                row[lead + q] = xf[src + q]
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


@njit(cache=True)
def _dw_epilogue(acc, pitch, of, out_off, rows, ow_all, bias, hs, lo, hi):
    """of[out_off + r·ow + o] = act(acc[r·pitch + o] + bias): the real columns of each row."""
    for r in range(rows):
        src, dst = uint64(r * pitch), uint64(out_off + r * ow_all)
        if hs:
            for o in range(uint64(ow_all)):
                v = acc[src + o] + bias
                of[dst + o] = v * hard_swish_gate(v)
        else:
            for o in range(uint64(ow_all)):
                v = acc[src + o] + bias
                v = lo if v < lo else v
                of[dst + o] = hi if v > hi else v


@njit(cache=True)
def phase_tap_offsets(kh, kw, sh, sw, dh, dw, pitch, psize, taps):
    """Where tap (i, j) starts reading in the phase planes (``taps`` entries, those past
    kh·kw zero): phase ((i·dh) % sh, (j·dw) % sw), row (i·dh)//sh, column (j·dw)//sw."""
    offsets = np.zeros(taps, dtype=np.int64)
    for t in range(kh * kw):
        i, j = t // kw, t % kw
        phase = ((i * dh) % sh * sw + (j * dw) % sw) * psize
        offsets[t] = phase + ((i * dh) // sh) * pitch + (j * dw) // sw
    return offsets
