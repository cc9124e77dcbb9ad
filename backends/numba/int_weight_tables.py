"""Weight tables of the channels-last integer products, built once per compiled layer.

The products of ``int_conv_nhwc`` read the weights of a layer from a table laid out for
their register tiles rather than from the OIHW rows (int8 levels, or ``irc.quant.pack``'s
4-/2-bit bytes) the IR stores, with K in (kernel row, kernel column, channel) order:

- ``weight_table``: int16 level pairs, one int32 word per two k and channel, for the
  int16-pair outer product (``vpmaddwd`` / ``vpdpwssd``);
- ``quad_table``: int8 levels four k to a word, for the u8 × s8 ``vpdpbusd`` kernels;
- ``nibble_table``: ``quad_table``'s levels packed 8 / bits quads to a word (4- and 2-bit
  weights), unpacked in registers by a shift and a mask;
- ``panels``: a quad table re-laid block by block of the channel vectors a kernel call
  runs, so that each block streams one contiguous run of weights.

``prepare_weights`` builds the table a product reads; ``lane_geometry``,
``quads_per_word`` and ``vectors_per_block`` describe the products' shapes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

TABLE_BLOCK = 32  # channels and k per block of the weight table's transposition


@njit(cache=True)
def weight_table(w, bits, group, cin_g, kh, kw, o_pad):
    """int32 [group, ceil(K/2), o_pad]: (level(o, t) & 0xFFFF) | level(o, t + 1) << 16 for
    channel ``o`` of the group and t = 2j in (kernel row, kernel column, channel) order;
    zeros past the group's channels and for the missing level of an odd K. The levels are
    ``weight_level``'s (int8 rows, or packed 4-/2-bit fields).

    By blocks of ``TABLE_BLOCK`` channels × ``TABLE_BLOCK`` k: the block's levels are first
    laid k-major in a small scratch (a run along the channels per k), then each pair row of
    the block is one contiguous (vectorised) run.
    """
    cout = w.shape[0]
    og = cout // group
    taps = kh * kw
    k = cin_g * taps
    pairs = (k + 1) // 2
    wf = w.reshape(w.size)
    w_rs = uint64(w.size // cout)
    table = np.zeros((group, pairs, o_pad), dtype=np.int32)
    tf = table.reshape(table.size)
    width = TABLE_BLOCK
    lev = np.zeros(width * width, dtype=np.int16)
    source = np.empty(k, dtype=np.uint64)  # the weight row's index of table level t
    for tap in range(taps):
        for c in range(cin_g):
            source[tap * cin_g + c] = c * taps + tap
    log = 1 if bits == 4 else 2  # log2 of the fields per byte (packed weights)
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    for g in range(group):
        for o0 in range(0, og, width):
            count = uint64(min(width, og - o0))
            first = uint64(g * og + o0) * w_rs
            for t0 in range(0, 2 * pairs, width):
                t1 = min(2 * pairs, t0 + width)
                for t in range(t0, t1):
                    d = uint64((t - t0) * width)
                    if t >= k:
                        for col in range(count):
                            lev[d + col] = 0
                    elif bits == 8:
                        src = first + source[t]
                        for col in range(count):
                            lev[d + col] = np.int16(wf[src + col * w_rs])
                    else:
                        s = source[t]
                        src = first + (s >> uint64(log))
                        move = (s & uint64((1 << log) - 1)) * uint64(bits)
                        for col in range(count):
                            field = (np.int32(wf[src + col * w_rs]) >> move) & mask
                            value = (field ^ sign) - sign
                            lev[d + col] = np.int16(2 * value + 1 if bits == 2 else value)
                for j in range(t0 // 2, t1 // 2):
                    even = uint64((2 * j - t0) * width)
                    odd = even + uint64(width)
                    dst = uint64((g * pairs + j) * o_pad + o0)
                    for col in range(count):
                        low = np.int32(lev[even + col]) & np.int32(0xFFFF)
                        tf[dst + col] = low | (np.int32(lev[odd + col]) << np.int32(16))
    return table


@njit(cache=True)
def quad_table(w, bits, group, cin_g, kh, kw, o_pad):
    """int32 [group, ceil(K/4), o_pad]: the int8 levels level(o, 4j + b) in byte b (b < 4)
    of word j for channel ``o`` of the group, with K in (kernel row, kernel column, channel)
    order; zeros past the group's channels and for the missing levels of a K not a
    multiple of 4. The levels are ``weight_level``'s (int8 rows, or packed 4-/2-bit fields).
    ``o_pad`` is a multiple of 8.

    By blocks of 16 channels: their levels are laid in table order, a byte row per channel
    (a plain copy for int8 weights in that order already: pointwise and depthwise), in a
    small scratch whose words are then stored 16 channels at a time down the table.
    """
    cout = w.shape[0]
    og = cout // group
    taps = kh * kw
    k = cin_g * taps
    quads = (k + 3) // 4
    row_len = uint64(4 * quads)
    wf = w.reshape(w.size)
    w_rs = uint64(w.size // cout)
    table = np.empty((group, quads, o_pad), dtype=np.int32)
    tf = table.reshape(table.size)
    lev = np.zeros(16 * 4 * quads, dtype=np.int8)  # the padding levels stay 0
    words = lev.view(np.int32)
    source = np.empty(k, dtype=np.uint64)  # the weight row's index of table level t
    for tap in range(taps):
        for c in range(cin_g):
            source[tap * cin_g + c] = c * taps + tap
    in_order = taps == 1 or cin_g == 1  # source[t] = t
    log = 1 if bits == 4 else 2  # log2 of the fields per byte (packed weights)
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    for g in range(group):
        base = uint64(g * quads * o_pad)
        for o0 in range(0, o_pad, 16):
            block = min(16, o_pad - o0)
            for oo in range(block):
                o = o0 + oo
                dst = uint64(oo) * row_len
                if o >= og:
                    for t in range(uint64(k)):
                        lev[dst + t] = 0
                    continue
                row = uint64(g * og + o) * w_rs
                if bits == 8 and in_order:
                    for t in range(uint64(k)):
                        lev[dst + t] = wf[row + t]
                elif bits == 8:
                    for t in range(uint64(k)):
                        lev[dst + t] = wf[row + source[t]]
                else:
                    for t in range(uint64(k)):
                        s = source[t]
                        move = (s & uint64((1 << log) - 1)) * uint64(bits)
                        field = (np.int32(wf[row + (s >> uint64(log))]) >> move) & mask
                        value = (field ^ sign) - sign
                        lev[dst + t] = 2 * value + 1 if bits == 2 else value
            for j in range(uint64(quads)):
                d = base + j * uint64(o_pad) + uint64(o0)
                for oo in range(uint64(block)):
                    tf[d + oo] = words[oo * uint64(quads) + j]
    return table


@njit(cache=True)
def nibble_table(w, bits, group, cin_g, kh, kw, o_pad):
    """``quad_table``'s levels packed 8 / ``bits`` quads to a word, for 4- and 2-bit
    weights: int32 [group, ceil(K / (4·f)), o_pad] with f = 8 / bits, where byte b of word
    j for channel o holds, at bits i·bits .. (i + 1)·bits - 1 for i < f, the level of byte
    b of quad word j·f + i offset to unsigned: level + 8 (4 bits) or (level + 3) / 2
    (2 bits, levels -3, -1, 1, 3). Quads past the table are level 0 (4 bits) or -1
    (2 bits: no zero level; the kernel's activation bytes there are zero)."""
    quads = quad_table(w, bits, group, cin_g, kh, kw, o_pad)
    per = 8 // bits
    n_q = quads.shape[1]
    words = -(-n_q // per)
    table = np.zeros((group, words, o_pad), dtype=np.int32)
    qf = quads.reshape(quads.size).view(np.int8)
    tf = table.reshape(table.size).view(np.uint8)
    row = uint64(4 * o_pad)  # bytes per table row
    for g in range(group):
        for j in range(words):
            dst = uint64(g * words + j) * row
            for i in range(per):
                q = j * per + i
                src = uint64(g * n_q + q) * row
                move = np.uint8(i * bits)
                for b in range(row):
                    level = np.int32(qf[src + b]) if q < n_q else np.int32(0)
                    u = level + 8 if bits == 4 else (level + 3) >> 1
                    tf[dst + b] |= np.uint8(u) << move
    return table


@njit(cache=True)
def lane_geometry(lanes):
    """(k per weight word, channels per vector) of the product ``lanes``."""
    if lanes == 64:
        return 4, 16
    if lanes == 32:
        return 4, 8
    return 2, lanes


@njit(cache=True)
def quads_per_word(lanes, bits):
    """Quads per weight word of the product ``lanes`` at ``bits``: 8 / bits for the quad
    kernels on packed weights (``nibble_table``), else 1."""
    return 8 // bits if (lanes == 64 or lanes == 32) and bits < 8 else 1


@njit(cache=True)
def vectors_per_block(vl):
    """The most channel vectors of a register tile, by lanes per vector (``TILES*``)."""
    return 4 if vl == 16 else 3


@njit(cache=True)
def panels(table, vl):
    """``table`` [group, words, o_pad] (a word row of every channel per k step) re-laid
    by the channel blocks the kernel runs (``_v_max`` vectors of ``vl`` lanes at most,
    split as evenly as ``qconv_nhwc_prepared`` splits them): per group, block after block,
    each block's word rows of its own channels only, so a block streams one contiguous
    run of weights (the shape is unchanged; only the order within a group)."""
    group, words, o_pad = table.shape
    n_vec = o_pad // vl
    blocks = -(-n_vec // vectors_per_block(vl))
    out = np.empty_like(table)
    flat = out.reshape((group, words * o_pad))
    for g in range(group):
        v0 = 0
        for b in range(blocks):
            vectors = (n_vec - v0) // (blocks - b)
            width, c0 = vectors * vl, v0 * vl
            for j in range(words):
                at = c0 * words + j * width
                flat[g, at : at + width] = table[g, j, c0 : c0 + width]
            v0 += vectors
    return out


@njit(cache=True)
def prepare_weights(w, bits, group, cin_g, kh, kw, og, lanes):
    """The weight table the product ``lanes`` (``conv_plan``'s) reads: ``quad_table`` (int8
    weights) or ``nibble_table`` (packed ones) for the quad kernel, laid out in ``panels``,
    ``weight_table`` for the outer product, an empty one for the GEMM (which reads ``w``
    in place)."""
    if lanes == 64 or lanes == 32:
        vl = lane_geometry(lanes)[1]
        o_pad = -(-og // vl) * vl
        if bits < 8:
            return panels(nibble_table(w, bits, group, cin_g, kh, kw, o_pad), vl)
        return panels(quad_table(w, bits, group, cin_g, kh, kw, o_pad), vl)
    if lanes:
        return weight_table(w, bits, group, cin_g, kh, kw, -(-og // lanes) * lanes)
    return np.zeros((0, 0, 0), dtype=np.int32)
