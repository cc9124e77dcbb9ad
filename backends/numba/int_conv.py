"""Integer convolution (regular, grouped, pointwise) and qgemm as int8 matrix products.

Every product goes through ``gemm_s8`` (``int_simd.gemm_s8_best``: AVX2 where the CPU has
it, else the portable ``int_gemm.gemm_s8``, with identical results): int8 activation rows
[P, K] times weight rows [O, K] (int8 levels, or packed 4-/2-bit bytes read in place) into
an int32 tile [P, O].

A convolution works per (image, group, tile of output pixels): the tile's activation rows
are gathered into a scratch [pixels, K] matrix with K ordered (channel, kernel row, kernel
column), as the OIHW weight flattens; a pointwise conv (1×1, stride 1, no padding) needs
only a transpose of [C, pixels]. Padding cells hold the input zero point z_x, and the
product's Σ_k x·w is corrected by -z_x·Σ_k w[o, k] (folded into the bias once per call),
so padding counts as real zero and the activations need no widening. The epilogue adds the
bias and requantizes per output channel. Tasks run in parallel over Numba's threads (the
driver sets their count); every output element is computed by one task, so the result
does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from irc.backends.numba.int_common import (
    ACC_PER_TERM,
    STAGE_PIXELS,
    layer_constants,
    requantize_channels_major,
    requantize_rows,
)
from irc.backends.numba.int_simd import gemm_s8_best as gemm_s8

# Parallel tasks are dealt into at most this many chunks, each allocating its scratch once.
_CHUNKS = 64


@njit(cache=True, parallel=True)
def qconv_gemm(x, w, bits, bias, multiplier, shift, wsums, out, kh, kw, sh, sw, top, left, dh,
               dw, group, pointwise, tile, x_zero, zp, lo, hi):  # fmt: skip
    """out = requant(conv(x - x_zero, w) + bias): NCHW int8 ``x``, weight rows ``w`` [O, ...]
    at ``bits`` (8: int8 levels; 4, 2: packed bytes), ``wsums`` [O] their level sums.

    Output pixels go ``tile`` per product; ``pointwise`` marks the 1×1 / stride 1 / no pad
    form. Trailing pads are implied by out's shape.
    """
    n, cin, height, width = x.shape
    cout, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    cin_g, og = cin // group, cout // group
    k = cin_g * kh * kw
    pixels = oh * ow
    w2 = w.reshape((cout, w.size // cout))
    tail = layer_constants(bias, multiplier, shift, wsums, x_zero, ACC_PER_TERM * k)
    xf, of = x.reshape(x.size), out.reshape(out.size)
    tiles = -(-pixels // tile)
    tasks = n * group * tiles
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        cols = np.empty(tile * k, dtype=np.int8)
        acc = np.empty(tile * og, dtype=np.int32)
        stage = np.empty(STAGE_PIXELS * og, dtype=np.int32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            image, rest = task // (group * tiles), task % (group * tiles)
            g, p0 = rest // tiles, (rest % tiles) * tile
            rows = min(tile, pixels - p0)
            x_off = (image * cin + g * cin_g) * height * width
            if pointwise:
                _transpose_rows(xf, x_off, pixels, cin_g, p0, rows, cols)
            else:
                _im2col(xf, x_off, height, width, cin_g, kh, kw, sh, sw, top, left, dh, dw, ow,
                        p0, rows, x_zero, cols)  # fmt: skip
            a = cols[: rows * k].reshape((rows, k))
            tile_acc = acc[: rows * og].reshape((rows, og))
            gemm_s8(a, w2[g * og : (g + 1) * og], bits, k, tile_acc)
            out_off = (image * cout + g * og) * pixels + p0
            requantize_channels_major(tile_acc, rows, og, tail, g * og, zp, lo, hi, of, out_off,
                                      pixels, stage)  # fmt: skip


@njit(cache=True)
def _transpose_rows(xf, x_off, pixels, channels, p0, rows, cols):
    """cols[p, c] = x[c, p0 + p] for the ``channels`` planes from ``x_off``, in 16 × 16
    blocks (each read run and written run stays in a few cache lines)."""
    for b0 in range(0, rows, 16):
        count = min(16, rows - b0)
        for c0 in range(0, channels, 16):
            width = uint64(min(16, channels - c0))
            for p in range(count):
                dst = uint64((b0 + p) * channels + c0)
                src = uint64(x_off + c0 * pixels + p0 + b0 + p)
                for c in range(width):
                    cols[dst + c] = xf[src + c * uint64(pixels)]


@njit(cache=True)
def _im2col(xf, x_off, height, width, channels, kh, kw, sh, sw, top, left, dh, dw, ow, p0, rows,
            x_zero, cols):  # fmt: skip
    """cols[p, (c, i, j)] = x[c, r·sh - top + i·dh, q·sw - left + j·dw] for output pixel
    p0 + p = (r, q), and x_zero where that lies in the padding.

    Output row by output row; per (kernel column, channel, kernel row) one run over the
    row's pixels in the tile: padding, a strided copy, padding (no test per element).
    """
    k = channels * kh * kw
    step = uint64(k)
    pad = np.int8(x_zero)
    end = p0 + rows
    r = p0 // ow
    while r * ow < end:
        q0, q1 = max(p0 - r * ow, 0), min(end - r * ow, ow)
        first = r * ow - p0  # the tile row of pixel (r, 0)
        for j in range(kw):
            shift = j * dw - left
            # the columns q whose input column q·sw + shift lies inside [0, width)
            q_lo = 0 if shift >= 0 else (sw - 1 - shift) // sw
            q_hi = (width - 1 - shift) // sw + 1 if shift < width else 0
            q_lo = min(max(q_lo, q0), q1)
            q_hi = max(min(q_hi, q1), q_lo)
            for c in range(channels):
                plane = x_off + c * height * width
                for i in range(kh):
                    ih = r * sh - top + i * dh
                    col = (c * kh + i) * kw + j
                    dst = uint64((first + q0) * k + col)
                    if ih < 0 or ih >= height:
                        for q in range(uint64(q1 - q0)):
                            cols[dst + q * step] = pad
                        continue
                    for q in range(uint64(q_lo - q0)):
                        cols[dst + q * step] = pad
                    dst = uint64((first + q_lo) * k + col)
                    src = uint64(plane + ih * width + q_lo * sw + shift)
                    if sw == 1:
                        for q in range(uint64(q_hi - q_lo)):
                            cols[dst + q * step] = xf[src + q]
                    else:
                        for q in range(uint64(q_hi - q_lo)):
                            cols[dst + q * step] = xf[src + q * uint64(sw)]
                    dst = uint64((first + q_hi) * k + col)
                    for q in range(uint64(q1 - q_hi)):
                        cols[dst + q * step] = pad
        r += 1


@njit(cache=True, parallel=True)
def qgemm_tiles(a, w, bits, bias, multiplier, shift, wsums, out, tile_m, tile_n, a_zero, zp, lo,
                hi):  # fmt: skip
    """out = requant((a - a_zero) @ w.T + bias) for int8 ``a`` [M, K] and weight rows ``w``
    [N, ...] at ``bits``, in tiles of tile_m × tile_n outputs."""
    m_all, k = a.shape
    n_all = out.shape[1]
    tail = layer_constants(bias, multiplier, shift, wsums, a_zero, ACC_PER_TERM * k)
    of = out.reshape(out.size)
    m_tiles, n_tiles = -(-m_all // tile_m), -(-n_all // tile_n)
    tasks = m_tiles * n_tiles
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        acc = np.empty(tile_m * tile_n, dtype=np.int32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            m0, n0 = (task // n_tiles) * tile_m, (task % n_tiles) * tile_n
            rows, cols = min(tile_m, m_all - m0), min(tile_n, n_all - n0)
            tile_acc = acc[: rows * cols].reshape((rows, cols))
            gemm_s8(a[m0 : m0 + rows], w[n0 : n0 + cols], bits, k, tile_acc)
            requantize_rows(tile_acc, rows, cols, tail, n0, zp, lo, hi, of, m0 * n_all + n0,
                            n_all)  # fmt: skip
