"""The integer matrix product at the core of every integer layer.

``gemm_s8(a, w, bits, k, acc)`` sets ``acc[m, n] = Σ_k a[m, k] · w[n, k]`` exactly in int32
for int8 activations ``a`` [M, K] (rows contiguous) and weights ``w`` with output channels
on rows and the reduction axis contiguous: int8 [N, K] at 8 bits, or ``irc.quant.pack``'s
bytes uint8 [N, ceil(K·bits/8)] at 4 and 2 bits (read in place, never unpacked to memory).

This is the portable version; a SIMD version with the same results may replace it by CPU
feature (see ``int_simd``).
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def gemm_s8(a, w, bits, k, acc):
    """acc[m, n] = Σ_k a[m, k] · level(w, n, k) for m < a.shape[0], n < w.shape[0]."""
    rows, cols = a.shape[0], w.shape[0]
    if bits == 8:
        for m in range(rows):
            for n in range(cols):
                total = 0
                for i in range(k):
                    total += int(a[m, i]) * int(w[n, i])
                acc[m, n] = total
        return
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    for m in range(rows):
        for n in range(cols):
            total = 0
            for i in range(k):
                field = (int(w[n, i // per_byte]) >> ((i % per_byte) * bits)) & mask
                level = (field ^ sign) - sign
                total += int(a[m, i]) * (2 * level + 1 if bits == 2 else level)
            acc[m, n] = total
