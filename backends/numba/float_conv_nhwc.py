"""Float conv2d kernels on channels-last (NHWC) activations: no transposes around them.

For x [N, H, W, C_in] and out [N, OH, OW, C_out] (float32 or float64), weights as the IR
gives them (OIHW [C_out, C_in/group, KH, KW]) and bias [C_out], with the fused activation
of ``float_activation.activation_args`` (hard_swish flag, lo, hi). The kernels that
``plan_conv2d_nhwc`` returns re-lay the weights out themselves, once per call, into a
table (small next to the conv's work), so they need no preparation; for constant weights
``pack_conv2d_nhwc`` builds those tables once and returns the kernel that runs on them
(``kernels_conv`` binds that one). Three forms, chosen by ``plan_conv2d_nhwc`` from the
shapes and attributes:

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
  kernel rows inside the input, so padding rows cost nothing; each border pixel (a kernel
  column outside the input) takes it alone, with a list of only its taps inside. Only generic vector
  operations are used (fma, fdiv, fadd, fmul, fcmp/select), which LLVM legalises to
  AVX-512, AVX2 or any other vector unit. The channel tail past the last whole vector (all
  channels when there is none) takes ``_dw_plain``: the bias, then each tap (multiply-add,
  FMA with ``contract``) over the pixels where it reads inside the input, then the
  activation. With a depth multiplier > 1 a task is (image, output row, channel block of
  64, then 16, then the rest); its output row segment (at most 64 pixels × the block) is
  the accumulator, in place in ``out``: set to the bias, then each valid kernel row adds
  its taps, three per pass, over the pixels where all three fall inside the input (the
  edge pixels take them one at a time), then the activation; the input rows of a task are
  first expanded (output channel oc reads input channel oc // mult) into a scratch. Tasks
  go in at most 64 contiguous chunks over Numba's threads, each chunk allocating its
  scratch once. With depth multiplier 1 the tables (taps, bias copy, (lo, hi)) are
  ``depthwise_tables``, and ``depthwise_packed_nhwc`` the kernel on them.
* **products** (every other conv: pointwise, the 3×3 stride-2 stem, grouped, strided),
  float32: ``conv_tiles_nhwc`` packs the weights and bias into the table of
  ``float_gemm_nhwc`` (per group, panels of up to ``MAX_VECTORS`` channel vectors of
  ``LANES`` float32, rows of K in (kernel row, kernel column, channel) order, the bias row
  first) and
  ``conv_packed_nhwc`` runs its register-tile micro-kernel (rows × channel vectors of FMA
  accumulators, bias, activation and store in registers) straight into the NHWC rows of
  ``out``. Pointwise (1×1, stride 1, no padding): the rows of x (all images' pixels) are
  the product's rows, read in place, in tasks of ``TILES_ROWS`` pixels × one panel. With
  one group and dw = 1 (the stem, strided 1×1, any KH × KW): a task is an output row; its
  interior pixels read their kernel rows inside the input in place (each a run of
  KW·C_in values, padding rows skipped), its border pixels are gathered by im2col.
  Otherwise (grouped, dilated along the width): im2col of ``TILES_ROWS`` (or fewer, to fit
  ``TILES_SCRATCH`` bytes) output pixels of one image per group into a scratch, then the
  micro-kernel.
* **OpenBLAS products** (float64, or ``path=PATH_BLAS``): ``conv_gemm_nhwc``, out[P, O] =
  X[P, K] @ W[O, K]ᵀ per group through ``float_blas.gemm_flat`` (W transposed in the call),
  in tiles of ``tile`` pixel rows so that the bias and activation pass reads a tile still
  in cache: with ``pointwise`` the NHWC rows of x themselves, else an im2col per tile of
  one image and group (the weights re-laid out to OHWI, the im2col row's order).

Threads: the depthwise and register-tile kernels compute each output element in one task,
in a fixed order; the OpenBLAS products are ``gemm_flat``'s, whose result is the same bits
at any thread count (its fixed blocks over Numba's threads), and the epilogues are serial.
So results do not depend on ``numba.set_num_threads``. Innermost loops are unit stride and
index with uint64, so Numba emits no wraparound selects and LLVM vectorises them.

Bias and activation are the arithmetic of ``float_activation.bias_activate_rows``: v = acc
+ b, then the clamp to [lo, hi] (keeping nan) or v · hard_swish_gate(v) (the depthwise
kernels start the sums at the bias instead of adding it last). Sums are in a different
order from the NCHW kernels' and fused (one rounding per multiply-add), so results agree
with them to float rounding, not bit for bit. The register-tile products also start their
sums at the bias. After editing the micro-kernel, delete
``backends/numba/__pycache__/*float_conv_nhwc*.nb[ic]`` (and ``*float_gemm_nhwc*`` for the
product's).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from irc.backends.numba.float_activation import hard_swish_gate
from irc.backends.numba.float_blas import gemm_flat
from irc.backends.numba.float_gemm_nhwc import LANES as _LANES
from irc.backends.numba.float_gemm_nhwc import (
    activate_ir,
    gemm_panels,
    gemm_rows,
    pack_weights,
    packed_table,
    panel_vectors,
    table_size,
)
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
# ``path`` of plan_conv2d_nhwc: pick by dtype, or force OpenBLAS or the register tiles
PATH_AUTO, PATH_BLAS, PATH_TILES = 0, 1, 2
# register-tile products: output pixel rows per task (a multiple of every tile's rows), and
# the im2col scratch budget (bytes) per task of the general form
TILES_ROWS = 192
TILES_SCRATCH = 1 << 15
_SCRATCH_CHUNKS = 16  # chunks (one scratch each) of the im2col tasks


def plan_conv2d_nhwc(x_shape, w_shape, out_shape, strides, pads, dilations, group, hard_swish,
                     lo, hi, itemsize=4, path=PATH_AUTO):  # fmt: skip
    """(kernel, params) for a conv2d on NHWC shapes: call ``kernel(x, w, bias, out,
    *params)``. ``pads`` is [top, left, bottom, right]; (hard_swish, lo, hi) as
    ``float_activation.activation_args`` gives them; ``itemsize`` the element size;
    ``path`` (``PATH_*``) forces the product of a non-depthwise float32 conv (float64 ones
    always take OpenBLAS's)."""
    cin = x_shape[3]
    cout, cin_g, kh, kw = w_shape
    oh, ow = out_shape[1], out_shape[2]
    sh, sw = strides
    top, left = pads[0], pads[1]
    dh, dw = dilations
    if cin_g == 1 and group == cin:
        jit = depthwise_tiles_nhwc if cout == cin else depthwise_conv_nhwc
        return jit, (sh, sw, top, left, dh, dw, hard_swish, lo, hi)
    pointwise = kh == kw == 1 and (sh, sw) == (1, 1) and not any(pads)
    k = cin_g * kh * kw
    if itemsize == 4 and path != PATH_BLAS:
        vectors = panel_vectors(cout // group)
        tile = TILES_ROWS if pointwise else min(TILES_ROWS, max(1, TILES_SCRATCH // (4 * k)))
        params = (sh, sw, top, left, dh, dw, group, pointwise, vectors, tile, hard_swish, lo, hi)
        return conv_tiles_nhwc, params
    per_row = (cout + (cin if pointwise else k)) * itemsize
    pixels = x_shape[0] * oh * ow if pointwise else oh * ow
    tile = conv_tile(pixels, per_row)
    params = (sh, sw, top, left, dh, dw, group, pointwise, tile, hard_swish, lo, hi)
    return conv_gemm_nhwc, params


def pack_conv2d_nhwc(kernel, params, w, bias):
    """(kernel, params) running the conv that ``plan_conv2d_nhwc`` planned as (``kernel``,
    ``params``) with the weights ``w`` and ``bias`` fixed now: call ``kernel(x, out,
    *params)``. The packed weight table of ``conv_tiles_nhwc`` (as ``float_gemm_nhwc.packed_table``)
    or the tap table of a depthwise conv with depth multiplier 1 (``depthwise_tables``) is
    built here, once. None for the other kernels (nothing to prepare)."""
    _, _, kh, kw = w.shape
    if kernel is conv_tiles_nhwc:
        sh, sw, top, left, dh, dw, group, pointwise, vectors, tile, hs, lo, hi = params
        table = packed_table(w, bias, group, vectors)
        packed = (table, sh, sw, top, left, dh, dw, group, kh, kw, pointwise, vectors, tile)
        return conv_packed_nhwc, packed + (hs, lo, hi)
    if kernel is depthwise_tiles_nhwc:
        sh, sw, top, left, dh, dw, hs, lo, hi = params
        tables = depthwise_tables(w, bias, w.dtype, lo, hi)
        return depthwise_packed_nhwc, tables + (kh, kw, sh, sw, top, left, dh, dw, hs, lo, hi)
    return None


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
_DW_SIG_ARGS = 10  # the micro-kernel's intp arguments, after the array giving its dtype


def _make_dw_kernel(groups, hs):
    """An intrinsic ``(like, taps, ntaps, goff, pix, npix, bias, params, out, out_pix,
    blocks)``: ``npix`` output pixels of one output row, ``blocks`` consecutive blocks of
    ``groups`` channel vectors (64 bytes each, of ``like``'s float dtype), the first at
    byte offset ``goff``, all addresses and strides in bytes; as follows for each block's
    offset goff.

    ``taps`` holds ``ntaps`` pairs (x, w) of addresses: tap t reads the input vectors at
    ``x + goff + q·pix`` for pixel q, its weights at ``w + goff``. The sums start at the
    bias (``bias + goff``), take one ``llvm.fma`` per tap, pixel and vector, then the
    activation (``hs``: v·hard_swish_gate(v), else the clamp to params[0] .. params[1],
    keeping nan) and go to ``out + goff + q·out_pix``.
    """

    @intrinsic
    def kernel(typingctx, like, taps, ntaps, goff, pix, npix, bias, params, out, out_pix, blocks):
        wide = like.dtype == types.float64
        sig = types.void(like, *(types.intp,) * _DW_SIG_ARGS)

        def codegen(context, builder, signature, args):
            _, taps, ntaps, goff0, pix, npix, bias, params, out, out_pix, blocks = args
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

            def block(blk, carried):
                goff = builder.add(goff0, builder.mul(blk, _const(groups * _VBYTES)))
                bias_at = builder.add(bias, goff)
                bias_v = [_load(builder, bias_at, _const(_VBYTES * k), vty) for k in range(groups)]
                out_at = builder.add(out, goff)

                def activate(v):
                    return activate_ir(builder, v, hs, low, high)

                def pixels(q0, tile):
                    """Accumulate, activate and store pixels q0 .. q0 + tile."""
                    x_q0 = builder.add(goff, builder.mul(q0, pix))

                    def tap(t, accs_in):
                        acc = list(accs_in)
                        at = builder.mul(t, _const(16))
                        xa = builder.add(_load(builder, taps, at, _I64), x_q0)
                        wa = builder.add(
                            _load(builder, taps, builder.add(at, _const(8)), _I64), goff
                        )
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
                return carried

            _loop(builder, blocks, [], block)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_k1, _k2 = _make_dw_kernel(1, False), _make_dw_kernel(2, False)
_k1_hs, _k2_hs = _make_dw_kernel(1, True), _make_dw_kernel(2, True)


@njit(cache=True)
def _run_dw_kernel(vecs, hs, x, table, taps, ntaps, goff, pix, npix, bias, params, out, o_off,
                   out_pix):  # fmt: skip
    """The micro-kernel over ``vecs`` channel vectors from byte offset ``goff`` (in blocks
    of two, then one for an odd last vector), on the arrays themselves (so that they stay
    alive during the call; Numba may free an array after its last use even if its address
    is in use): ``taps`` (addresses into ``x`` and the weight ``table``), ``bias``,
    ``params`` and ``out`` from element ``o_off`` on (byte offsets and strides
    otherwise)."""
    if table.size == 0:  # keeps ``table`` referenced up to here
        return
    pairs = vecs // 2
    t, b, p = taps.ctypes.data, bias.ctypes.data, params.ctypes.data
    o = out.ctypes.data + o_off * out.itemsize
    odd = goff + pairs * 2 * _VBYTES
    if hs:
        if pairs > 0:
            _k2_hs(x, t, ntaps, goff, pix, npix, b, p, o, out_pix, pairs)
        if vecs % 2:
            _k1_hs(x, t, ntaps, odd, pix, npix, b, p, o, out_pix, 1)
    else:
        if pairs > 0:
            _k2(x, t, ntaps, goff, pix, npix, b, p, o, out_pix, pairs)
        if vecs % 2:
            _k1(x, t, ntaps, odd, pix, npix, b, p, o, out_pix, 1)


# ------------------------------------------------------------------------------ depthwise


@njit(cache=True)
def depthwise_conv_nhwc(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi):
    """out = act(depthwise conv of NHWC x [N, H, W, C] with w [C·mult, 1, kh, kw] + bias)
    into NHWC out [N, OH, OW, C·mult].

    Strides (sh, sw), leading pads (top, left) and dilations (dh, dw); the trailing pads are
    implied by out's shape. hs, lo, hi: the fused activation (``float_activation``).
    """
    if w.shape[0] == x.shape[3]:
        depthwise_tiles_nhwc(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi)
    else:
        _depthwise_rows(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi)


@njit(cache=True)
def depthwise_tiles_nhwc(x, w, bias, out, sh, sw, top, left, dh, dw, hs, lo, hi):
    """``depthwise_conv_nhwc`` with depth multiplier 1: the weights and bias prepared for
    this call (``depthwise_tables``), then ``depthwise_packed_nhwc``."""
    table, bv, params = depthwise_tables(w, bias, x.dtype, lo, hi)
    _, _, kh, kw = w.shape
    depthwise_packed_nhwc(x, out, table, bv, params, kh, kw, sh, sw, top, left, dh, dw, hs, lo,
                          hi)  # fmt: skip


@njit(cache=True)
def depthwise_tables(w, bias, dtype, lo, hi):
    """(table, bias, params) of a depthwise conv with depth multiplier 1 in ``dtype``: the
    weights w [C, 1, kh, kw] as [tap, C], a copy of the bias, and (lo, hi)."""
    cout, _, kh, kw = w.shape
    taps = kh * kw
    table = np.empty(taps * cout, dtype=dtype)  # [tap, channel]
    wf = w.reshape(w.size)
    for oc in range(cout):
        for t in range(taps):
            table[t * cout + oc] = wf[oc * taps + t]
    bv = np.empty(cout, dtype=dtype)
    bv[:] = bias
    params = np.empty(2, dtype=dtype)
    params[0], params[1] = lo, hi
    return table, bv, params


@njit(cache=True, parallel=True)
def depthwise_packed_nhwc(x, out, table, bv, params, kh, kw, sh, sw, top, left, dh, dw, hs, lo,
                          hi):  # fmt: skip
    """``depthwise_conv_nhwc`` with depth multiplier 1 on the prepared weights
    (``depthwise_tables``; kernel kh × kw): the micro-kernel on the whole channel vectors
    (the interior pixels of a row together, each border pixel alone with only its taps
    inside the input), ``_dw_plain`` on the channel tail (all channels when there is no
    whole vector)."""
    n, height, width, cin = x.shape
    cout = out.shape[3]
    oh_all, ow_all = out.shape[1], out.shape[2]
    taps = kh * kw
    size = x.itemsize
    lanes = _VBYTES // size
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
                _run_dw_kernel(vecs, hs, x, table, ptrs, nt, 0, sw * cin * size, q_hi - q_lo, bv,
                               params, out, o_off, cout * size)  # fmt: skip
                _dw_plain(xf, table, bv, of, b, r, q_lo, q_hi, cv, cout, height, width, cin,
                          cout, kh, kw, sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo,
                          hi)  # fmt: skip
            for q0, q1 in ((0, q_lo), (q_hi, ow_all)):
                if cv == 0:
                    _dw_plain(xf, table, bv, of, b, r, q0, q1, 0, cout, height, width, cin, cout,
                              kh, kw, sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo,
                              hi)  # fmt: skip
                    continue
                for q in range(q0, q1):  # a border pixel: the micro-kernel on its own taps
                    nt = 0
                    for i in range(kh):
                        ih = r * sh - top + i * dh
                        if ih < 0 or ih >= height:
                            continue
                        for j in range(kw):
                            iw = q * sw + j * dw - left
                            if iw < 0 or iw >= width:
                                continue
                            at = ((b * height + ih) * width + iw) * cin
                            ptrs[2 * nt] = x.ctypes.data + at * size
                            ptrs[2 * nt + 1] = table.ctypes.data + (i * kw + j) * cout * size
                            nt += 1
                    o_off = ((b * oh_all + r) * ow_all + q) * cout
                    _run_dw_kernel(vecs, hs, x, table, ptrs, nt, 0, 0, 1, bv, params, out, o_off,
                                   cout * size)  # fmt: skip
                    _dw_plain(xf, table, bv, of, b, r, q, q + 1, cv, cout, height, width, cin,
                              cout, kh, kw, sh, sw, top, left, dh, dw, ow_all, oh_all, hs, lo,
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


# ------------------------------------------------------------------ register-tile products


@njit(cache=True)
def conv_tiles_nhwc(x, w, bias, out, sh, sw, top, left, dh, dw, group, pointwise, vectors,
                    tile, hs, lo, hi):  # fmt: skip
    """out = act(conv(x, w) + bias) for float32 NHWC x, OIHW w, NHWC out with the
    register-tile micro-kernel (``float_gemm_nhwc``): the weights and bias packed into a
    table for this call, then ``conv_packed_nhwc``."""
    cout, cin_g, kh, kw = w.shape
    table = np.empty(table_size(cout, group, cin_g * kh * kw), dtype=np.float32)
    pack_weights(w, bias, group, vectors, table)
    conv_packed_nhwc(x, out, table, sh, sw, top, left, dh, dw, group, kh, kw, pointwise,
                     vectors, tile, hs, lo, hi)  # fmt: skip


@njit(cache=True, parallel=True)
def conv_packed_nhwc(x, out, table, sh, sw, top, left, dh, dw, group, kh, kw, pointwise, vectors,
                     tile, hs, lo, hi):  # fmt: skip
    """out = act(conv(x, w) + b) for float32 NHWC x and out, the weights and bias packed in
    ``table`` (``float_gemm_nhwc.pack_weights`` with ``vectors`` per panel).

    Three forms, each task's output pixels computed by the micro-kernel over all of K:
    pointwise, tasks of ``tile`` pixels (of all images) × one group × one panel, the input
    rows read in place; with one group and dw = 1 (the stem, strided 1×1), tasks of one
    output row, whose interior pixels (every kernel column inside the input) read their
    valid kernel rows in place (a run of kw·C_in values each) and whose border pixels go
    through ``_im2col_nhwc``; otherwise tasks of ``tile`` output pixels of one image,
    gathered by ``_im2col_nhwc`` per group. Tasks are dealt into contiguous chunks over
    Numba's threads (a scratch per chunk), so every output element is computed by one
    task, in a fixed order.
    """
    n, height, width, cin = x.shape
    cout = out.shape[3]
    oh_all, ow_all = out.shape[1], out.shape[2]
    cin_g = cin // group
    og, k = cout // group, cin_g * kh * kw
    nvec = -(-og // _LANES)
    panels = -(-nvec // vectors)
    g_size = nvec * _LANES * (k + 1)
    lo32, hi32 = np.float32(lo), np.float32(hi)
    xa, oa = x.ctypes.data, out.ctypes.data
    if pointwise:
        pixels = n * height * width
        tiles = -(-pixels // tile)
        tasks = tiles * group * panels
        chunks = min(tasks, _CHUNKS)
        for chunk in prange(chunks):
            for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
                t, rest = task // (group * panels), task % (group * panels)
                g, pn = rest // panels, rest % panels
                p0 = t * tile
                rows = min(tile, pixels - p0)
                v0 = pn * vectors
                vp = min(vectors, nvec - v0)
                rem = og - (v0 + vp - 1) * _LANES
                bias = table.ctypes.data + (g * g_size + v0 * _LANES * (k + 1)) * 4
                gemm_rows(xa + (p0 * cin + g * cin_g) * 4, cin * 4, rows, 1, k, 0, bias,
                          bias + vp * _LANES * 4, vp, oa + (p0 * cout + g * og + v0 * _LANES) * 4,
                          cout * 4, rem, hs, lo32, hi32)  # fmt: skip
        return
    xf = x.reshape(x.size)
    if group == 1 and dw == 1:
        q_lo = _tap_range(0, dw, left, sw, width, 0, ow_all)[0]
        q_hi = _tap_range(kw - 1, dw, left, sw, width, 0, ow_all)[1]
        if q_hi <= q_lo:
            q_lo = q_hi = ow_all
        run = kw * cin  # one kernel row of a pixel: contiguous in x
        tasks = n * oh_all
        chunks = min(tasks, _SCRATCH_CHUNKS)
        for chunk in prange(chunks):
            cols = np.empty(max(1, (q_lo + ow_all - q_hi) * k), dtype=np.float32)
            for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
                b, r = task // oh_all, task % oh_all
                o_row = oa + (b * oh_all + r) * ow_all * cout * 4
                i0, i1 = 0, 0  # the kernel rows inside the input
                for i in range(kh):
                    ih = r * sh - top + i * dh
                    if ih < 0:
                        i0 = i + 1
                    elif ih < height:
                        i1 = i + 1
                i1 = max(i0, i1)
                if q_hi > q_lo:
                    ih0 = r * sh - top + i0 * dh
                    xs = xa + ((b * height + ih0) * width + q_lo * sw - left) * cin * 4
                    gemm_panels(xs, sw * cin * 4, q_hi - q_lo, i1 - i0, run, dh * width * cin * 4,
                                table, 0, k, i0 * run, cout, vectors, o_row + q_lo * cout * 4,
                                cout * 4, hs, lo32, hi32)  # fmt: skip
                for q0, q1 in ((0, q_lo), (q_hi, ow_all)):
                    if q1 > q0:
                        _im2col_nhwc(xf, b * height * width * cin, height, width, cin, cin, kh, kw,
                                     sh, sw, top, left, dh, dw, ow_all, r * ow_all + q0, q1 - q0,
                                     cols)  # fmt: skip
                        gemm_panels(cols.ctypes.data, k * 4, q1 - q0, 1, k, 0, table, 0, k, 0,
                                    cout, vectors, o_row + q0 * cout * 4, cout * 4, hs, lo32,
                                    hi32)  # fmt: skip
            if cols.size < 0:  # keeps ``cols`` referenced after the products
                cols[0] = 0
        return
    pixels = oh_all * ow_all
    tiles = -(-pixels // tile)
    tasks = n * tiles
    chunks = min(tasks, _SCRATCH_CHUNKS)
    for chunk in prange(chunks):
        cols = np.empty(tile * k, dtype=np.float32)
        for task in range(chunk * tasks // chunks, (chunk + 1) * tasks // chunks):
            b, t = task // tiles, task % tiles
            p0 = t * tile
            rows = min(tile, pixels - p0)
            for g in range(group):
                _im2col_nhwc(xf, b * height * width * cin + g * cin_g, height, width, cin, cin_g,
                             kh, kw, sh, sw, top, left, dh, dw, ow_all, p0, rows,
                             cols)  # fmt: skip
                gemm_panels(cols.ctypes.data, k * 4, rows, 1, k, 0, table, g * g_size, k, 0, og,
                            vectors, oa + ((b * pixels + p0) * cout + g * og) * 4, cout * 4, hs,
                            lo32, hi32)  # fmt: skip
        if cols.size < 0:  # keeps ``cols`` referenced after the products
            cols[0] = 0
