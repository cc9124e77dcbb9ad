"""Float conv2d kernels on channels-last (NHWC) activations: no transposes around them.

For x [N, H, W, C_in] and out [N, OH, OW, C_out] (float32 or float64), weights as the IR
gives them (OIHW [C_out, C_in/group, KH, KW]) and bias [C_out], with the fused activation
of ``float_activation.activation_args`` (hard_swish flag, lo, hi). The weights are re-laid
out by the kernels themselves, once per call, into a scratch of C_out·C_in/group·KH·KW
elements (small next to the conv's work), so no bind-time preparation is needed. Three
forms, chosen by ``plan_conv2d_nhwc`` from the shapes and attributes:

* **depthwise** (every group one input channel, any depth multiplier):
  ``depthwise_conv_nhwc``, a direct kernel vectorised over channels. The weights become a
  table [tap, C_out] (and the bias a copy) in the input's dtype, so that a tap's weights
  for a block of channels are one contiguous vector. With depth multiplier 1 (every
  MobileNet depthwise) a task is (image, output row), and its interior output pixels (every
  tap inside the input row) take a register-blocked micro-kernel written in LLVM IR vector
  types (``numba.extending.intrinsic``, as ``int_depthwise_nhwc``): for a block of two
  channel vectors (16 float32 or 8 float64 lanes each; one for an odd last vector) it runs
  the interior pixels in tiles of 8, then 4, then 1 pixel, the tile's accumulators in
  registers from the bias, one ``llvm.fma`` per tap, pixel and vector (the input vector
  x[n, ih, iw, c0:] read in place with the tap's weight vector, loaded once per tap for the
  tile), then the activation in registers and one store per vector into out[n, r, q, c0:].
  Its taps are a per-task list of (input address, weight address) pairs holding only the
  kernel rows inside the input, so padding rows cost nothing. Only generic vector
  operations are used (fma, fdiv, fadd, fmul, fcmp/select), which LLVM legalises to
  AVX-512, AVX2 or any other vector unit. The border pixels (all channels) and the channel
  tail past the last whole vector take ``_dw_plain``: the bias, then each tap (multiply-add,
  FMA with ``contract``) over the pixels where it reads inside the input, then the
  activation. With a depth multiplier > 1 a task is (image, output row, channel block of
  64, then 16, then the rest); its output row segment (at most 64 pixels × the block) is
  the accumulator, in place in ``out``: set to the bias, then each valid kernel row adds
  its taps, three per pass, over the pixels where all three fall inside the input (the
  edge pixels take them one at a time), then the activation; the input rows of a task are
  first expanded (output channel oc reads input channel oc // mult) into a scratch. Tasks
  go in at most 64 contiguous chunks over Numba's threads, each chunk allocating its
  scratch once.
* **pointwise** (1×1, stride 1, no padding, any group): ``conv_gemm_nhwc`` with
  ``pointwise``: out[P, O] = X[P, K] @ W[O, K]ᵀ per group, straight from the NHWC rows
  (all images' pixels are one matrix) into the NHWC rows of ``out`` through OpenBLAS
  (``float_blas.gemm_flat``, W transposed in the call), in tiles of ``tile`` pixel rows so
  that the bias and activation pass reads a tile still in cache.
* **general** (the 3×3 stride-2 stem, grouped convs, strided 1×1): the same kernel without
  ``pointwise``: im2col of a tile of output pixels of one image and group, where each
  (kernel row, kernel column) of a pixel is C_in/group contiguous input values (with
  dw = 1 and one group a whole kernel row is one run of KW·C_in values), zeros outside the
  input, in (kernel row, kernel column, channel) order; the weights are re-laid out to the
  same order (OHWI), and the product and epilogue are as for pointwise.

Threads: the depthwise kernels compute each output element in one task, in a fixed order;
the products are ``gemm_flat``'s, whose result is the same bits at any thread count (its
fixed blocks over Numba's threads), and the epilogues are serial. So results do not depend
on ``numba.set_num_threads``. Innermost loops are unit stride and index with uint64, so
Numba emits no wraparound selects and LLVM vectorises them.

Bias and activation are the arithmetic of ``float_activation.bias_activate_rows``: v = acc
+ b, then the clamp to [lo, hi] (keeping nan) or v · hard_swish_gate(v) (the depthwise
kernels start the sums at the bias instead of adding it last). Sums are in a different
order from the NCHW kernels' and fused (one rounding per multiply-add), so results agree
with them to float rounding, not bit for bit. After editing the micro-kernel, delete
``backends/numba/__pycache__/*float_conv_nhwc*.nb[ic]``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from irc.backends.numba.float_activation import hard_swish_gate
from irc.backends.numba.float_blas import gemm_flat
from irc.backends.numba.int_simd import _I32, _I64, _const, _load, _loop, _shuffle, _store

# Depthwise tasks go in at most this many chunks, each allocating its scratch once.
_CHUNKS = 64
# Depthwise channel block (elements) and output pixels per accumulator segment.
_BLOCK = 64
_SEGMENT = 64
# Product tiles: about 1 MB of activation rows and result, but at least this many pixel
# rows, below which OpenBLAS's per-call cost shows (as ``kernels_conv``).
TILE_BYTES = 1 << 20
TILE_MIN_ROWS = 4096


def plan_conv2d_nhwc(x_shape, w_shape, out_shape, strides, pads, dilations, group, hard_swish,
                     lo, hi, itemsize=4):  # fmt: skip
    """(kernel, params) for a conv2d on NHWC shapes: call ``kernel(x, w, bias, out,
    *params)``. ``pads`` is [top, left, bottom, right]; (hard_swish, lo, hi) as
    ``float_activation.activation_args`` gives them; ``itemsize`` the element size."""
    cin = x_shape[3]
    cout, cin_g, kh, kw = w_shape
    oh, ow = out_shape[1], out_shape[2]
    sh, sw = strides
    top, left = pads[0], pads[1]
    dh, dw = dilations
    if cin_g == 1 and group == cin:
        return depthwise_conv_nhwc, (sh, sw, top, left, dh, dw, hard_swish, lo, hi)
    pointwise = kh == kw == 1 and (sh, sw) == (1, 1) and not any(pads)
    k = cin_g * kh * kw
    per_row = (cout + (cin if pointwise else k)) * itemsize
    pixels = x_shape[0] * oh * ow if pointwise else oh * ow
    tile = conv_tile(pixels, per_row)
    params = (sh, sw, top, left, dh, dw, group, pointwise, tile, hard_swish, lo, hi)
    return conv_gemm_nhwc, params


def conv_tile(pixels: int, per_row: int) -> int:
    """Pixel rows per product tile: about ``TILE_BYTES`` of rows of ``per_row`` bytes, at
    least ``TILE_MIN_ROWS``, the tiles of ``pixels`` rows made even (no thin last one)."""
    rows = max(TILE_BYTES // max(1, per_row), TILE_MIN_ROWS)
    rows = max(1, min(pixels, rows))
    return -(-pixels // (-(-pixels // rows)))


# ------------------------------------------------------------------ IR micro-kernel

_F32, _F64 = ir.FloatType(), ir.DoubleType()
_VBYTES = 64  # bytes per channel vector: 16 float32 or 8 float64 lanes
_TILES = (8, 4, 1)  # output pixels per register tile of the micro-kernel, largest first
_DW_SIG_ARGS = 9  # the micro-kernel's intp arguments, after the array giving its dtype


def _make_dw_kernel(groups, hs):
    """An intrinsic ``(like, taps, ntaps, goff, pix, npix, bias, params, out, out_pix)``:
    ``npix`` output pixels of one output row, a block of ``groups`` channel vectors (64
    bytes each, of ``like``'s float dtype), all addresses and strides in bytes.

    ``taps`` holds ``ntaps`` pairs (x, w) of addresses: tap t reads the input vectors at
    ``x + goff + q·pix`` for pixel q, its weights at ``w + goff``. The sums start at the
    bias (``bias + goff``), take one ``llvm.fma`` per tap, pixel and vector, then the
    activation (``hs``: v·hard_swish_gate(v), else the clamp to params[0] .. params[1],
    keeping nan) and go to ``out + goff + q·out_pix``.
    """

    @intrinsic
    def kernel(typingctx, like, taps, ntaps, goff, pix, npix, bias, params, out, out_pix):
        wide = like.dtype == types.float64
        sig = types.void(like, *(types.intp,) * _DW_SIG_ARGS)

        def codegen(context, builder, signature, args):
            _, taps, ntaps, goff, pix, npix, bias, params, out, out_pix = args
            fty, bits = (_F64, 64) if wide else (_F32, 32)
            lanes = _VBYTES * 8 // bits
            vty = ir.VectorType(fty, lanes)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{lanes}f{bits}"
            )

            def splat(value):
                return ir.Constant(vty, [value] * lanes)

            def broadcast(value):
                v = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(_I32, 0))
                return _shuffle(builder, v, v, [0] * lanes)

            low = broadcast(_load(builder, params, _const(0), fty))
            high = broadcast(_load(builder, params, _const(bits // 8), fty))
            bias_at = builder.add(bias, goff)
            bias_v = [_load(builder, bias_at, _const(_VBYTES * k), vty) for k in range(groups)]
            out_at = builder.add(out, goff)

            def activate(v):
                if hs:  # hard_swish_gate: g = v / 6 + 1/2 clamped to [0, 1] (nan kept)
                    g = builder.fadd(builder.fdiv(v, splat(6.0)), splat(0.5))
                    g = builder.select(builder.fcmp_ordered("<", g, splat(0.0)), splat(0.0), g)
                    g = builder.select(builder.fcmp_ordered(">", g, splat(1.0)), splat(1.0), g)
                    return builder.fmul(v, g)
                v = builder.select(builder.fcmp_ordered("<", v, low), low, v)
                return builder.select(builder.fcmp_ordered(">", v, high), high, v)

            def pixels(q0, tile):
                """Accumulate, activate and store pixels q0 .. q0 + tile."""
                x_q0 = builder.add(goff, builder.mul(q0, pix))

                def tap(t, accs_in):
                    acc = list(accs_in)
                    at = builder.mul(t, _const(16))
                    xa = builder.add(_load(builder, taps, at, _I64), x_q0)
                    wa = builder.add(_load(builder, taps, builder.add(at, _const(8)), _I64), goff)
                    wv = [_load(builder, wa, _const(_VBYTES * k), vty) for k in range(groups)]
                    for p in range(tile):
                        xp = builder.add(xa, builder.mul(pix, _const(p)))
                        for k in range(groups):
                            xv = _load(builder, xp, _const(_VBYTES * k), vty)
                            j = p * groups + k
                            acc[j] = builder.call(fma, [xv, wv[k], acc[j]])
                    return acc

                acc = _loop(builder, ntaps, bias_v * tile, tap)
                for p in range(tile):
                    o = builder.add(out_at, builder.mul(builder.add(q0, _const(p)), out_pix))
                    for k in range(groups):
                        _store(builder, o, _const(_VBYTES * k), activate(acc[p * groups + k]))

            first = _const(0)
            for tile in _TILES:  # whole tiles of each size, then the rest with the next
                count = builder.sdiv(builder.sub(npix, first), _const(tile))

                def tile_body(i, carried, start=first, tile=tile):
                    pixels(builder.add(start, builder.mul(i, _const(tile))), tile)
                    return carried

                _loop(builder, count, [], tile_body)
                first = builder.add(first, builder.mul(count, _const(tile)))
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_k1, _k2 = _make_dw_kernel(1, False), _make_dw_kernel(2, False)
_k1_hs, _k2_hs = _make_dw_kernel(1, True), _make_dw_kernel(2, True)


@njit(cache=True)
def _run_dw_kernel(groups, hs, x, table, taps, ntaps, goff, pix, npix, bias, params, out, o_off,
                   out_pix):  # fmt: skip
    """The micro-kernel for ``groups`` (1, 2) channel vectors, on the arrays themselves (so
    that they stay alive during the call; Numba may free an array after its last use even
    if its address is in use): ``taps`` (addresses into ``x`` and the weight ``table``),
    ``bias``, ``params`` and ``out`` from element ``o_off`` on (byte offsets and strides
    otherwise)."""
    if table.size == 0:  # keeps ``table`` referenced up to here
        return
    a = (x, taps.ctypes.data, ntaps, goff, pix, npix, bias.ctypes.data, params.ctypes.data,
         out.ctypes.data + o_off * out.itemsize, out_pix)  # fmt: skip
    if hs:
        if groups == 2:
            _k2_hs(*a)
        else:
            _k1_hs(*a)
    elif groups == 2:
        _k2(*a)
    else:
        _k1(*a)


# ------------------------------------------------------------------------------ depthwise


@njit(cache=True)
def depthwise_conv_nhwc(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi):
    """out = act(depthwise conv of NHWC x [N, H, W, C] with w [C·mult, 1, kh, kw] + bias)
    into NHWC out [N, OH, OW, C·mult].

    Strides (sh, sw), leading pads (top, left) and dilations (dh, dw); the trailing pads are
    implied by out's shape. hs, lo, hi: the fused activation (``float_activation``).
    """
    if w.shape[0] == x.shape[3]:
        _depthwise_tiles(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi)
    else:
        _depthwise_rows(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi)


@njit(cache=True, parallel=True)
def _depthwise_tiles(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi):
    """``depthwise_conv_nhwc`` with depth multiplier 1: the micro-kernel on the interior
    pixels' whole channel vectors, ``_dw_plain`` on the rest."""
    n, height, width, cin = x.shape
    cout, _, kh, kw = w.shape
    oh_all, ow_all = out.shape[1], out.shape[2]
    taps = kh * kw
    size = x.itemsize
    lanes = _VBYTES // size
    table = np.empty(taps * cout, dtype=x.dtype)  # [tap, channel]
    wf = w.reshape(w.size)
    for oc in range(cout):
        for t in range(taps):
            table[t * cout + oc] = wf[oc * taps + t]
    bv = np.empty(cout, dtype=x.dtype)
    bv[:] = bias
    params = np.empty(2, dtype=x.dtype)
    params[0], params[1] = lo, hi
    vecs = cout // lanes
    cv = vecs * lanes  # the channels in whole vectors: the micro-kernel's
    # interior output columns: every kernel column inside the input
    q_lo = _tap_range(0, dw, left, sw, width, 0, ow_all)[0]
    q_hi = _tap_range(kw - 1, dw, left, sw, width, 0, ow_all)[1]
    if q_hi <= q_lo or cv == 0:
        q_lo = q_hi = ow_all
    xf, of = x.reshape(x.size), out.reshape(out.size)
    tasks = n * oh_all
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        ptrs = np.empty(2 * taps, dtype=np.int64)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            b, r = task // oh_all, task % oh_all
            if q_hi > q_lo:
                nt = 0
                for i in range(kh):
                    ih = r * sh - top + i * dh
                    if ih < 0 or ih >= height:
                        continue  # a padding row: adds nothing
                    for j in range(kw):
                        at = ((b * height + ih) * width + q_lo * sw + j * dw - left) * cin
                        ptrs[2 * nt] = x.ctypes.data + at * size
                        ptrs[2 * nt + 1] = table.ctypes.data + (i * kw + j) * cout * size
                        nt += 1
                o_off = ((b * oh_all + r) * ow_all + q_lo) * cout
                for v in range(0, vecs, 2):
                    _run_dw_kernel(min(2, vecs - v), hs, x, table, ptrs, nt, v * _VBYTES,
                                   sw * cin * size, q_hi - q_lo, bv, params, out, o_off,
                                   cout * size)  # fmt: skip
                _dw_plain(xf, table, bv, of, b, r, q_lo, q_hi, cv, cout, height, width, cin,
                          cout, kh, kw, sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo,
                          hi)  # fmt: skip
            for q0, q1 in ((0, q_lo), (q_hi, ow_all)):
                _dw_plain(xf, table, bv, of, b, r, q0, q1, 0, cout, height, width, cin, cout,
                          kh, kw, sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo,
                          hi)  # fmt: skip


@njit(cache=True)
def _dw_plain(xf, table, bias, of, b, r, q0, q1, c_lo, c_hi, height, width, cin, cout, kh, kw,
              sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo, hi):  # fmt: skip
    """Output pixels [q0, q1) of row r of image b, channels [c_lo, c_hi), depth multiplier
    1, in plain Numba: the bias, then each tap over the pixels where it reads inside the
    input, then the activation."""
    cb = c_hi - c_lo
    if q1 <= q0 or cb <= 0:
        return
    o = ((b * oh_all + r) * ow_all + q0) * cout + c_lo
    _fill_bias(of, o, cout, q1 - q0, bias, c_lo, cb)
    for i in range(kh):
        ih = r * sh - top + i * dh
        if ih < 0 or ih >= height:
            continue
        for j in range(kw):
            p_lo, p_hi = _tap_range(j, dw, left, sw, width, q0, q1)
            if p_hi > p_lo:
                a0 = ((b * height + ih) * width + p_lo * sw + j * dw - left) * cin + c_lo
                _taps(of, o + (p_lo - q0) * cout, cout, xf, a0, 0, sw * cin, table,
                      (i * kw + j) * cout + c_lo, 0, p_hi - p_lo, 1, cb)  # fmt: skip
    _activate(of, o, cout, q1 - q0, cb, hs, lo, hi)


@njit(cache=True, parallel=True)
def _depthwise_rows(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi):
    """``depthwise_conv_nhwc`` in plain Numba, for any depth multiplier (used for those
    > 1): tasks of (image, output row, block of 64, 16 or the last channels)."""
    n, height, width, cin = x.shape
    cout, _, kh, kw = w.shape
    oh_all, ow_all = out.shape[1], out.shape[2]
    mult = cout // cin
    taps = kh * kw
    wf = w.reshape(w.size)
    table = np.empty(taps * cout, dtype=w.dtype)  # [tap, channel]
    for oc in range(cout):
        for t in range(taps):
            table[t * cout + oc] = wf[oc * taps + t]
    xf, of = x.reshape(x.size), out.reshape(out.size)
    full, rest = cout // _BLOCK, cout % _BLOCK
    sixteens, tail = rest // 16, rest % 16
    blocks = full + sixteens + (1 if tail else 0)
    tasks = n * oh_all * blocks
    chunks = min(tasks, _CHUNKS)
    for chunk in prange(chunks):
        stage = np.empty(kh * width * _BLOCK if mult > 1 else 1, dtype=x.dtype)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            row, blk = task // blocks, task % blocks
            b, r = row // oh_all, row % oh_all
            if blk < full:
                c0, cb = blk * _BLOCK, _BLOCK
            elif blk < full + sixteens:
                c0, cb = full * _BLOCK + (blk - full) * 16, 16
            else:
                c0, cb = cout - tail, tail
            _dw_task(xf, table, bias, of, stage, b, r, c0, cb, height, width, cin, cout, mult,
                     kh, kw, sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo, hi)  # fmt: skip


@njit(cache=True, fastmath={"contract"})  # contract: the inlined taps' FMAs
def _dw_task(xf, table, bias, of, stage, b, r, c0, cb, height, width, cin, cout, mult, kh, kw,
             sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo, hi):  # fmt: skip
    """One depthwise task: output row r of image b, channels [c0, c0 + cb), in segments of
    ``_SEGMENT`` output pixels. ``table``: the weights [tap, channel]."""
    tstride = cout
    if mult > 1:  # expanded input rows: stage[i, iw, l] = x[b, ih_i, iw, (c0 + l) // mult]
        for i in range(kh):
            ih = r * sh - top + i * dh
            if ih < 0 or ih >= height:
                continue
            for iw in range(width):
                src = ((b * height + ih) * width + iw) * cin
                dst = (i * width + iw) * cb
                for lane in range(cb):
                    stage[dst + lane] = xf[src + (c0 + lane) // mult]
    out_row = ((b * oh_all + r) * ow_all) * cout + c0
    for s0 in range(0, ow_all, _SEGMENT):
        s1 = min(ow_all, s0 + _SEGMENT)
        start = out_row + s0 * cout
        _fill_bias(of, start, cout, s1 - s0, bias, c0, cb)
        for i in range(kh):
            ih = r * sh - top + i * dh
            if ih < 0 or ih >= height:
                continue  # a padding row: adds nothing
            if mult > 1:
                src, row_off, step = stage, i * width * cb, cb
            else:
                src, row_off, step = xf, ((b * height + ih) * width) * cin + c0, cin
            for j0 in range(0, kw, 3):
                nt = min(3, kw - j0)
                # valid output columns of each tap, within the segment
                lo0, hi0 = _tap_range(j0, dw, left, sw, width, s0, s1)
                lo1, hi1 = _tap_range(j0 + 1, dw, left, sw, width, s0, s1)
                lo2, hi2 = _tap_range(j0 + 2, dw, left, sw, width, s0, s1)
                if nt < 3:
                    lo2, hi2 = lo0, hi0
                if nt < 2:
                    lo1, hi1 = lo0, hi0
                inner_lo, inner_hi = max(lo0, lo1, lo2), min(hi0, hi1, hi2)
                if inner_hi <= inner_lo:  # no common column: every tap on its own
                    inner_lo = inner_hi = s1
                t0 = (i * kw + j0) * tstride + c0
                if inner_hi > inner_lo:
                    _pass(of, out_row, src, row_off, step, table, t0, tstride, inner_lo,
                          inner_hi, j0, nt, cout, cb, sw, dw, left)  # fmt: skip
                for t in range(nt):  # edge columns of each tap
                    lo_t, hi_t = (lo0, hi0) if t == 0 else ((lo1, hi1) if t == 1 else (lo2, hi2))
                    for p_lo, p_hi in ((lo_t, min(hi_t, inner_lo)), (max(lo_t, inner_hi), hi_t)):
                        if p_hi > p_lo:
                            _pass(of, out_row, src, row_off, step, table, t0 + t * tstride,
                                  tstride, p_lo, p_hi, j0 + t, 1, cout, cb, sw, dw,
                                  left)  # fmt: skip
        _activate(of, start, cout, s1 - s0, cb, hs, lo, hi)


@njit(cache=True, inline="always")
def _pass(of, out_row, src, row_off, step, table, t0, tstride, p_lo, p_hi, j, nt, cout, cb, sw,
          dw, left):  # fmt: skip
    """Kernel columns j..j+nt-1 of one kernel row added over output pixels [p_lo, p_hi)."""
    o = out_row + p_lo * cout
    a0 = row_off + (p_lo * sw + j * dw - left) * step
    _taps(of, o, cout, src, a0, dw * step, sw * step, table, t0, tstride, p_hi - p_lo, nt, cb)


@njit(cache=True)
def _tap_range(j, dw, left, sw, width, s0, s1):
    """[lo, hi): the output columns in [s0, s1) whose kernel column j reads inside the
    input (input column o·sw + j·dw - left in [0, width))."""
    shift = j * dw - left
    first = (-shift + sw - 1) // sw if shift < 0 else 0
    last = (width - 1 - shift) // sw + 1 if width - 1 - shift >= 0 else 0
    lo = min(s1, max(s0, first))
    return lo, max(lo, min(s1, last))


@njit(cache=True, fastmath={"contract"}, inline="always")
def _taps(of, o, o_step, src, a0, a_tap, a_step, table, t0, t_tap, count, nt, cb):
    """of[o + p·o_step + l] += Σ_{t < nt} table[t0 + t·t_tap + l] ·
    src[a0 + t·a_tap + p·a_step + l] for p < count, l < cb (nt ≤ 3 taps)."""
    o, o_step, a_step, cw = uint64(o), uint64(o_step), uint64(a_step), uint64(cb)
    x0, x1, x2 = uint64(a0), uint64(a0 + a_tap), uint64(a0 + 2 * a_tap)
    w0, w1, w2 = uint64(t0), uint64(t0 + t_tap), uint64(t0 + 2 * t_tap)
    if nt == 3:
        for p in range(uint64(count)):
            d, s = o + p * o_step, p * a_step
            for lane in range(cw):
                of[d + lane] += (table[w0 + lane] * src[x0 + s + lane]
                                 + table[w1 + lane] * src[x1 + s + lane]
                                 + table[w2 + lane] * src[x2 + s + lane])  # fmt: skip
    elif nt == 2:
        for p in range(uint64(count)):
            d, s = o + p * o_step, p * a_step
            for lane in range(cw):
                of[d + lane] += (table[w0 + lane] * src[x0 + s + lane]
                                 + table[w1 + lane] * src[x1 + s + lane])  # fmt: skip
    else:
        for p in range(uint64(count)):
            d, s = o + p * o_step, p * a_step
            for lane in range(cw):
                of[d + lane] += table[w0 + lane] * src[x0 + s + lane]


@njit(cache=True, inline="always")
def _fill_bias(of, o, o_step, count, bias, c0, cb):
    """of[o + p·o_step + l] = bias[c0 + l] for p < count, l < cb."""
    o, o_step, c0, cw = uint64(o), uint64(o_step), uint64(c0), uint64(cb)
    for p in range(uint64(count)):
        d = o + p * o_step
        for lane in range(cw):
            of[d + lane] = bias[c0 + lane]


@njit(cache=True, inline="always")
def _activate(of, o, o_step, count, cb, hs, lo, hi):
    """The fused activation in place on of[o + p·o_step + l], p < count, l < cb."""
    o, o_step, cw = uint64(o), uint64(o_step), uint64(cb)
    if hs:
        for p in range(uint64(count)):
            d = o + p * o_step
            for lane in range(cw):
                v = of[d + lane]
                of[d + lane] = v * hard_swish_gate(v)
    elif lo > -np.inf or hi < np.inf:
        for p in range(uint64(count)):
            d = o + p * o_step
            for lane in range(cw):
                of[d + lane] = np.minimum(np.maximum(of[d + lane], lo), hi)


# ------------------------------------------------------------------------------ products


@njit(cache=True)
def conv_gemm_nhwc(x, w, bias, out, sh, sw, top, left, dh, dw, group, pointwise, tile, hs, lo,
                   hi):  # fmt: skip
    """out = act(conv(x, w) + bias) for NHWC x [N, H, W, C_in], OIHW w, NHWC out, as
    per-group OpenBLAS products over tiles of ``tile`` output pixels.

    ``pointwise`` (1×1, stride 1, no padding): the rows of x (all images) are the product's
    left operand; otherwise im2col per tile of one image's output pixels.
    """
    n, height, width, cin = x.shape
    cout, cin_g, kh, kw = w.shape
    oh_all, ow_all = out.shape[1], out.shape[2]
    og, k = cout // group, cin_g * kh * kw
    xf, of = x.reshape(x.size), out.reshape(out.size)
    if pointwise:
        wf = w.reshape(w.size)  # [O, C_in/group] rows: the product's Wᵀ as stored
        pixels = n * height * width
        for p0 in range(0, pixels, tile):
            rows = min(tile, pixels - p0)
            for g in range(group):
                gemm_flat(xf, p0 * cin + g * cin_g, cin, False, wf, g * og * k, k, True,
                          of, p0 * cout + g * og, cout, rows, og, k, 1.0, 0.0)  # fmt: skip
            bias_activate_cols(of, p0 * cout, cout, rows, cout, bias, 0, hs, lo, hi)
        return
    # weights re-laid out to [O, kh, kw, C_in/group]: the order of an NHWC im2col row
    wr = np.empty(w.size, dtype=w.dtype)
    for o in range(cout):
        for c in range(cin_g):
            for i in range(kh):
                for j in range(kw):
                    wr[((o * kh + i) * kw + j) * cin_g + c] = w[o, c, i, j]
    pixels = oh_all * ow_all
    cols = np.empty(min(tile, pixels) * k, dtype=x.dtype)
    for b in range(n):
        for p0 in range(0, pixels, tile):
            rows = min(tile, pixels - p0)
            out_off = (b * pixels + p0) * cout
            for g in range(group):
                _im2col_nhwc(xf, b * height * width * cin + g * cin_g, height, width, cin, cin_g,
                             kh, kw, sh, sw, top, left, dh, dw, ow_all, p0, rows, cols)  # fmt: skip
                gemm_flat(cols, 0, k, False, wr, g * og * k, k, True,
                          of, out_off + g * og, cout, rows, og, k, 1.0, 0.0)  # fmt: skip
            bias_activate_cols(of, out_off, cout, rows, cout, bias, 0, hs, lo, hi)


@njit(cache=True)
def _im2col_nhwc(xf, x0, height, width, cin, cin_g, kh, kw, sh, sw, top, left, dh, dw, ow_all, p0,
                 rows, cols):  # fmt: skip
    """cols[q, (i, j, c)] = x[oh·sh - top + i·dh, ow·sw - left + j·dw, c] (channel c of the
    group whose first element is at ``x0``), zero outside the input, for the output pixels
    q = p0 + q' = oh·OW + ow of one image, q' < rows."""
    k = kh * kw * cin_g
    run = uint64(kw * cin_g)  # one whole kernel row, when contiguous in x
    whole_rows = dw == 1 and cin_g == cin
    for q in range(rows):
        oh, ow = (p0 + q) // ow_all, (p0 + q) % ow_all
        iw0 = ow * sw - left
        dst_row = q * k
        inside = iw0 >= 0 and iw0 + (kw - 1) * dw < width
        for i in range(kh):
            ih = oh * sh - top + i * dh
            dst = uint64(dst_row + i * kw * cin_g)
            if ih < 0 or ih >= height:
                for e in range(run):
                    cols[dst + e] = 0
                continue
            row = x0 + (ih * width) * cin
            if whole_rows and inside:
                src = uint64(row + iw0 * cin)
                for e in range(run):
                    cols[dst + e] = xf[src + e]
                continue
            for j in range(kw):
                iw = iw0 + j * dw
                d = dst + uint64(j * cin_g)
                if iw < 0 or iw >= width:
                    for c in range(uint64(cin_g)):
                        cols[d + c] = 0
                else:
                    src = uint64(row + iw * cin)
                    for c in range(uint64(cin_g)):
                        cols[d + c] = xf[src + c]


@njit(cache=True)
def bias_activate_cols(c, c_off, ldc, rows, cols, bias, bias_off, hard_swish, lo, hi):
    """c[r, j] = act(c[r, j] + bias[bias_off + j]) for a rows×cols block of flat ``c``
    (block start ``c_off``, row stride ``ldc``): ``bias_activate_rows`` with the bias
    along the columns, the channels of an NHWC tile."""
    bv = bias[bias_off : bias_off + cols]
    for r in range(rows):
        row = c[c_off + r * ldc : c_off + r * ldc + cols]  # a view: indices provably >= 0
        if hard_swish:
            for j in range(cols):
                v = row[j] + bv[j]
                row[j] = v * hard_swish_gate(v)
        else:
            for j in range(cols):
                v = row[j] + bv[j]
                v = lo if v < lo else v
                row[j] = hi if v > hi else v
