"""Channels-last (NHWC) integer convolution: pointwise, regular and grouped, no transposes.

``qconv_nhwc`` computes what ``int_conv.qconv_gemm`` computes, bit for bit, on int8 NHWC
activations [N, H, W, C_in] into int8 NHWC results [N, OH, OW, C_out]; the weights are the
same OIHW rows (int8 levels, or ``irc.quant.pack``'s 4-/2-bit bytes) with their level sums.
Work is split into tasks over (image, group, tile of output pixels), dealt into at most 64
parallel chunks that each allocate their scratch once; every output element is computed by
one task, so the result does not depend on the thread count.

In NHWC a pixel's input channels are contiguous, so the [pixels, K] activation rows of the
product need no transpose: for a pointwise conv (1×1, stride 1, no padding) they are the
input's rows themselves, and otherwise each (kernel row, kernel column) of an output pixel
contributes C_in/group contiguous bytes (padding cells hold the input zero point z_x; the
product's -z_x·Σ_k w[o, k] is folded into the bias by ``layer_constants``). The int32
product tile [pixels, channels] is row-major, i.e. already NHWC: the epilogue requantizes
it along the output channels with per-channel constants (vectorised) and writes int8 rows
of the result straight away, tile by tile while the tile is in cache.

Three products, with identical (exact, wrapping int32) results:

- **Quad kernel** (AVX-512 VNNI or AVX-VNNI hosts, ``HAVE_VNNI`` / ``HAVE_AVX_VNNI``:
  every layer, as it measures fastest on all of MobileNetV2's). The
  activations are taken as unsigned bytes u = x + 128 (= x ^ 0x80), so that
  Σ_k (x_k - z_x)·w_k = Σ_k u_k·w_k - (z_x + 128)·Σ_k w_k: ``layer_constants`` gets the
  input zero point z_x + 128, and padding cells hold z_x + 128. Per step of four k the
  micro-kernel (the outer-product one below with ``quads``) broadcasts each row's four
  bytes and calls ``vpdpbusd`` (``llvm.x86.avx512.vpdpbusd.512``: 16 lanes of
  acc + Σ_{4 bytes} u8·s8; with AVX-VNNI and no AVX-512, its 8-lane ymm form) with weight
  vectors from a table of int8 quads (``int_weight_tables``: word j of channel o holds
  w[o, 4j..4j+3], K padded to a multiple of 4 with zero weights; 4- and 2-bit weights
  packed two or four quads to a word and unpacked in registers), laid out in panels of
  the channel blocks a call runs and prepared once per compiled layer
  (``prepare_weights``). A tile's rows are copied (pointwise) or gathered as bytes
  x ^ 0x80 into a scratch of K/4 words per row whose bytes past K stay zero;
  ``OUTER_K_QUADS`` quads per call. Exact in int32: |Σ u·w| ≤ 255·128·K < 2^31 for
  K ≤ ``irc.quant.MAX_REDUCTION``.
- **Outer product** (without VNNI: ``HAVE_AVX2``, K ≤ ``OUTER_MAX_K``; with AVX-512 also
  any K from ``OUTER_MIN_ROWS`` output pixels on), vectorised over OUTPUT CHANNELS. The
  weights are a table of int32 pairs [group, K/2, O] (``int_weight_tables.weight_table``,
  any bits unpacked) — lanes are channels — with K in (kernel row, kernel column,
  channel) order, so that gathering an activation row is a run of contiguous copies. A
  tile's rows are widened to int16 pairs [pixels, K/2] (K padded to even with zeros). The
  micro-kernel (a Numba ``intrinsic`` emitting LLVM IR) keeps R rows × V channel vectors of int32
  accumulators in registers; per pair of k it broadcasts each row's int16 pair and
  multiplies it into the V weight vectors with ``vpmaddwd`` (``llvm.x86.avx2.pmadd.wd``, 8
  lanes, or ``llvm.x86.avx512.pmaddw.d.512``, 16 lanes, when the host has AVX-512BW; with
  AVX-512 VNNI the kernel calls ``vpdpwssd`` itself, ``IRC_DISABLE_VNNI=1`` forcing the
  madd form), ``OUTER_K_PAIRS`` pairs per call (the
  weight chunk stays in L1; later chunks add to the tile). int8·int8 products summed in pairs
  are exact in int32 (|Σ| ≤ 2·128²), so nothing is reduced across lanes and nothing
  rounds. This is the form for small K (MobileNetV2's expansion layers, K = 16–32), where
  the dot-product GEMM pays a horizontal reduction per output.
- **Dot-product GEMM** (``int_simd.gemm_s8_best``: AVX2 where available, else the
  portable ``int_gemm.gemm_s8``), fed the input's rows in place for a pointwise conv, else
  rows gathered into an int8 scratch in the weight's (channel, kernel row, kernel column)
  order; packed weights are read in place.

Each int32 tile is requantized into int8 NHWC rows (``int_requant`` 16 channels per
instruction on AVX-512, else ``requantize_tile``). A compiled model prepares a layer's
plan, table and constants once (``conv_plan``, ``prepare_weights``, ``prepare_tail``) and
calls ``qconv_nhwc_prepared`` (``qconv_nhwc_serial`` on one thread); ``qconv_nhwc``
prepares on every call.

``path`` (``PATH_*``) forces one product (``PATH_VNNI`` / ``PATH_AVX_VNNI``: the quad
kernel on zmm / ymm); ``IRC_DISABLE_VNNI=1`` turns the quad kernels (and ``vpdpwssd``)
off. Kernels that the host cannot run are bound to a stub at import (``HAVE_AVX2``,
``HAVE_AVX512``, ``HAVE_VNNI``, ``HAVE_AVX_VNNI``), so no instruction is ever compiled for
a host without it. After editing an intrinsic here, delete
``backends/numba/__pycache__/*int_conv_nhwc*.nb[ic]``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.extending import intrinsic

from irc.backends.numba.int_common import (
    ACC_PER_TERM,
    layer_constants,
    requantize_one,
)
from irc.backends.numba.int_requant import requantize_tile_simd, simd_constants
from irc.backends.numba.int_rows import flip_rows, gather_quads
from irc.backends.numba.int_simd import (
    HAVE_AVX2,
    HAVE_AVX512,
    HAVE_AVX_VNNI,
    HAVE_VNNI,
    _const,
    _intrinsic_fn,
    _load,
    _loop,
)
from irc.backends.numba.int_simd import gemm_s8_best as gemm_s8
from irc.backends.numba.int_weight_tables import (
    lane_geometry,
    prepare_weights,
    quads_per_word,
    vectors_per_block,
)
from irc.backends.numba.numba_cache import serial_twin

# ------------------------------------------------------------------ tuning

# ``path`` argument of qconv_nhwc: pick by shape and host, or force one product
PATH_AUTO, PATH_GEMM, PATH_OUTER8, PATH_OUTER16, PATH_VNNI, PATH_AVX_VNNI = 0, 1, 2, 3, 4, 5
OUTER_MAX_K = 64  # reductions up to which the outer-product kernel beats the GEMM, and
OUTER_MIN_ROWS = 128  # pixels from which the 16-lane one does at any K (its weight table
# costs ~0.3 ns per level per call: at 7² pixels more than the product's gain)
# (R rows, V vectors of channels) per register tile, by vector count V = 1, 2, ...:
# 8-lane (AVX2, 16 registers) and 16-lane (AVX-512, 32 registers) kernels
TILES8 = ((12, 1), (6, 2), (4, 3))
TILES16 = ((16, 1), (8, 2), (8, 3), (6, 4))
THIN_ROWS = 3  # tiles of fewer rows run the quad kernel a row at a time (no wasted rows),
THIN_VECTORS = 4  # on blocks of this many vectors
OUTER_K_PAIRS = 64  # k pairs per kernel call (a weight chunk stays in L1)
OUTER_K_QUADS = 64  # k quads per call of the u8 × s8 (``vpdpbusd``) kernel
R_MAX = 16  # the most rows of any register tile (scratch rows are padded to R)
OUTER_ACC_BYTES = 1 << 16  # int32 product tile budget per task (outer product)
OUTER_X_BYTES = 1 << 14  # int16 activation scratch budget per task (L1 resident)
GEMM_TILE_BYTES = 1 << 15  # gathered activations per GEMM tile, as build_qconv2d
GEMM_ACC_BYTES = 1 << 17  # int32 product tile budget per task (GEMM)
_CHUNKS = 64
TASKS_PER_THREAD = 2  # fewer pixel tasks than this per thread: channel slabs too

# ------------------------------------------------------------------ outer-product kernel


def _make_outer(lanes, rows, vectors, quads=False, fields=1):
    """An intrinsic ``(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)`` (i64
    values): for g < groups, with row r = g·rows + i (i < rows) and channel vector v <
    vectors,

        acc[r, v·lanes : (v+1)·lanes] (int32) = (acc[r, ...] if keep else 0)
                                               + Σ_{j < pairs} madd(splat(xs[r, j]), wt[j, v])

    where ``xs`` rows hold int16 pairs (int32 words) at byte stride ``xs_rs``, ``wt`` rows
    int32 weight pairs at byte stride ``wt_rs``, ``acc`` rows int32 at byte stride
    ``acc_rs``. ``lanes`` is 8 (AVX2) or 16 (AVX-512BW).

    With ``quads`` (16 lanes with AVX-512 VNNI, 8 lanes with AVX-VNNI), ``pairs`` counts
    quads: ``xs`` words hold four unsigned bytes, ``wt`` words four int8 weights, and madd
    is ``vpdpbusd``'s Σ_{b < 4} u8 · s8 per 32-bit lane (acc + that as one instruction).

    With ``fields`` > 1 (quads only), each ``wt`` byte packs ``fields`` weights of 8 /
    ``fields`` bits, offset to unsigned (``nibble_table``): word j then holds quads
    j·fields .. j·fields + fields - 1, field f of every byte being quad j·fields + f, and
    ``pairs`` counts such words. Field f is unpacked in registers by a 16-bit shift right
    by f·bits and a mask, less 8 (4 bits), or doubled less 3 (2 bits: levels -3, -1, 1, 3).
    """
    i16v, i32v = ir.VectorType(ir.IntType(16), 2 * lanes), ir.VectorType(ir.IntType(32), lanes)
    if lanes == 8:
        name = "llvm.x86.avx2.pmadd.wd"
    else:
        name = "llvm.x86.avx512.pmaddw.d.512"
    fused = quads or (lanes == 16 and HAVE_VNNI)  # acc + madd(x, w) as one instruction
    dot_name = "llvm.x86.avx512.vpdpwssd.512"
    nbytes = 4 * lanes  # bytes per vector
    if quads:  # the VEX (AVX-VNNI) form at 8 lanes on a host without AVX-512VL
        i16v = ir.VectorType(ir.IntType(8), nbytes)
        dot_name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"
    i32 = ir.IntType(32)
    i8v, i16w = ir.VectorType(ir.IntType(8), nbytes), ir.VectorType(ir.IntType(16), nbytes // 2)
    bits = 8 // fields

    def unpack(builder, word, f):
        """Field ``f`` of every byte of a packed weight vector, as int8 levels."""
        if fields == 1:
            return builder.bitcast(word, i8v)
        if f:
            shift = ir.Constant(i16w, [f * bits] * (nbytes // 2))
            word = builder.lshr(builder.bitcast(word, i16w), shift)
        u = builder.and_(builder.bitcast(word, i8v), ir.Constant(i8v, [(1 << bits) - 1] * nbytes))
        if bits == 4:
            return builder.sub(u, ir.Constant(i8v, [8] * nbytes))
        return builder.sub(builder.add(u, u), ir.Constant(i8v, [3] * nbytes))

    @intrinsic
    def kernel(typingctx, xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep):
        sig = types.void(*(types.intp,) * 9)

        def codegen(context, builder, signature, args):
            xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep = args
            kept = builder.icmp_signed("!=", keep, _const(0))
            if not fused:
                madd = _intrinsic_fn(builder, name, i32v, [i16v, i16v])
            else:
                dot = _intrinsic_fn(builder, dot_name, i32v, [i32v, i16v, i16v])
            zero = ir.Constant(i32v, None)
            splat_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

            def group(g, carried):
                first = builder.mul(g, _const(rows))
                x_rows = [
                    builder.add(xs, builder.mul(xs_rs, builder.add(first, _const(i))))
                    for i in range(rows)
                ]

                def step(j, accs):
                    w_row = builder.add(wt, builder.mul(j, wt_rs))
                    words = [_load(builder, w_row, _const(4 * lanes * v), i32v)
                             for v in range(vectors)]  # fmt: skip
                    accs = list(accs)
                    for f in range(fields):
                        if quads:
                            wv = [unpack(builder, word, f) for word in words]
                        else:
                            wv = [builder.bitcast(word, i16v) for word in words]
                        at = builder.mul(j, _const(4 * fields))
                        at = builder.add(at, _const(4 * f))
                        for i in range(rows):
                            pair = _load(builder, x_rows[i], at, i32)
                            b = builder.insert_element(zero, pair, ir.Constant(i32, 0))
                            b = builder.bitcast(builder.shuffle_vector(b, b, splat_mask), i16v)
                            for v in range(vectors):
                                t = i * vectors + v
                                if fused:
                                    accs[t] = builder.call(dot, [accs[t], b, wv[v]])
                                else:
                                    madd_bw = builder.call(madd, [b, wv[v]])
                                    accs[t] = builder.add(accs[t], madd_bw)
                    return accs

                ptrs = []
                for i in range(rows):
                    dest = builder.add(acc, builder.mul(acc_rs, builder.add(first, _const(i))))
                    for v in range(vectors):
                        at = builder.add(dest, _const(4 * lanes * v))
                        ptrs.append(builder.inttoptr(at, i32v.as_pointer()))
                # the old sums (acc is always readable memory), or zeros
                start = [builder.select(kept, builder.load(p, align=4), zero) for p in ptrs]
                accs = _loop(builder, pairs, start, step)
                for p, a in zip(ptrs, accs):
                    builder.store(a, p, align=4)
                return carried

            _loop(builder, groups, [], group)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


@njit(cache=True)
def _absent(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep):
    """Stands in for a kernel the host cannot run (never called: the path is not taken)."""
    raise RuntimeError("this host has no kernel for this path")


# Module-level kernels (so that callers cache), bound to ``_absent`` where the host lacks them.
if HAVE_AVX2:
    _o8_1, _o8_2, _o8_3 = [_make_outer(8, r, v) for r, v in TILES8]
else:  # pragma: no cover - hosts without AVX2
    _o8_1 = _o8_2 = _o8_3 = _absent
if HAVE_AVX512:
    _o16_1, _o16_2, _o16_3, _o16_4 = [_make_outer(16, r, v) for r, v in TILES16]
else:  # pragma: no cover - hosts without AVX-512BW
    _o16_1 = _o16_2 = _o16_3 = _o16_4 = _absent
if HAVE_VNNI:
    _q_1, _q_2, _q_3, _q_4 = [_make_outer(16, r, v, quads=True) for r, v in TILES16]
    _q4_1, _q4_2, _q4_3, _q4_4 = [_make_outer(16, r, v, True, 2) for r, v in TILES16]
    _q2_1, _q2_2, _q2_3, _q2_4 = [_make_outer(16, r, v, True, 4) for r, v in TILES16]
    _qt_1, _qt_2, _qt_4 = [_make_outer(16, 1, THIN_VECTORS, True, f) for f in (1, 2, 4)]
else:  # pragma: no cover - hosts without AVX-512 VNNI
    _q_1 = _q_2 = _q_3 = _q_4 = _absent
    _q4_1 = _q4_2 = _q4_3 = _q4_4 = _q2_1 = _q2_2 = _q2_3 = _q2_4 = _absent
    _qt_1 = _qt_2 = _qt_4 = _absent
if HAVE_AVX_VNNI:
    _a_1, _a_2, _a_3 = [_make_outer(8, r, v, quads=True) for r, v in TILES8]
    _a4_1, _a4_2, _a4_3 = [_make_outer(8, r, v, True, 2) for r, v in TILES8]
    _a2_1, _a2_2, _a2_3 = [_make_outer(8, r, v, True, 4) for r, v in TILES8]
else:  # pragma: no cover - hosts without AVX-VNNI
    _a_1 = _a_2 = _a_3 = _a4_1 = _a4_2 = _a4_3 = _a2_1 = _a2_2 = _a2_3 = _absent


@njit(cache=True)
def _outer_avx_vnni(vectors, xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep, fields):
    """The 8-lane (AVX-VNNI) quad kernel of ``TILES8``'s ``vectors`` tile, on int8 weight
    words or ``nibble_table``'s (``fields`` 2 or 4)."""
    if fields == 4:
        if vectors == 3:
            _a2_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _a2_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _a2_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif fields == 2:
        if vectors == 3:
            _a4_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _a4_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _a4_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif vectors == 3:
        _a_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif vectors == 2:
        _a_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    else:
        _a_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)


