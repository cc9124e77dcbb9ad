"""Pointwise (1×1) integer convolution with few input channels, in outer-product form.

The dot-product GEMM (``int_simd``) reduces along K inside vector lanes and pays a
horizontal reduction per output: with K = 16–32 (MobileNet's expansion layers at 112² and
56²) that reduction costs as much as the products. Here the pixels go along the lanes
instead, as NCHW already lays them out: for a tile of 4 output channels × 16 pixels,
each step over a pair of input channels loads the two channels' 16 pixels interleaved as
int16 pairs and multiplies them with ``vpmaddwd`` by each channel's weight pair broadcast,
so 8 instructions make 128 exact products and nothing is reduced across lanes. The int32
tile lands channel-major, so the requantization runs along pixels with no transpose.

Per block of pixels the activations are interleaved into an int16 scratch, and per call the
weights (int8 levels or packed 4/2-bit bytes, read through ``weight_level``) into int32
pairs [O, K/2]: a few kilobytes for the layers that take this path (K ≤ ``MAX_K``).
AVX2 only (``int_simd.HAVE_AVX2``); elsewhere the layer keeps the GEMM path.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from irc.backends.numba.int_common import layer_constants, requantize_run, weight_level
from irc.backends.numba.int_simd import _V8I32, _V16I16, _const, _intrinsic_fn, _load, _loop

MAX_K = 64  # input channels up to which this path beats the GEMM (measured: K 16–32)
TILE_O, TILE_P = 4, 16  # output channels × pixels per micro-kernel call
BLOCK_P = 256  # pixels per parallel task (scratch: K/2 × 2·BLOCK_P int16, O × BLOCK_P int32)
_CHUNKS = 64


@intrinsic
def _tile(typingctx, x2, x2_rs, wp, wp_rs, pairs, out, out_rs):
    """out[o, 0:16] (int32) = Σ_j madd(x2[j, 0:32], splat(wp[o, j])) for o < 4.

    ``x2`` rows hold 16 pixels as int16 pairs (channel 2j, 2j+1) at byte stride ``x2_rs``;
    ``wp`` rows hold int32 weight pairs at byte stride ``wp_rs``; all i64 addresses.
    """
    sig = types.void(*(types.intp,) * 7)

    def codegen(context, builder, signature, args):
        x2, x2_rs, wp, wp_rs, pairs, out, out_rs = args
        madd = _intrinsic_fn(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [_V16I16, _V16I16])
        rows = [builder.add(wp, builder.mul(wp_rs, _const(o))) for o in range(TILE_O)]
        zero = ir.Constant(_V8I32, None)

        def body(j, accs):
            row = builder.add(x2, builder.mul(j, x2_rs))
            xa = _load(builder, row, _const(0), _V16I16)
            xb = _load(builder, row, _const(32), _V16I16)
            accs = list(accs)
            for o in range(TILE_O):
                pair = _load(builder, rows[o], builder.mul(j, _const(4)), ir.IntType(32))
                splat = builder.insert_element(zero, pair, ir.Constant(ir.IntType(32), 0))
                splat = builder.shuffle_vector(splat, splat, ir.Constant(_V8I32, [0] * 8))
                w = builder.bitcast(splat, _V16I16)
                accs[2 * o] = builder.add(accs[2 * o], builder.call(madd, [xa, w]))
                accs[2 * o + 1] = builder.add(accs[2 * o + 1], builder.call(madd, [xb, w]))
            return accs

        accs = _loop(builder, pairs, [zero] * (2 * TILE_O), body)
        for o in range(TILE_O):
            dest = builder.add(out, builder.mul(out_rs, _const(o)))
            for h in range(2):
                ptr = builder.inttoptr(builder.add(dest, _const(32 * h)), _V8I32.as_pointer())
                builder.store(accs[2 * o + h], ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def weight_pairs(w, bits, cout, k):
    """int32 [O padded to TILE_O, ceil(K/2)]: (w[o, 2j] & 0xFFFF) | w[o, 2j+1] << 16."""
    rows = -(-cout // TILE_O) * TILE_O
    pairs = (k + 1) // 2
    wp = np.zeros((rows, pairs), dtype=np.int32)
    w2 = w.reshape((cout, w.size // cout))
    for o in range(cout):
        for j in range(pairs):
            lo = np.int32(weight_level(w2, o, 2 * j, bits))
            hi = np.int32(weight_level(w2, o, 2 * j + 1, bits)) if 2 * j + 1 < k else np.int32(0)
            wp[o, j] = (lo & np.int32(0xFFFF)) | (hi << np.int32(16))
    return wp


@njit(cache=True, parallel=True)
def qpointwise(x, w, bits, bias, multiplier, shift, wsums, out, x_zero, zp, lo, hi):
    """out = requant(w · (x - x_zero) + bias) for a 1×1, stride-1, unpadded, ungrouped conv
    of NCHW int8 ``x`` with K = C_in ≤ MAX_K (the layer tail as ``int_conv.qconv_gemm``)."""
    n, k, height, width = x.shape
    cout = out.shape[1]
    pixels = height * width
    pairs = (k + 1) // 2
    wp = weight_pairs(w, bits, cout, k)
    rows = wp.shape[0]
    tail = layer_constants(bias, multiplier, shift, wsums, x_zero, 256 * 128 * k)
    xf, of = x.reshape(x.size), out.reshape(out.size)
    blocks = -(-pixels // BLOCK_P)
    tasks = n * blocks
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        x2 = np.zeros(pairs * 2 * BLOCK_P, dtype=np.int16)
        acc = np.empty(rows * BLOCK_P, dtype=np.int32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            image, p0 = task // blocks, (task % blocks) * BLOCK_P
            count = min(BLOCK_P, pixels - p0)
            span = -(-count // TILE_P) * TILE_P
            base = image * k * pixels + p0
            _interleave(xf, base, pixels, k, count, span, x2)
            x2_rs = 2 * 2 * TILE_P  # bytes per pair row of one tile: 16 pixels × 2 × int16
            for t in range(span // TILE_P):
                x_tile = x2.ctypes.data + t * pairs * x2_rs
                acc_tile = acc.ctypes.data + t * TILE_P * 4
                for o0 in range(0, rows, TILE_O):
                    w_rows = wp.ctypes.data + o0 * pairs * 4
                    out_rows = acc_tile + o0 * BLOCK_P * 4
                    _tile(x_tile, x2_rs, w_rows, pairs * 4, pairs, out_rows, BLOCK_P * 4)
            off = image * cout * pixels + p0
            for o in range(cout):
                requantize_run(acc, o * BLOCK_P, of, off + o * pixels, count, o, tail, zp, lo, hi)


@njit(cache=True)
def _interleave(xf, base, pixels, k, count, span, x2):
    """x2[t][j][p][2] = (x[2j, 16t + p], x[2j+1, 16t + p]) for the block's pixels (zeros
    past ``count`` and for a missing last channel): one tile's pairs contiguous."""
    pairs = (k + 1) // 2
    for t in range(span // TILE_P):
        for j in range(pairs):
            dst = (t * pairs + j) * 2 * TILE_P
            c0 = base + 2 * j * pixels + t * TILE_P
            valid = min(TILE_P, count - t * TILE_P)
            for p in range(TILE_P):
                x2[dst + 2 * p] = np.int16(xf[c0 + p]) if p < valid else np.int16(0)
            if 2 * j + 1 < k:
                for p in range(TILE_P):
                    v = np.int16(xf[c0 + pixels + p]) if p < valid else np.int16(0)
                    x2[dst + 2 * p + 1] = v
            else:
                for p in range(TILE_P):
                    x2[dst + 2 * p + 1] = 0
