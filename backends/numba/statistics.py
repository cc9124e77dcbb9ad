"""Numba kernels for the rounding stage's input statistics (``irc.gptq``).

A depthwise convolution has one tiny H per channel (9×9 for a 3×3 kernel), summed over
hundreds of thousands of input windows. As matrix products that is thousands of 9×N by
N×9 products, each too small for BLAS, after an im2col copy nine times the activation;
here the input is padded once in NHWC order and, at each output position, every pair
of taps is one vector multiply-add over all channels (about 13 GFLOP/s on 2 AVX2 cores,
against under 1 for numpy's batched 9×N·N×9 products).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64


@njit(cache=True, fastmath={"contract"}, inline="always")
def _copy(dst, src, at_dst, at_src, count):
    """dst[at_dst : at_dst + count] = src[at_src : at_src + count] (uint64 indices, so it
    vectorises)."""
    at_dst, at_src = uint64(at_dst), uint64(at_src)
    for k in range(uint64(count)):
        dst[at_dst + k] = src[at_src + k]


@njit(cache=True, fastmath={"contract"}, inline="always")
def _multiply_add(acc, v, at_acc, at_a, at_e, count):
    """acc[at_acc + k] += v[at_a + k] · v[at_e + k] for k < count."""
    at_acc, at_a, at_e = uint64(at_acc), uint64(at_a), uint64(at_e)
    for k in range(uint64(count)):
        acc[at_acc + k] += v[at_a + k] * v[at_e + k]


@njit(cache=True, parallel=True, fastmath={"contract"})
def depthwise_gram(padded, kh, kw, sh, sw, dh, dw, oh, ow):
    """Per channel c of NHWC ``padded`` (the conv's input with its zero padding): Σ over
    images and the oh×ow output positions of v vᵀ, v the c-th channel's kh·kw window
    (strides (sh, sw), dilations (dh, dw)). Returns [C, kh·kw, kh·kw] float64.

    One image per parallel task. Channels are innermost, so at each position the kh·kw
    window vectors are copied side by side and every pair of taps (a ≤ e) is one vector
    multiply-add over all channels; each image's sums are float32, their total float64."""
    n, rows, cols, channels = padded.shape
    flat = padded.ravel()
    taps = kh * kw
    pairs = taps * (taps + 1) // 2
    first = np.empty(pairs, np.int64)  # the pairs of taps, a ≤ e, in row order
    second = np.empty(pairs, np.int64)
    p = 0
    for a in range(taps):
        for e in range(a, taps):
            first[p], second[p] = a, e
            p += 1
    tap_offset = np.empty(taps, np.int64)  # of each tap from its window's corner in flat
    for a in range(taps):
        tap_offset[a] = ((a // kw) * dh * cols + (a % kw) * dw) * channels
    per_image = np.zeros((n, pairs * channels), np.float64)
    for b in prange(n):
        acc = np.zeros(pairs * channels, np.float32)
        window = np.empty(taps * channels, np.float32)
        for oy in range(oh):
            for ox in range(ow):
                corner = ((b * rows + oy * sh) * cols + ox * sw) * channels
                for a in range(taps):
                    _copy(window, flat, a * channels, corner + tap_offset[a], channels)
                for p in range(pairs):
                    _multiply_add(acc, window, p * channels, first[p] * channels,
                                  second[p] * channels, channels)  # fmt: skip
        per_image[b] = acc
    total = per_image.sum(axis=0)
    out = np.empty((channels, taps, taps), np.float64)
    for p in range(pairs):
        for c in range(channels):
            out[c, first[p], second[p]] = total[p * channels + c]
            out[c, second[p], first[p]] = total[p * channels + c]
    return out
