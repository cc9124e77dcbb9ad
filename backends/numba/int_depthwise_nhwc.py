"""The integer depthwise convolution kernel on channels-last (NHWC) tensors.

``qdepthwise_nhwc`` computes what ``int_depthwise.qdepthwise`` computes, bit for bit, for
x [N, H, W, C] and out [N, OH, OW, C·mult]. Its inner loop is a register-blocked
micro-kernel written in LLVM IR vector types (``numba.extending.intrinsic``); it uses only
generic vector operations (sext, mul, shufflevector, add, sitofp, fadd, fmul, fcmp/select,
trunc), which LLVM legalises to AVX-512, AVX2 or any other vector unit, so one IR serves
every target (and Numba's cache keys the machine code by target CPU).

- **Pair rows.** Each input row a task needs is prepared once into a ring of rows (kept in
  L1/L2 while the task moves down its output rows), zero padded on both sides to every
  column the taps read: entry ``col`` holds, per channel, the int16 pair
  ``(x[col - left] - z_x, x[col - left + dw] - z_x)`` (zero outside the row, so padding
  taps add an exact zero), channels padded to a multiple of 16 and grouped 16 a vector
  (32 int16, pairs interleaved). With depth multiplier > 1 or C not a multiple of 16 the
  row is first expanded (channel oc reads ic = oc // mult) into an int8 staging row. Only
  the column phases (mod sw) the taps read are prepared. Kernel rows outside the input
  read a zero slot, so there are no border cases at all.
- **Taps.** A kernel row's taps go in pairs (j, j + 1) (the last one of an odd row paired
  with a zero weight), at most three pairs a segment (wider kernels take several segments
  per row). A pair is one multiply-add of int16 pairs into int32 lanes, written as
  ``sext · sext`` plus even/odd lane sums (LLVM forms ``vpmaddwd``): each product
  (|x - z_x| <= 255, |w| <= 128) and each pair sum fit exactly. The weights are an int16
  table [segment, pair, channel, 2] unpacked once per call (so 4- and 2-bit packed weights
  cost nothing more).
- **Micro-kernel.** For a block of 32 channels (16 for the tail) it runs the output pixels
  of one output row, ``_TILE`` pixels at a time (one more loop for the rest): the int32
  accumulators of the tile start at the channel's corr (the int32 bias, as the input is
  centred; 0 where acc + bias could wrap) and stay in registers over all segments, and
  each weight vector is loaded once for the tile's pixels. Then it requantizes in
  registers by the float64 path of ``int_common`` (y = (acc + corr) · scale_f, exact for
  the channels ``layer_constants`` calls fast), clamped to [lo - zp, hi - zp] before
  rounding (the bounds are integers, so this commutes with rounding), rounded half to even
  by adding 1.5·2^52 (the integer lands in the low mantissa bits), truncated to int8, plus
  zp (wrapping back into [lo, hi]), and stored as 16 or 32 bytes of the output pixel.
  Blocks that hold a channel which may not take this path (not fast, or corr not folded)
  also store their int32 sums, and those channels are redone by the int64
  ``requantize_one``.

Tasks are output rows (of every image) times channel blocks, split into a few chunks (a
range of output rows times a slab of blocks, which prepares only its slab's channels), about
two per Numba thread; each chunk allocates its scratch once. Every output element is computed by one
task, in integers (the float64 path is exact), so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from irc.backends.numba.int_common import (
    ACC_PER_TERM,
    layer_constants,
    requantize_one,
    weight_level,
)
from irc.backends.numba.int_simd import _const, _load, _loop, _shuffle, _store
from irc.backends.numba.numba_cache import serial_twin

_CHUNKS = 16  # tasks go in at most this many chunks (of output rows × channel blocks),
_CHUNKS_PER_THREAD = 2  # and about this many per thread (each chunk's setup costs µs)
_ROWS = 8  # output rows per chunk at least: a chunk prepares kernel height - 1 extra rows
_TILE = 4  # output pixels per register tile of the micro-kernel
_PAIRS = 3  # tap pairs per segment of a kernel row (at most six taps)
_GROUP = 16  # channels per vector group (one int16 pair vector, 16 int32 sums)
_BLOCK = 32  # channels per micro-kernel call (two groups; the tail block may have one)
_MAGIC = 6755399441055744.0  # 1.5·2^52: adding it rounds to an integer, half to even

# ------------------------------------------------------------------ IR micro-kernels

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_F64 = ir.DoubleType()
_V16I8, _V16I16, _V32I16 = ir.VectorType(_I8, 16), ir.VectorType(_I16, 16), ir.VectorType(_I16, 32)
_V16I32, _V32I32 = ir.VectorType(_I32, 16), ir.VectorType(_I32, 32)
_V16I64, _V16F64 = ir.VectorType(_I64, 16), ir.VectorType(_F64, 16)


def _broadcast(builder, value, ty):
    """A ``ty`` vector with every lane the scalar ``value``."""
    v = builder.insert_element(ir.Constant(ty, None), value, ir.Constant(_I32, 0))
    return _shuffle(builder, v, v, [0] * ty.count)


def _pair_madd(builder, x, w32):
    """<16 x i32>: lane c = x[2c]·w[2c] + x[2c + 1]·w[2c + 1] for int16 pairs ``x`` and the
    pairs ``w32`` already sign-extended to int32 (LLVM forms ``vpmaddwd``)."""
    prod = builder.mul(builder.sext(x, _V32I32), w32)
    even = _shuffle(builder, prod, prod, range(0, 32, 2))
    odd = _shuffle(builder, prod, prod, range(1, 32, 2))
    return builder.add(even, odd)


_KERNEL_SIG = types.void(*(types.intp,) * 16)


def _make_kernel(groups, pairs):
    """An intrinsic ``(rows, segs, goff, w, w_seg, w_pair, pix, pair, npix, init, scale,
    params, out, out_pix, accs, acc_pix)``: one output row's ``npix`` pixels of a block of
    16·``groups`` channels, taps in ``segs`` segments of ``pairs`` pairs (all addresses and
    strides in bytes).

    Segment s reads pair p of pixel q at ``rows[s] + goff + q·pix + p·pair`` (int16 pairs,
    64 bytes a group) with weights at ``w + s·w_seg + p·w_pair``; the sums start at the int32
    ``init`` and are scaled by the float64 ``scale`` (16·groups each), params = [lo - zp,
    hi - zp, 1.5·2^52, zp]; int8 results go to ``out + q·out_pix``, and the int32 sums to
    ``accs + q·acc_pix`` when ``accs`` != 0.
    """

    @intrinsic
    def kernel(typingctx, rows, segs, goff, w, w_seg, w_pair, pix, pair, npix, init, scale,
               params, out, out_pix, accs, acc_pix):  # fmt: skip
        def codegen(context, builder, signature, args):
            (rows, segs, goff, w, w_seg, w_pair, pix, pair, npix, init, scale, params, out,
             out_pix, accs, acc_pix) = args  # fmt: skip
            low = _broadcast(builder, _load(builder, params, _const(0), _F64), _V16F64)
            high = _broadcast(builder, _load(builder, params, _const(8), _F64), _V16F64)
            magic = _broadcast(builder, _load(builder, params, _const(16), _F64), _V16F64)
            zp = builder.fptosi(_load(builder, params, _const(24), _F64), _I8)
            zp_v = _broadcast(builder, zp, ir.VectorType(_I8, 16 * groups))
            init_v = [_load(builder, init, _const(64 * k), _V16I32) for k in range(groups)]
            scale_v = [_load(builder, scale, _const(128 * k), _V16F64) for k in range(groups)]

            def pixels(q0, tile):
                """Accumulate, requantize and store pixels q0 .. q0 + tile."""

                def segment(s, accs_in):
                    acc = list(accs_in)
                    row = _load(builder, rows, builder.mul(s, _const(8)), _I64)
                    row = builder.add(builder.add(row, goff), builder.mul(q0, pix))
                    wb = builder.add(w, builder.mul(s, w_seg))
                    for p in range(pairs):
                        wo = builder.mul(w_pair, _const(p))
                        w_at = [builder.add(wo, _const(64 * k)) for k in range(groups)]
                        wv = [builder.sext(_load(builder, wb, a, _V32I16), _V32I32) for a in w_at]
                        xo = builder.mul(pair, _const(p))
                        for t in range(tile):
                            base = builder.add(row, builder.add(xo, builder.mul(pix, _const(t))))
                            for k in range(groups):
                                x = _load(builder, base, _const(64 * k), _V32I16)
                                j = t * groups + k
                                acc[j] = builder.add(acc[j], _pair_madd(builder, x, wv[k]))
                    return acc

                acc = _loop(builder, segs, init_v * tile, segment)
                for t in range(tile):
                    q = builder.add(q0, _const(t))
                    parts = []
                    for k in range(groups):
                        y = builder.sitofp(acc[t * groups + k], _V16F64)
                        y = builder.fmul(y, scale_v[k])
                        y = builder.select(builder.fcmp_ordered(">", y, low), y, low)  # maxpd
                        y = builder.select(builder.fcmp_ordered("<", y, high), y, high)  # minpd
                        y = builder.bitcast(builder.fadd(y, magic), _V16I64)
                        parts.append(builder.trunc(y, _V16I8))
                    v = parts[0]
                    if groups == 2:
                        v = _shuffle(builder, parts[0], parts[1], range(32))
                    v = builder.add(v, zp_v)  # wraps back into [lo, hi]
                    _store(builder, out, builder.mul(q, out_pix), v)
                    with builder.if_then(builder.icmp_signed("!=", accs, _const(0))):
                        at = builder.add(accs, builder.mul(q, acc_pix))
                        for k in range(groups):
                            _store(builder, at, _const(64 * k), acc[t * groups + k])

            tiles = builder.sdiv(npix, _const(_TILE))

            def tile_body(i, carried):
                pixels(builder.mul(i, _const(_TILE)), _TILE)
                return carried

            _loop(builder, tiles, [], tile_body)
            first = builder.mul(tiles, _const(_TILE))

            def rest_body(i, carried):
                pixels(builder.add(first, i), 1)
                return carried

            _loop(builder, builder.sub(npix, first), [], rest_body)
            return context.get_dummy_value()

        return _KERNEL_SIG, codegen

    return kernel


@intrinsic
def _prep_pairs(typingctx, src_a, src_b, step, dst, dst_step, cols, groups, zero):
    """For each column k < cols: dst + k·dst_step int16[32·g + 2c + h] = (h ? src_b :
    src_a)[k·step + 16·g + c] - zero (int8 sources) for g < groups, c < 16: two input
    columns' channels interleaved into pairs (addresses and steps in bytes)."""
    sig = types.void(*(types.intp,) * 8)

    def codegen(context, builder, signature, args):
        src_a, src_b, step, dst, dst_step, cols, groups, zero = args
        z = _broadcast(builder, builder.trunc(zero, _I16), _V16I16)
        order = [c // 2 + 16 * (c % 2) for c in range(32)]

        def column(k, carried):
            sa = builder.add(src_a, builder.mul(k, step))
            sb = builder.add(src_b, builder.mul(k, step))
            d = builder.add(dst, builder.mul(k, dst_step))

            def group(g, carried):
                off = builder.mul(g, _const(16))
                a = builder.sub(builder.sext(_load(builder, sa, off, _V16I8), _V16I16), z)
                b = builder.sub(builder.sext(_load(builder, sb, off, _V16I8), _V16I16), z)
                _store(builder, d, builder.mul(off, _const(4)), _shuffle(builder, a, b, order))
                return carried

            _loop(builder, groups, [], group)
            return carried

        _loop(builder, cols, [], column)
        return context.get_dummy_value()

    return sig, codegen


_k1_1, _k1_2, _k1_3 = [_make_kernel(1, p) for p in (1, 2, 3)]
_k2_1, _k2_2, _k2_3 = [_make_kernel(2, p) for p in (1, 2, 3)]


@njit(cache=True)
def _run_kernel(groups, pairs, rows, zslot, ptrs, segs, goff, wtab, w_off, w_seg, w_pair, pix,
                pair, npix, init, scale, c0, params, dst, d_off, d_pix, sums, keep,
                acc_pix):  # fmt: skip
    """The micro-kernel for ``groups`` (1, 2) channel groups and ``pairs`` (1..3) pairs, on
    the arrays themselves (arguments stay alive during the call; Numba may free an array
    after its last use, even if its address is still in use) and byte offsets: the
    prepared ``rows`` and the zero slot ``zslot`` that ``ptrs`` point into, the weight
    table, the int32 ``init`` and float64 ``scale`` (from channel c0 on), the params, the
    int8 destination, the int32 sums (stored when ``keep``)."""
    a = (ptrs.ctypes.data, segs, goff, wtab.ctypes.data + w_off, w_seg, w_pair, pix, pair, npix,
         init.ctypes.data + 4 * c0, scale.ctypes.data + 8 * c0, params.ctypes.data,
         dst.ctypes.data + d_off, d_pix, sums.ctypes.data if keep else 0, acc_pix)  # fmt: skip
    if groups == 2:
        if pairs == 3:
            _k2_3(*a)
        elif pairs == 2:
            _k2_2(*a)
        else:
            _k2_1(*a)
    else:
        if pairs == 3:
            _k1_3(*a)
        elif pairs == 2:
            _k1_2(*a)
        else:
            _k1_1(*a)


# ------------------------------------------------------------------ the kernel


@njit(cache=True)
def qdepthwise_nhwc(x, w, bits, bias, multiplier, shift, out, kh, kw, sh, sw, top, left, dh, dw,
                    x_zero, zp, lo, hi, threads=0):  # fmt: skip
    """out = requant(depthwise conv(x - x_zero, w) + bias) for NHWC int8 ``x`` [N, H, W, C]
    into NHWC int8 ``out`` [N, OH, OW, C·mult]; weight rows ``w`` [C·mult, ...] at ``bits``
    (8: int8 levels; 4, 2: packed bytes).

    Strides (sh, sw), leading pads (top, left), dilations (dh, dw); the trailing pads are
    implied by out's shape. ``multiplier`` and ``shift`` are [O] or [1]. The arguments and
    the result are ``qdepthwise``'s, with x and out channels last (both C-contiguous). The
    weight table and layer constants are prepared on each call; a caller that calls again
    with the same weights prepares them once (``prepare_depthwise``) and calls
    ``qdepthwise_nhwc_prepared``. ``threads`` (Numba's thread count, or 0: unknown) sizes
    the chunks of work; it does not change the result.
    """
    layer = prepare_depthwise(w, bits, bias, multiplier, shift, kh, kw)
    qdepthwise_nhwc_prepared(x, layer, out, kh, kw, sh, sw, top, left, dh, dw, x_zero, zp, lo,
                             hi, threads)  # fmt: skip


@njit(cache=True)
def prepare_depthwise(w, bits, bias, multiplier, shift, kh, kw):
    """What ``qdepthwise_nhwc_prepared`` needs of a layer's weights and constants, once:
    (weight table, ``layer_constants``, the sums' int32 start per channel, the float64
    scale, the channels the int64 path redoes, the channel blocks holding any)."""
    cout = bias.size
    cp = -(-cout // _GROUP) * _GROUP  # channels padded to whole groups
    pairs = min(_PAIRS, (kw + 1) // 2)
    nseg = -(-kw // (2 * pairs))  # segments per kernel row
    wtab = _weight_table(w, bits, kh, kw, pairs, nseg, cout, cp)
    no_sums = np.zeros(cout, dtype=np.int64)  # centred input: no zero-point term
    bound = ACC_PER_TERM * kh * kw  # bounds |Σ (x - z_x)·w|
    tail = layer_constants(bias, multiplier, shift, no_sums, 0, bound)
    # The kernel starts the sums at corr (an int32 bias: the input is centred) where that
    # cannot wrap, and requantizes by the float64 path; the other channels are redone.
    init = np.zeros(cp, dtype=np.int32)
    scale = np.zeros(cp, dtype=np.float64)
    blocks = -(-cout // _BLOCK)
    redo = np.zeros(cout, dtype=np.bool_)  # the channels for the int64 path
    slow = np.zeros(blocks, dtype=np.bool_)  # the blocks holding any
    for oc in range(cout):
        scale[oc] = tail[4][oc]
        fold = abs(tail[0][oc]) + bound < 2**31
        init[oc] = tail[0][oc] if fold else 0
        redo[oc] = not (fold and tail[5][oc])
        if redo[oc]:
            slow[oc // _BLOCK] = True
    return wtab, tail, init, scale, redo, slow


@njit(cache=True, parallel=True)
def qdepthwise_nhwc_prepared(x, layer, out, kh, kw, sh, sw, top, left, dh, dw, x_zero, zp, lo,
                             hi, threads):  # fmt: skip
    """``qdepthwise_nhwc`` with the layer's weights and constants prepared
    (``prepare_depthwise``)."""
    n, height, width, cin = x.shape
    oh_all, ow_all, cout = out.shape[1], out.shape[2], out.shape[3]
    if n * oh_all * ow_all * cout == 0:
        return
    wtab, tail, init, scale, redo, slow = layer
    mult = cout // cin
    cp = -(-cout // _GROUP) * _GROUP  # channels padded to whole groups
    pairs = min(_PAIRS, (kw + 1) // 2)
    nseg = -(-kw // (2 * pairs))  # segments per kernel row
    segs = kh * nseg
    blocks = -(-cout // _BLOCK)
    params = np.array([lo - zp, hi - zp, _MAGIC, zp], dtype=np.float64)
    reach = ((nseg - 1) * 2 * pairs + 2 * (pairs - 1)) * dw  # column of the last pair read
    wpad = (ow_all - 1) * sw + reach + 1  # prepared columns per row
    need = np.zeros(sw, dtype=np.bool_)  # the column phases the taps read
    for j in range(0, nseg * 2 * pairs, 2):
        need[(j * dw) % sw] = True
    ring = (kh - 1) * dh + 1 + sh  # the rows of one output row and the next
    direct = mult == 1 and cin % _GROUP == 0  # read x rows in place, else a staging row
    zrow = np.full(cp, x_zero, dtype=np.int8)  # centres to zero: the padding columns
    # Chunks: a range of output rows (at least _ROWS of them, so that the ring pays off)
    # times a slab of whole channel blocks (which prepares only its own channels).
    tasks = n * oh_all
    most = min(_CHUNKS, _CHUNKS_PER_THREAD * threads) if threads > 0 else _CHUNKS
    row_chunks = max(1, min(tasks // _ROWS, most))
    slabs = min(blocks, max(1, most // row_chunks))
    chunks = row_chunks * slabs
    widest = min(cp, -(-blocks // slabs) * _BLOCK)  # channels of the widest slab
    zslot = np.zeros(wpad * 2 * widest, dtype=np.int16)  # the rows outside the input
    for chunk in prange(chunks):
        rc, slab = chunk // slabs, chunk % slabs
        blk0, blk1 = slab * blocks // slabs, (slab + 1) * blocks // slabs
        g0 = blk0 * (_BLOCK // _GROUP)
        g1 = min(cp // _GROUP, blk1 * (_BLOCK // _GROUP))
        c_s = g0 * _GROUP  # the slab's first channel
        entry = 4 * _GROUP * (g1 - g0)  # bytes per prepared column: the slab's channels
        slot = wpad * entry // 2  # int16 per prepared row
        rows = np.empty(ring * slot, dtype=np.int16)
        tags = np.full(ring, -1, dtype=np.int64)  # which input row each slot holds
        stage = np.empty(0 if direct else width * cp, dtype=np.int8)
        ptrs = np.empty(segs, dtype=np.int64)
        spill = np.empty(ow_all * _BLOCK, dtype=np.int8)  # the last block's partial pixels
        sums = np.empty(ow_all * _BLOCK, dtype=np.int32)
        of = out.reshape(out.size)
        for task in range(rc * tasks // row_chunks, (rc + 1) * tasks // row_chunks):
            b, r = task // oh_all, task % oh_all
            for i in range(kh):
                ih = r * sh - top + i * dh
                at = zslot.ctypes.data
                if 0 <= ih < height:
                    if tags[ih % ring] != b * height + ih:
                        tags[ih % ring] = b * height + ih
                        _prepare_row(x, b, ih, stage, direct, mult, cp, g0, g1, zrow, rows,
                                     (ih % ring) * slot * 2, wpad, left, dw, sw, need)  # fmt: skip
                    at = rows.ctypes.data + (ih % ring) * slot * 2
                for sg in range(nseg):
                    ptrs[i * nseg + sg] = at + sg * 2 * pairs * dw * entry
            o_row = (b * oh_all + r) * ow_all * cout
            for blk in range(blk0, blk1):
                c0 = blk * _BLOCK
                width_c = min(_BLOCK, cout - c0)
                groups = -(-width_c // _GROUP)
                full = width_c == groups * _GROUP
                dst, d_off, d_pix = of, o_row + c0, cout
                if not full:
                    dst, d_off, d_pix = spill, 0, _GROUP * groups
                _run_kernel(groups, pairs, rows, zslot, ptrs, segs, 4 * (c0 - c_s), wtab, 4 * c0,
                            4 * pairs * cp, 4 * cp, sw * entry, 2 * dw * entry, ow_all, init,
                            scale, c0, params, dst, d_off, d_pix, sums, slow[blk],
                            4 * _GROUP * groups)  # fmt: skip
                if not full:
                    for q in range(ow_all):
                        for c in range(width_c):
                            of[o_row + q * cout + c0 + c] = spill[q * d_pix + c]
                if slow[blk]:
                    _redo_exact(sums, _GROUP * groups, c0, width_c, tail, init, redo, out, b, r,
                                zp, lo, hi)  # fmt: skip


@njit(cache=True)
def _weight_table(w, bits, kh, kw, pairs, nseg, cout, cp):
    """The weight levels as int16 [segment, pair, channel (cp), 2]: tap (i, j) of channel oc
    at segment i·nseg + j // (2·pairs), pair (j mod 2·pairs) // 2, slot j mod 2; zeros
    for the padding taps and channels."""
    w2 = w.reshape((cout, w.size // max(cout, 1)))
    span = 2 * pairs
    table = np.zeros(kh * nseg * pairs * cp * 2, dtype=np.int16)
    for i in range(kh):
        for j in range(kw):
            seg, jj = i * nseg + j // span, j % span
            at = (seg * pairs + jj // 2) * cp * 2 + jj % 2
            t = i * kw + j
            if bits == 8:
                for oc in range(cout):
                    table[at + 2 * oc] = w2[oc, t]
            else:
                for oc in range(cout):
                    table[at + 2 * oc] = np.int16(weight_level(w2, oc, t, bits))
    return table


@njit(cache=True)
def _prepare_row(x, b, ih, stage, direct, mult, cp, g0, g1, zrow, rows, at, wpad, left, dw, sw,
                 need):  # fmt: skip
    """Prepare channel groups g0 .. g1 of input row (b, ih) into ``rows`` at byte offset
    ``at``: for every column ``col`` < wpad of a needed phase, the int16 pairs
    (x[col - left] - z_x, x[col - left + dw] - z_x) of those channels (zeros outside the row
    and past the channels), 64·(g1 - g0) bytes a column. ``zrow`` (cp bytes of z_x) is read
    for the columns outside the row; ``stage`` holds the row expanded to cp channels unless
    ``direct``."""
    width, cin = x.shape[2], x.shape[3]
    cout = cin * mult
    c0, c1 = g0 * _GROUP, g1 * _GROUP
    if direct:
        src, pitch = x.ctypes.data + (b * x.shape[1] + ih) * width * cin, cin
    else:
        zero = zrow[0]
        for iw in range(width):
            for oc in range(c0, min(c1, cout)):
                stage[iw * cp + oc] = x[b, ih, iw, oc // mult]
            for oc in range(max(c0, cout), c1):
                stage[iw * cp + oc] = zero
        src, pitch = stage.ctypes.data, cp
    src += c0
    dst, entry = rows.ctypes.data + at, 4 * (c1 - c0)
    z_addr = zrow.ctypes.data + c0
    for ph in range(sw):
        if not need[ph]:
            continue
        # columns ph + sw·k: k in [k0, k1) read two input columns inside the row
        k0 = max(0, -(-(left - ph) // sw))
        k1 = max(k0, -(-(width - dw + left - ph) // sw))
        kend = -(-(wpad - ph) // sw)
        k1 = min(k1, kend)
        for k in range(kend):
            if k == k0 and k1 > k0:
                col = ph + sw * k
                pa = src + (col - left) * pitch
                _prep_pairs(pa, pa + dw * pitch, sw * pitch, dst + col * entry, sw * entry,
                            k1 - k0, g1 - g0, zrow[0])  # fmt: skip
            if k0 <= k < k1:
                continue
            col = ph + sw * k
            a, e = col - left, col - left + dw
            pa = src + a * pitch if 0 <= a < width else z_addr
            pb = src + e * pitch if 0 <= e < width else z_addr
            _prep_pairs(pa, pb, 0, dst + col * entry, 0, 1, g1 - g0, zrow[0])


@njit(cache=True)
def _redo_exact(sums, pitch, c0, count, tail, init, redo, out, b, r, zp, lo, hi):
    """out[b, r, q, c0 + c] = requant(acc + corr[c0 + c]) for every pixel q and the channels
    c < count marked ``redo``, by the int64 path, where acc = sums[q·pitch + c] - init[c0 + c]
    (the kernel's sums started at ``init``)."""
    corr, mult, shf = tail[0], tail[1], tail[2]
    for c in range(count):
        oc = c0 + c
        if not redo[oc]:
            continue
        k = corr[oc] - init[oc]
        for q in range(out.shape[2]):
            v = requantize_one(np.int64(sums[q * pitch + c]) + k, mult[oc], shf[oc], zp, lo, hi)
            out[b, r, q, oc] = np.int8(v)


# On one thread: the same code without the parallel region's launch (a few microseconds).
qdepthwise_nhwc_serial = serial_twin(qdepthwise_nhwc_prepared, "qdepthwise_nhwc_serial")
