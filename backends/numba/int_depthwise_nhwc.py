"""The integer depthwise convolution kernel on channels-last (NHWC) tensors.

``qdepthwise_nhwc`` computes what ``int_depthwise.qdepthwise`` computes, bit for bit, for
x [N, H, W, C] and out [N, OH, OW, C·mult]. In NHWC the output pixels q0 .. q1 of one
output row and all their channels are one contiguous run of ``out``, and for a kernel tap
(i, j) they read one contiguous run of input row ih = r·sh - top + i·dh as well, once that
row is split by column stride phase. So a tap is one long unit-stride multiply-add over
(pixel, channel) pairs, which LLVM vectorises along the channels (the loop overhead paid
once per run, not once per pixel):

- **Rows.** Each input row a task needs is prepared once into a small ring of rows (kept in
  L1/L2 while the task moves down its output rows): centred (x - z_x, an int16, so that
  skipped padding taps are an exact zero), split into its sw column phases, and with
  depth multiplier > 1 expanded to the output channels (channel oc reads ic = oc // mult),
  so every later step sees C·mult channels alike. No padding is stored.
- **Taps.** Output pixels are taken in blocks of about ``_BLOCK`` (pixel, channel) pairs;
  a block's int32 accumulator stays in L1. Tap (i, j) reads phase (j·dw - left) mod sw of
  row ih from a fixed offset; its valid pixels (input column inside the row) form one
  interval, so padding is handled by clipping each tap's run, never by tests per element.
  The weights are laid out per tap replicated over a block's pixels ([tap, pixel, channel],
  int16), so weight, input and accumulator are read at the same flat index. A 3×3 kernel's
  nine taps go in one pass over the pixels all of them reach (all but the edge pixels, in
  output rows whose three input rows exist); otherwise taps go a kernel row (three taps)
  per pass where all three are valid, and alone over the edge pixels.
  Each product (|x - z_x| <= 255, |w| <= 128) fits int16, so LLVM multiplies in 16-bit
  lanes and widens to the int32 sum, as in ``int_depthwise``.
- **Requantization** follows each block while it is in L1, along the same flat index with
  the per-channel float64 constants of ``layer_constants`` replicated like the weights,
  writing int8 NHWC directly; the channels that may not take the float64 path (where it
  could differ from the int64 one) are then redone by ``requantize_one``.

Tasks are output rows (of every image), split into a few contiguous chunks over Numba's
threads; each chunk allocates its scratch once. Every output element is computed by one
task, and in integers, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from irc.backends.numba.int_common import (
    ACC_PER_TERM,
    layer_constants,
    requantize_one,
    weight_level,
)

_BLOCK = 1024  # (pixel, channel) pairs per accumulator block: 4 KB of int32
_CHUNKS = 16  # tasks go in this many chunks: few, so that a chunk reuses its prepared rows


@njit(cache=True, parallel=True)
def qdepthwise_nhwc(x, w, bits, bias, multiplier, shift, out, kh, kw, sh, sw, top, left, dh, dw,
                    x_zero, zp, lo, hi):  # fmt: skip
    """out = requant(depthwise conv(x - x_zero, w) + bias) for NHWC int8 ``x`` [N, H, W, C]
    into NHWC int8 ``out`` [N, OH, OW, C·mult]; weight rows ``w`` [C·mult, ...] at ``bits``
    (8: int8 levels; 4, 2: packed bytes).

    Strides (sh, sw), leading pads (top, left), dilations (dh, dw); the trailing pads are
    implied by out's shape. ``multiplier`` and ``shift`` are [O] or [1]. The arguments and
    the result are ``qdepthwise``'s, with x and out channels last.
    """
    n, height, width, cin = x.shape
    oh_all, ow_all, cout = out.shape[1], out.shape[2], out.shape[3]
    mult = cout // cin
    taps = kh * kw
    pixels = max(1, min(ow_all, _BLOCK // cout))  # output pixels per block
    span = pixels * cout
    no_sums = np.zeros(cout, dtype=np.int64)  # centred input: no zero-point term
    tail = layer_constants(bias, multiplier, shift, no_sums, 0, ACC_PER_TERM * taps)
    all_fast = True
    for oc in range(cout):
        all_fast = all_fast and tail[5][oc]
    wrep, corr_rep, scale_rep = _replicated(w, bits, taps, cout, pixels, tail)
    # The ring of prepared input rows: enough for the rows of one output row and the next.
    ring = (kh - 1) * dh + 1 + sh
    phase_cols = -(-width // sw)  # columns of the widest phase
    slot = sw * phase_cols * cout
    xf, of = x.reshape(x.size), out.reshape(out.size)
    tasks = n * oh_all
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        rows = np.empty(ring * slot, dtype=np.int16)
        tags = np.full(ring, -1, dtype=np.int64)  # which input row each slot holds
        acc = np.empty(span, dtype=np.int32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            b, r = task // oh_all, task % oh_all
            for i in range(kh):
                ih = r * sh - top + i * dh
                if 0 <= ih < height and tags[ih % ring] != b * height + ih:
                    tags[ih % ring] = b * height + ih
                    _prepare_row(xf, ((b * height + ih) * width) * cin, width, cin, mult, sw,
                                 phase_cols, rows, (ih % ring) * slot, x_zero)  # fmt: skip
            nine = kh == 3 and kw == 3
            for i in range(kh):
                ih = r * sh - top + i * dh
                nine = nine and 0 <= ih < height
            for qb in range(0, ow_all, pixels):
                qe = min(ow_all, qb + pixels)
                m0, m1 = qe, qe  # the pixels every tap reaches: one nine-tap pass
                if nine:
                    _, m0, m1 = _tap_run(0, dw, sw, left, width, phase_cols, cout, qb, qb, qe)
                    for j in range(1, 3):
                        _, a, e = _tap_run(j, dw, sw, left, width, phase_cols, cout, qb, qb, qe)
                        m0, m1 = max(m0, a), min(m1, e)
                    if m0 >= m1:
                        m0, m1 = qe, qe
                    base = (r * sh - top) % ring * slot
                    _nine_taps(acc, rows, base, ((r * sh - top + dh) % ring) * slot,
                               ((r * sh - top + 2 * dh) % ring) * slot, wrep, span, dw, sw,
                               left, width, phase_cols, cout, qb, m0, m1)  # fmt: skip
                for q0, q1 in ((qb, m0), (m1, qe)):  # the rest: kernel rows, clipped taps
                    if q0 >= q1:
                        continue
                    acc[(q0 - qb) * cout : (q1 - qb) * cout] = 0
                    for i in range(kh):
                        ih = r * sh - top + i * dh
                        if 0 <= ih < height:
                            _kernel_row(acc, rows, (ih % ring) * slot, wrep, i * kw * span, span,
                                        kw, dw, sw, left, width, phase_cols, cout, qb, q0,
                                        q1)  # fmt: skip
                d = ((b * oh_all + r) * ow_all + qb) * cout
                _requantize_fast(acc, (qe - qb) * cout, corr_rep, scale_rep, of, d, zp, lo, hi)
                if not all_fast:
                    _redo_exact(acc, qe - qb, cout, tail, of, d, zp, lo, hi)


@njit(cache=True)
def _replicated(w, bits, taps, cout, pixels, tail):
    """The weight levels as int16 [tap, pixel, channel] and the float64 requantization
    constants ``corr_f`` and ``scale_f`` as [pixel, channel], each repeated over ``pixels``
    pixels so that a block reads them at its own flat (pixel, channel) index."""
    span = pixels * cout
    w2 = w.reshape((cout, w.size // cout))
    wrep = np.empty(taps * span, dtype=np.int16)
    for oc in range(cout):
        for t in range(taps):
            level = np.int16(weight_level(w2, oc, t, bits))
            for p in range(pixels):
                wrep[t * span + p * cout + oc] = level
    corr_rep = np.empty(span, dtype=np.float64)
    scale_rep = np.empty(span, dtype=np.float64)
    for p in range(pixels):
        for oc in range(cout):
            corr_rep[p * cout + oc] = tail[3][oc]
            scale_rep[p * cout + oc] = tail[4][oc]
    return wrep, corr_rep, scale_rep


@njit(cache=True)
def _prepare_row(xf, src, width, cin, mult, sw, phase_cols, rows, dst, x_zero):
    """rows[dst + (pc·phase_cols + a)·cout + oc] = x[src + (a·sw + pc)·cin + oc // mult] -
    x_zero for the input row at ``src`` (cout = cin·mult): the centred row split into its sw
    column phases, channels expanded by the depth multiplier."""
    zero = np.int16(x_zero)
    cout = cin * mult
    if sw == 1 and mult == 1:
        s, d = uint64(src), uint64(dst)
        for e in range(uint64(width * cin)):
            rows[d + e] = np.int16(xf[s + e]) - zero
        return
    for iw in range(width):
        pc, a = iw % sw, iw // sw
        s = uint64(src + iw * cin)
        d = uint64(dst + (pc * phase_cols + a) * cout)
        if mult == 1:
            for c in range(uint64(cin)):
                rows[d + c] = np.int16(xf[s + c]) - zero
        else:
            for oc in range(cout):
                rows[d + oc] = np.int16(xf[s + oc // mult]) - zero


@njit(cache=True, inline="always")
def _tap_run(kw_j, dw, sw, left, width, phase_cols, cout, qb, q0, q1):
    """(read offset in the row slot of block origin pixel qb, first pixel, end pixel) of tap
    column j (``kw_j`` = j) within pixels [q0, q1): those whose input column is inside."""
    v = kw_j * dw - left  # input column of output pixel 0
    pc = v % sw
    off = (v - pc) // sw  # phase column of output pixel 0
    cols = (width - pc + sw - 1) // sw  # columns in phase pc
    return (pc * phase_cols + qb + off) * cout, max(q0, -off), min(q1, cols - off)


@njit(cache=True, inline="always")
def _kernel_row(acc, rows, base, wrep, w_row, span, kw, dw, sw, left, width, phase_cols, cout,
                qb, q0, q1):  # fmt: skip
    """acc[(q - qb)·cout + c] += Σ_j (x - z_x)[row, q·sw + j·dw - left, c] · w[i, j, c] for
    pixels q in [q0, q1) of the block at qb and one kernel row (its prepared input row at ``base``,
    its weights at ``w_row``): taps three at a time where all three are valid, else alone."""
    for j0 in range(0, kw, 3):
        if j0 + 3 <= kw:
            x0, a0, b0 = _tap_run(j0, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
            x1, a1, b1 = _tap_run(j0 + 1, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
            x2, a2, b2 = _tap_run(j0 + 2, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
            m0, m1 = max(a0, max(a1, a2)), min(b0, min(b1, b2))
            if m0 < m1:
                e0 = (m0 - qb) * cout
                w0 = w_row + j0 * span
                _three_taps(acc, rows, base + x0, base + x1, base + x2, wrep, w0, w0 + span,
                            w0 + 2 * span, e0, (m1 - m0) * cout)  # fmt: skip
                for j in range(j0, j0 + 3):  # the edge pixels of each tap
                    xo, a, e = _tap_run(j, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
                    _one_tap(acc, rows, base + xo, wrep, w_row + j * span, a, min(e, m0), qb,
                             cout)  # fmt: skip
                    _one_tap(acc, rows, base + xo, wrep, w_row + j * span, max(a, m1), e, qb,
                             cout)  # fmt: skip
                continue
        for j in range(j0, min(kw, j0 + 3)):
            xo, a, e = _tap_run(j, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
            _one_tap(acc, rows, base + xo, wrep, w_row + j * span, a, e, qb, cout)


@njit(cache=True, inline="always")
def _nine_taps(acc, rows, base0, base1, base2, wrep, span, dw, sw, left, width, phase_cols, cout,
               qb, q0, q1):  # fmt: skip
    """acc[(q - qb)·cout + c] = Σ_{i, j < 3} (x - z_x)[row i, q·sw + j·dw - left, c] · w[i, j, c]
    for pixels q in [q0, q1) of the block at qb, which every tap of a 3×3 kernel reaches (the
    prepared input rows at base0, base1, base2): all nine taps in one pass."""
    if q0 >= q1:
        return
    a, n = uint64((q0 - qb) * cout), uint64((q1 - q0) * cout)
    c0, _, _ = _tap_run(0, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
    c1, _, _ = _tap_run(1, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
    c2, _, _ = _tap_run(2, dw, sw, left, width, phase_cols, cout, qb, q0, q1)
    c0, c1, c2 = uint64(c0) + a, uint64(c1) + a, uint64(c2) + a
    r0, r1, r2 = uint64(base0), uint64(base1), uint64(base2)
    x0, x1, x2, x3, x4, x5 = r0 + c0, r0 + c1, r0 + c2, r1 + c0, r1 + c1, r1 + c2
    x6, x7, x8 = r2 + c0, r2 + c1, r2 + c2
    w0, w1, w2 = a, a + uint64(span), a + uint64(2 * span)
    w3, w4, w5 = a + uint64(3 * span), a + uint64(4 * span), a + uint64(5 * span)
    w6, w7, w8 = a + uint64(6 * span), a + uint64(7 * span), a + uint64(8 * span)
    for e in range(n):
        acc[a + e] = (np.int32(np.int16(rows[x0 + e] * wrep[w0 + e]))
                      + np.int32(np.int16(rows[x1 + e] * wrep[w1 + e]))
                      + np.int32(np.int16(rows[x2 + e] * wrep[w2 + e]))
                      + np.int32(np.int16(rows[x3 + e] * wrep[w3 + e]))
                      + np.int32(np.int16(rows[x4 + e] * wrep[w4 + e]))
                      + np.int32(np.int16(rows[x5 + e] * wrep[w5 + e]))
                      + np.int32(np.int16(rows[x6 + e] * wrep[w6 + e]))
                      + np.int32(np.int16(rows[x7 + e] * wrep[w7 + e]))
                      + np.int32(np.int16(rows[x8 + e] * wrep[w8 + e])))  # fmt: skip


@njit(cache=True, inline="always")
def _one_tap(acc, rows, xo, wrep, wo, q0, q1, qb, cout):
    """acc[e] += rows[xo + e] · wrep[wo + e] for the flat indices e of pixels [q0, q1)."""
    if q0 >= q1:
        return
    e0, n = uint64((q0 - qb) * cout), uint64((q1 - q0) * cout)
    x0, w0 = uint64(xo) + e0, uint64(wo) + e0
    for e in range(n):
        acc[e0 + e] += np.int32(np.int16(rows[x0 + e] * wrep[w0 + e]))


@njit(cache=True, inline="always")
def _three_taps(acc, rows, x0, x1, x2, wrep, w0, w1, w2, e0, count):
    """acc[e0 + e] += Σ_k rows[x_k + e0 + e] · wrep[w_k + e0 + e] for k < 3, e < count.

    Each product fits int16 (exactly), so it is formed in 16 bits and widened to the sum.
    """
    a = uint64(e0)
    x0, x1, x2 = uint64(x0) + a, uint64(x1) + a, uint64(x2) + a
    w0, w1, w2 = uint64(w0) + a, uint64(w1) + a, uint64(w2) + a
    for e in range(uint64(count)):
        acc[a + e] += (np.int32(np.int16(rows[x0 + e] * wrep[w0 + e]))
                       + np.int32(np.int16(rows[x1 + e] * wrep[w1 + e]))
                       + np.int32(np.int16(rows[x2 + e] * wrep[w2 + e])))  # fmt: skip


@njit(cache=True)
def _requantize_fast(acc, count, corr_rep, scale_rep, of, d, zp, lo, hi):
    """of[d + e] = clamp(rint((acc[e] + corr) · scale) + zp) for e < count, in float64 with
    the replicated per-channel constants (exact for the channels that are ``fast``)."""
    d = uint64(d)
    fz, flo, fhi = np.float64(zp), np.float64(lo), np.float64(hi)
    for e in range(uint64(count)):
        y = np.rint((np.float64(acc[e]) + corr_rep[e]) * scale_rep[e]) + fz
        y = flo if y < flo else y
        of[d + e] = np.int8(fhi if y > fhi else y)


@njit(cache=True)
def _redo_exact(acc, pixels, cout, tail, of, d, zp, lo, hi):
    """of[d + p·cout + c] = requant(acc[p·cout + c] + corr[c]) for p < pixels and the
    channels c the float64 path may not take: by the int64 path (``requantize_one``)."""
    corr, mult, shf, fast = tail[0], tail[1], tail[2], tail[5]
    for c in range(cout):
        if fast[c]:
            continue
        for p in range(pixels):
            e = p * cout + c
            v = requantize_one(np.int64(acc[e]) + corr[c], mult[c], shf[c], zp, lo, hi)
            of[d + e] = np.int8(v)