@njit(cache=True)
def _outer_thin(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep, fields):
    """The quad kernel on one row at a time and ``THIN_VECTORS`` channel vectors (for a
    tile of fewer rows than ``THIN_ROWS``: a gemm's rows at batch 1), on int8 weight words
    or ``nibble_table``'s (``fields`` 2 or 4)."""
    if fields == 4:
        _qt_4(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif fields == 2:
        _qt_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    else:
        _qt_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)


@njit(cache=True)
def _outer(lanes, vectors, xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep, fields=1):
    """Run the (lanes, vectors) kernel of ``TILES8`` / ``TILES16`` over ``groups`` row groups
    (lanes 64: the u8 × s8 quad kernel, with ``TILES16``'s tiles, on int8 weight words or,
    with ``fields`` 2 or 4, on ``nibble_table``'s packed ones; lanes 32: its 8-lane AVX-VNNI
    form, with ``TILES8``'s tiles)."""
    if lanes == 32:
        _outer_avx_vnni(vectors, xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep, fields)
    elif lanes == 64 and fields == 2:
        if vectors == 4:
            _q4_4(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 3:
            _q4_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _q4_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _q4_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif lanes == 64 and fields == 4:
        if vectors == 4:
            _q2_4(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 3:
            _q2_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _q2_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _q2_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif lanes == 64:
        if vectors == 4:
            _q_4(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 3:
            _q_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _q_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _q_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    elif lanes == 16:
        if vectors == 4:
            _o16_4(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 3:
            _o16_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _o16_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _o16_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
    else:
        if vectors == 3:
            _o8_3(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        elif vectors == 2:
            _o8_2(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)
        else:
            _o8_1(xs, xs_rs, groups, wt, wt_rs, pairs, acc, acc_rs, keep)


@njit(cache=True)
def _tile_rows(lanes, vectors):
    """Rows R of the (lanes, vectors) register tile."""
    if lanes == 16 or lanes == 64:
        return (16, 8, 8, 6)[vectors - 1]
    return (12, 6, 4)[vectors - 1]


@njit(cache=True)
def _widen_rows(xf, x_off, cin, cin_g, rows, xs, row_len, lift):
    """xs[p, c] = (x row p0 + p, channel c) + lift for a pointwise tile: rows of ``cin``
    channels from ``x_off``, ``cin_g`` of them taken, into rows of ``row_len`` of xs's type
    (int16 with lift 0, or uint8 with lift 128: x + 128 = x ^ 0x80)."""
    for p in range(rows):
        src, dst = uint64(x_off + p * cin), uint64(p * row_len)
        if lift == 0:
            for c in range(uint64(cin_g)):
                xs[dst + c] = xf[src + c]
        else:
            for c in range(uint64(cin_g)):
                xs[dst + c] = xf[src + c] ^ np.int8(-128)


@njit(cache=True)
def _gather_wide(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top, left, dh, dw, ow,
                 p0, rows, x_zero, xs, row_len, lift):  # fmt: skip
    """xs[p, (i·kw + j)·cin_g + c] = x[r·sh - top + i·dh, q·sw - left + j·dw, c] + lift for
    output pixel p0 + p = (r, q), or x_zero + lift in the padding (rows of ``row_len`` of
    xs's type: int16 with lift 0, or uint8 with lift 128).

    A kernel row whose taps all lie inside the image is one contiguous run of kw·cin
    values when the group has every channel and dw = 1 (the run is (j, c)-ordered in NHWC).
    """
    pad = np.int32(x_zero) + lift
    run = cin_g == cin and dw == 1
    span = (kw - 1) * dw
    r, q = p0 // ow, p0 % ow
    for p in range(rows):
        dst = p * row_len
        iw0 = q * sw - left
        for i in range(kh):
            ih = r * sh - top + i * dh
            d0 = uint64(dst + i * kw * cin_g)
            if ih < 0 or ih >= height:
                for t in range(uint64(kw * cin_g)):
                    xs[d0 + t] = pad
                continue
            row = img_off + ih * width * cin
            if run and iw0 >= 0 and iw0 + span < width:
                s = uint64(row + iw0 * cin)
                for t in range(uint64(kw * cin)):
                    xs[d0 + t] = np.int32(xf[s + t]) + lift
                continue
            for j in range(kw):
                iw = iw0 + j * dw
                d = d0 + uint64(j * cin_g)
                if iw < 0 or iw >= width:
                    for c in range(uint64(cin_g)):
                        xs[d + c] = pad
                else:
                    s = uint64(row + iw * cin)
                    for c in range(uint64(cin_g)):
                        xs[d + c] = np.int32(xf[s + c]) + lift
        q += 1
        if q == ow:
            q, r = 0, r + 1


@njit(cache=True)
def _gather(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top, left, dh, dw, ow, p0,
            rows, x_zero, cols):  # fmt: skip
    """cols[p, (c·kh + i)·kw + j] = x[r·sh - top + i·dh, q·sw - left + j·dw, c] for output
    pixel p0 + p = (r, q), or x_zero in the padding: int8 rows of K in the weight's order."""
    pad = np.int8(x_zero)
    taps = kh * kw
    k = cin_g * taps
    for p in range(rows):
        r, q = (p0 + p) // ow, (p0 + p) % ow
        dst = p * k
        for i in range(kh):
            ih = r * sh - top + i * dh
            for j in range(kw):
                iw = q * sw - left + j * dw
                d = uint64(dst + i * kw + j)
                if ih < 0 or ih >= height or iw < 0 or iw >= width:
                    for c in range(uint64(cin_g)):
                        cols[d + c * uint64(taps)] = pad
                else:
                    s = uint64(img_off + (ih * width + iw) * cin)
                    for c in range(uint64(cin_g)):
                        cols[d + c * uint64(taps)] = xf[s + c]


# ------------------------------------------------------------------ epilogue


@njit(cache=True)
def requantize_tile(acc, pitch_acc, rows, cols, tail, c0, zp, lo, hi, of, off, pitch):
    """of[off + p·pitch + o] = requant(acc[p·pitch_acc + o] + corr[c0 + o]) for p < rows,
    o < cols: a product tile (flat int32, rows of ``pitch_acc``) into NHWC int8 rows.

    By the float64 path along each row (clamped to [lo - zp, hi - zp] before rounding, as
    clamping to integers commutes with rounding, so the conversion never overflows), then
    the channels that may not take it (``int_common.layer_constants``) redone by the
    integer path; both equal ``requantize_one``.
    """
    corr, mult, shf, corr_f, scale_f, fast = tail
    k = corr_f[c0 : c0 + cols]
    s = scale_f[c0 : c0 + cols]
    flo, fhi = np.float64(lo - zp), np.float64(hi - zp)
    z = np.int32(zp)
    for p in range(rows):
        src, dst = uint64(p * pitch_acc), uint64(off + p * pitch)
        for o in range(uint64(cols)):
            y = (np.float64(acc[src + o]) + k[o]) * s[o]
            y = flo if y < flo else y
            y = fhi if y > fhi else y
            of[dst + o] = np.int8(np.int32(np.rint(y)) + z)
    for o in range(cols):
        c = c0 + o
        if not fast[c]:
            for p in range(rows):
                v = np.int64(acc[p * pitch_acc + o]) + corr[c]
                of[off + p * pitch + o] = np.int8(requantize_one(v, mult[c], shf[c], zp, lo, hi))


# ------------------------------------------------------------------ the convolution


@njit(cache=True)
def conv_plan(path, k, og, rows, pixels, tile):
    """(product, pixels per task tile) for a layer of ``rows`` output pixels in all
    (``pixels`` per image): the product as outer lanes (8, 16, or 64 for the u8 × s8 quad
    kernel, 32 for its 8-lane AVX-VNNI form) or 0 for the GEMM. ``path`` and ``tile`` as
    ``qconv_nhwc``'s."""
    lanes = 0
    if path == PATH_VNNI and HAVE_VNNI:
        lanes = 64
    elif path == PATH_AVX_VNNI and HAVE_AVX_VNNI:
        lanes = 32
    elif path == PATH_OUTER16 and HAVE_AVX512:
        lanes = 16
    elif path == PATH_OUTER8 and HAVE_AVX2:
        lanes = 8
    elif path == PATH_AUTO and HAVE_VNNI:
        lanes = 64
    elif path == PATH_AUTO and HAVE_AVX_VNNI and not HAVE_AVX512:
        lanes = 32
    elif path == PATH_AUTO and HAVE_AVX512 and (k <= OUTER_MAX_K or rows >= OUTER_MIN_ROWS):
        lanes = 16
    elif path == PATH_AUTO and HAVE_AVX2 and k <= OUTER_MAX_K:
        lanes = 8
    if tile <= 0:
        if lanes:
            step, vl = lane_geometry(lanes)
            row_bytes = 4 * ((k + step - 1) // step)
            o_pad = -(-og // vl) * vl
            tile = min(OUTER_ACC_BYTES // (4 * o_pad), OUTER_X_BYTES // row_bytes)
        else:
            tile = min(GEMM_TILE_BYTES // k, GEMM_ACC_BYTES // (4 * og))
        tile = max(16, min(1024, tile))
    tile = max(1, min(tile, pixels))
    tiles = -(-pixels // tile)
    return lanes, -(-pixels // tiles)  # even tiles: no thin last one


@njit(cache=True)
def prepare_tail(bias, multiplier, shift, wsums, x_zero, k, lanes):
    """``layer_constants`` of the layer for the product ``lanes`` (the quad kernel sums
    (x + 128)·w, so its correction is the one of input zero point x_zero + 128), and the
    vector epilogue's ``int_requant.simd_constants`` of them."""
    lift = 128 if lanes == 64 or lanes == 32 else 0
    bound = ACC_PER_TERM * k
    tail = layer_constants(bias, multiplier, shift, wsums, x_zero + lift, bound)
    return tail, simd_constants(tail, bound)


@njit(cache=True)
def qconv_nhwc(x, w, bits, bias, multiplier, shift, wsums, out, kh, kw, sh, sw, top, left, dh, dw,
               group, x_zero, zp, lo, hi, path=0, tile=0, threads=0):  # fmt: skip
    """out = requant(conv(x - x_zero, w) + bias) for NHWC int8 ``x`` [N, H, W, C_in] into
    NHWC int8 ``out`` [N, OH, OW, C_out]: ``int_conv.qconv_gemm``'s arguments and results
    (weight rows ``w`` [O, ...] at ``bits``, ``wsums`` [O] their level sums; trailing pads
    implied by out's shape), without its pointwise flag and tile.

    ``path`` (``PATH_*``) forces a product, where the host has it (0: by K and host);
    ``tile`` > 0 sets the output pixels per task; ``threads`` as ``qconv_nhwc_prepared``'s.
    None of them changes the result. The weight
    table and layer constants are prepared on each call; a caller that calls again with
    the same weights prepares them once (``conv_plan``, ``prepare_weights``,
    ``prepare_tail``) and calls ``qconv_nhwc_prepared``.
    """
    n, height, width, cin = x.shape
    oh, ow, cout = out.shape[1], out.shape[2], out.shape[3]
    cin_g, og = cin // group, cout // group
    k = cin_g * kh * kw
    lanes, tile = conv_plan(path, k, og, n * oh * ow, oh * ow, tile)
    table = prepare_weights(w, bits, group, cin_g, kh, kw, og, lanes)
    tail = prepare_tail(bias, multiplier, shift, wsums, x_zero, k, lanes)
    qconv_nhwc_prepared(x, w, bits, table, tail, out, kh, kw, sh, sw, top, left, dh, dw, group,
                        x_zero, zp, lo, hi, lanes, tile, threads)  # fmt: skip


@njit(cache=True, parallel=True)
def qconv_nhwc_prepared(x, w, bits, table, tail, out, kh, kw, sh, sw, top, left, dh, dw, group,
                        x_zero, zp, lo, hi, lanes, tile, threads):  # fmt: skip
    """``qconv_nhwc`` with its plan (``lanes``, ``tile``: ``conv_plan``'s), weight ``table``
    (``prepare_weights``) and layer constants ``tail`` (``prepare_tail``) given; ``w`` is
    read only by the GEMM (lanes 0). ``threads`` (Numba's thread count, or 0: unknown)
    decides whether a layer of few pixel tiles splits its channels into tasks too; it
    does not change the result."""
    n, height, width, cin = x.shape
    oh, ow, cout = out.shape[1], out.shape[2], out.shape[3]
    cin_g, og = cin // group, cout // group
    k = cin_g * kh * kw
    pixels = oh * ow
    pointwise = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and top == 0 and left == 0
                 and oh == height and ow == width)  # fmt: skip
    xf, of = x.reshape(x.size), out.reshape(out.size)
    consts, simd = tail
    tiles = -(-pixels // tile) if pixels else 0
    tasks = n * group * tiles
    if lanes:
        quad = lanes == 64 or lanes == 32
        step, vl = lane_geometry(lanes)  # k per word, channels per vector
        fields = quads_per_word(lanes, bits)  # quads per table word
        words = -(-((k + step - 1) // step) // fields)  # table rows per group
        units = words * fields  # scratch words per row (k pairs or quads); the bytes
        # past K stay zero (2-bit weights have no zero level to pad with)
        o_pad = -(-og // vl) * vl
        n_vec = o_pad // vl
        blocks = -(-n_vec // vectors_per_block(vl))
        k_chunk = (OUTER_K_QUADS if quad else OUTER_K_PAIRS) // fields  # table rows per call
        # few pixel tasks (a gemm's rows, a 7×7 plane) for the threads: split the channel
        # blocks into slabs too, each task then one slab of one pixel tile
        slabs = 1
        if threads > 1 and tasks < TASKS_PER_THREAD * threads:
            slabs = min(blocks, -(-TASKS_PER_THREAD * threads // max(tasks, 1)))
        chunks = min(tasks * slabs, _CHUNKS)
        for chunk in prange(chunks):
            xb = np.zeros((tile + R_MAX) * 4 * units, dtype=np.uint8)  # u8 quads, or
            xw = xb.view(np.int16)  # int16 pairs
            acc = np.empty((tile + R_MAX) * o_pad, dtype=np.int32)
            first, last = chunk * tasks * slabs // chunks, (chunk + 1) * tasks * slabs // chunks
            for task_slab in range(first, last):
                task, slab = task_slab // slabs, task_slab % slabs
                image, rest = task // (group * tiles), task % (group * tiles)
                g, p0 = rest // tiles, (rest % tiles) * tile
                rows = min(tile, pixels - p0)
                img_off = image * height * width * cin + g * cin_g
                if pointwise and lanes == 64:  # AVX-512BW: masked 64-byte runs
                    flip_rows(xf, img_off + p0 * cin, cin, cin_g, rows, xb, 4 * units)
                elif pointwise and quad:
                    _widen_rows(xf, img_off + p0 * cin, cin, cin_g, rows, xb, 4 * units, 128)
                elif pointwise:
                    _widen_rows(xf, img_off + p0 * cin, cin, cin_g, rows, xw, 2 * units, 0)
                elif lanes == 64:
                    gather_quads(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top, left,
                                 dh, dw, ow, p0, rows, x_zero, xb, 4 * units)  # fmt: skip
                elif quad:
                    _gather_wide(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top,
                                 left, dh, dw, ow, p0, rows, x_zero, xb, 4 * units,
                                 128)  # fmt: skip
                else:
                    _gather_wide(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top,
                                 left, dh, dw, ow, p0, rows, x_zero, xw, 2 * units, 0)  # fmt: skip
                wt = table.ctypes.data + g * words * o_pad * 4
                b0, b1 = slab * blocks // slabs, (slab + 1) * blocks // slabs
                v0 = 0
                for b in range(b0):  # the vectors of the blocks before the slab's
                    v0 += (n_vec - v0) // (blocks - b)
                c_lo = vl * v0
                for b in range(b0, b1):
                    vectors = (n_vec - v0) // (blocks - b)
                    thin = lanes == 64 and rows < THIN_ROWS and vectors == THIN_VECTORS
                    groups = rows if thin else -(-rows // _tile_rows(lanes, vectors))
                    at = acc.ctypes.data + 4 * vl * v0
                    # the quad tables are in panels: the block's rows of vectors·vl words
                    w_rs = 4 * vl * vectors if quad else 4 * o_pad
                    w_at = wt + 4 * vl * v0 * words if quad else wt + 4 * vl * v0
                    for j0 in range(0, words, k_chunk):
                        count = min(k_chunk, words - j0)
                        xs = xb.ctypes.data + 4 * fields * j0
                        if thin:
                            _outer_thin(xs, 4 * units, groups, w_at + j0 * w_rs, w_rs, count, at,
                                        4 * o_pad, j0, fields)  # fmt: skip
                        else:
                            _outer(lanes, vectors, xs, 4 * units, groups, w_at + j0 * w_rs, w_rs,
                                   count, at, 4 * o_pad, j0, fields)  # fmt: skip
                    v0 += vectors
                cols = min(og, vl * v0) - c_lo  # the slab's channels
                out_off = ((image * pixels) + p0) * cout + g * og + c_lo
                part = acc[c_lo:]
                if cols <= 0:
                    continue
                if vl == 16:  # AVX-512: the vector epilogue
                    requantize_tile_simd(part, o_pad, rows, cols, consts, simd, g * og + c_lo, zp,
                                         lo, hi, of, out_off, cout)  # fmt: skip
                else:
                    requantize_tile(part, o_pad, rows, cols, consts, g * og + c_lo, zp, lo, hi, of,
                                    out_off, cout)  # fmt: skip
    else:
        w2 = w.reshape((cout, w.size // cout))
        xr = x.reshape((n * height * width, cin))
        chunks = min(tasks, _CHUNKS)
        for chunk in prange(chunks):
            cols = np.empty(tile * k, dtype=np.int8)
            acc = np.empty(tile * og, dtype=np.int32)
            for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
                image, rest = task // (group * tiles), task % (group * tiles)
                g, p0 = rest // tiles, (rest % tiles) * tile
                rows = min(tile, pixels - p0)
                tile_acc = acc[: rows * og].reshape((rows, og))
                wg = w2[g * og : (g + 1) * og]
                if pointwise:
                    first = image * pixels + p0
                    a = xr[first : first + rows, g * cin_g : (g + 1) * cin_g]
                    gemm_s8(a, wg, bits, k, tile_acc)
                else:
                    img_off = image * height * width * cin + g * cin_g
                    _gather(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top, left,
                            dh, dw, ow, p0, rows, x_zero, cols)  # fmt: skip
                    gemm_s8(cols[: rows * k].reshape((rows, k)), wg, bits, k, tile_acc)
                out_off = ((image * pixels) + p0) * cout + g * og
                requantize_tile(acc, og, rows, og, consts, g * og, zp, lo, hi, of, out_off, cout)


# On one thread: the same code without the parallel region's launch (about a microsecond).
qconv_nhwc_serial = serial_twin(qconv_nhwc_prepared, "qconv_nhwc_serial")
