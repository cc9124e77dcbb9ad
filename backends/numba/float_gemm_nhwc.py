"""Register-blocked float32 product micro-kernel for channels-last convs: out rows = act(X @ W + b).

For a block of at most R activation rows x[r, 0:K] (float32, contiguous along K, rows at a
byte stride: an NHWC input's pixels or an im2col scratch) and one *panel* of V channel
vectors (``LANES`` float32 output channels each) of a packed weight table, the kernel keeps
R·V vector accumulators in registers, started at the panel's bias vectors; per k it loads
the panel's V weight vectors once, broadcasts x[r, k] of every row and adds their products
with one ``llvm.fma`` each; then applies the fused activation (v · hard_swish_gate(v), or
the clamp to [lo, hi] keeping nan) in registers and stores each row's V vectors into its
NHWC output row (a masked store for the last vector when the panel ends inside it).

Packed table (``pack_weights``): per group, the output channels in panels of ``vectors``
channel vectors (the last panel may have fewer), each panel a [1 + K, width] block of
float32 (width = its vectors · ``LANES``): row 0 the bias, row 1 + k the weights of
reduction index k, zero past the group's channels. k runs over (kernel row, kernel column,
input channel), the order of an NHWC im2col row (for a 1×1 conv just the input channel).

A block of fewer than R rows (the last of a product) reads its missing rows as copies of
its last row and stores them onto that row (the same values), so no row past the block is
touched. Only generic vector operations are emitted (fma, fdiv, fmul, fadd, fcmp/select,
masked store), so LLVM legalises them to AVX-512, AVX2 or any vector unit; ``LANES`` and
the tiles (``TILES``) are picked for the host's register file (32 × 512-bit with
AVX-512F, else 16 × 256-bit). After editing the micro-kernel, delete
``backends/numba/__pycache__/*float_gemm_nhwc*.nb[ic]`` and the cache files of its callers.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from irc.backends.numba.int_simd import _I32, _const, _load, _loop, _shuffle, _store, target_has

_F32 = ir.FloatType()
AVX512 = target_has("avx512f")
LANES = 16 if AVX512 else 8  # float32 output channels per vector
# rows per register tile by channel vectors per panel: R·V accumulators, V weight vectors
# and a broadcast within the register file
TILES = {1: 16, 2: 12, 3: 8, 4: 6} if AVX512 else {1: 8, 2: 6, 3: 4}
MAX_VECTORS = max(TILES)


def panel_vectors(cout_g: int) -> int:
    """Channel vectors per panel for ``cout_g`` output channels per group: all of them when
    they fit one tile, else the widest tile that divides them, else the widest."""
    nvec = -(-cout_g // LANES)
    if nvec <= MAX_VECTORS:
        return nvec
    for v in range(MAX_VECTORS, 1, -1):
        if nvec % v == 0:
            return v
    return MAX_VECTORS


def activate_ir(builder, v, hard_swish, low, high):
    """The fused activation of float vector ``v`` in LLVM IR: v · hard_swish_gate(v) (v / 6
    + 1/2 clamped to [0, 1], nan kept) when ``hard_swish``, else v clamped to the vectors
    [``low``, ``high``]."""
    ty = v.type

    def splat(value):
        return ir.Constant(ty, [value] * ty.count)

    if hard_swish:
        g = builder.fadd(builder.fdiv(v, splat(6.0)), splat(0.5))
        g = builder.select(builder.fcmp_ordered("<", g, splat(0.0)), splat(0.0), g)
        g = builder.select(builder.fcmp_ordered(">", g, splat(1.0)), splat(1.0), g)
        return builder.fmul(v, g)
    v = builder.select(builder.fcmp_ordered("<", v, low), low, v)
    return builder.select(builder.fcmp_ordered(">", v, high), high, v)


@njit(cache=True)
def table_size(cout, group, k):
    """float32 elements of the packed table of ``cout`` channels in ``group`` groups, K
    = ``k`` per group."""
    return group * -(-(cout // group) // LANES) * LANES * (k + 1)


def _make_block(rows, vectors, hs):
    """An intrinsic ``(xs, xs_rs, nrows, segs, seg_len, seg_rs, bias, wt, out, out_rs, rem,
    lo, hi)`` (i64 values, then float32 lo, hi; addresses and strides in bytes): for row r <
    rows of the block (row min(r, nrows - 1) in memory), with a panel of ``vectors`` channel
    vectors whose bias row is at ``bias`` and weight row j at ``wt + j·width``,

        out[r, 0 : vectors·LANES] = act(bias + Σ_{s < segs, j < seg_len} x[r, s, j] ·
                                              w[s·seg_len + j, :])

    where x[r, s, j] is the float32 at ``xs + r·xs_rs + s·seg_rs + 4j`` (a row of K =
    segs·seg_len values in ``segs`` contiguous runs: one run for a matrix row, a kernel row
    each for a conv read in place) and out row r starts at ``out + r·out_rs``; only ``rem``
    lanes (1 .. LANES) of the last vector are stored. ``hs``: the hard-swish activation,
    else the clamp to [lo, hi] (nan kept)."""
    lanes = LANES
    vty = ir.VectorType(_F32, lanes)
    width = vectors * lanes * 4  # bytes per panel row

    @intrinsic
    def block(typingctx, xs, xs_rs, nrows, segs, seg_len, seg_rs, bias, wt, out, out_rs, rem, lo,
              hi):  # fmt: skip
        sig = types.void(*(types.intp,) * 11, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            xs, xs_rs, nrows, segs, seg_len, seg_rs, bias, wt, out, out_rs, rem, lo, hi = args
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{lanes}f32"
            )

            def broadcast(value):
                v = builder.insert_element(ir.Constant(vty, None), value, ir.Constant(_I32, 0))
                return _shuffle(builder, v, v, [0] * lanes)

            def splat(value):
                return ir.Constant(vty, [value] * lanes)

            last = builder.sub(nrows, _const(1))
            x_rows, o_rows = [], []
            for r in range(rows):
                rr = _const(r)
                rr = builder.select(builder.icmp_signed("<", rr, last), rr, last)
                x_rows.append(builder.add(xs, builder.mul(rr, xs_rs)))
                o_rows.append(builder.add(out, builder.mul(rr, out_rs)))
            start = [_load(builder, bias, _const(4 * lanes * v), vty) for v in range(vectors)]
            seg_w = builder.mul(seg_len, _const(width))

            def segment(s, accs):
                x_seg = builder.mul(s, seg_rs)
                w_seg = builder.add(wt, builder.mul(s, seg_w))

                def step(j, accs):
                    accs = list(accs)
                    w_row = builder.add(w_seg, builder.mul(j, _const(width)))
                    wv = [_load(builder, w_row, _const(4 * lanes * v), vty) for v in range(vectors)]
                    at = builder.add(x_seg, builder.mul(j, _const(4)))
                    for r in range(rows):
                        xv = broadcast(_load(builder, x_rows[r], at, _F32))
                        for v in range(vectors):
                            t = r * vectors + v
                            accs[t] = builder.call(fma, [xv, wv[v], accs[t]])
                    return accs

                return _loop(builder, seg_len, accs, step)

            accs = _loop(builder, segs, start * rows, segment)
            low, high = broadcast(lo), broadcast(hi)

            vals = [activate_ir(builder, a, hs, low, high) for a in accs]
            for r in range(rows):
                for v in range(vectors - 1):
                    _store(builder, o_rows[r], _const(4 * lanes * v), vals[r * vectors + v])
            # the last vector: whole, or its first ``rem`` lanes
            off = _const(4 * lanes * (vectors - 1))
            full = builder.icmp_signed(">=", rem, _const(lanes))
            with builder.if_else(full, likely=True) as (whole, part):
                with whole:
                    for r in range(rows):
                        _store(builder, o_rows[r], off, vals[r * vectors + vectors - 1])
                with part:
                    i64v = ir.VectorType(ir.IntType(64), lanes)
                    idx = ir.Constant(i64v, list(range(lanes)))
                    rv = builder.insert_element(ir.Constant(i64v, None), rem, _const(0))
                    mask = builder.icmp_signed("<", idx, _shuffle(builder, rv, rv, [0] * lanes))
                    pty = vty.as_pointer()
                    store = cgutils.get_or_insert_function(
                        builder.module,
                        ir.FunctionType(ir.VoidType(), [vty, pty, _I32, mask.type]),
                        f"llvm.masked.store.v{lanes}f32.p0",
                    )
                    for r in range(rows):
                        ptr = builder.inttoptr(builder.add(o_rows[r], off), pty)
                        val = vals[r * vectors + vectors - 1]
                        builder.call(store, [val, ptr, ir.Constant(_I32, 4), mask])
            return context.get_dummy_value()

        return sig, codegen

    return block


# Module-level kernels (so that callers cache): by (vectors, hard_swish)
_b1, _b2, _b3 = (_make_block(TILES[v], v, False) for v in (1, 2, 3))
_h1, _h2, _h3 = (_make_block(TILES[v], v, True) for v in (1, 2, 3))
if MAX_VECTORS >= 4:
    _b4, _h4 = _make_block(TILES[4], 4, False), _make_block(TILES[4], 4, True)
else:  # pragma: no cover - hosts without AVX-512F: never called (panels of at most 3)
    _b4, _h4 = _b3, _h3
_R1, _R2, _R3 = TILES[1], TILES[2], TILES[3]
_R4 = TILES.get(4, TILES[3])


@njit(cache=True)
def tile_rows(vectors):
    """Rows per register tile of a panel of ``vectors`` channel vectors."""
    if vectors == 1:
        return _R1
    if vectors == 2:
        return _R2
    if vectors == 3:
        return _R3
    return _R4


@njit(cache=True)
def gemm_rows(xs, xs_rs, nrows, segs, seg_len, seg_rs, bias, wt, vectors, out, out_rs, rem, hs,
              lo, hi):  # fmt: skip
    """act(X @ W + b) for ``nrows`` rows (any count) against one panel of ``vectors`` channel
    vectors (bias row at ``bias``, weight rows from ``wt``), in register tiles of
    ``tile_rows(vectors)`` rows: the micro-kernel's arguments otherwise (addresses and
    strides in bytes, rows of ``segs`` runs of ``seg_len``, ``rem`` lanes of the last
    vector stored)."""
    rows = tile_rows(vectors)
    for r0 in range(0, nrows, rows):
        n = min(rows, nrows - r0)
        x0, o0 = xs + r0 * xs_rs, out + r0 * out_rs
        a = (x0, xs_rs, n, segs, seg_len, seg_rs, bias, wt, o0, out_rs, rem, lo, hi)
        if hs:
            if vectors == 1:
                _h1(*a)
            elif vectors == 2:
                _h2(*a)
            elif vectors == 3:
                _h3(*a)
            else:
                _h4(*a)
        elif vectors == 1:
            _b1(*a)
        elif vectors == 2:
            _b2(*a)
        elif vectors == 3:
            _b3(*a)
        else:
            _b4(*a)


@njit(cache=True)
def gemm_panels(xs, xs_rs, nrows, segs, seg_len, seg_rs, table, t_off, k, k0, cout_g, vectors,
                out, out_rs, hs, lo, hi):  # fmt: skip
    """act(X @ W_g + b_g) for ``nrows`` rows into ``cout_g`` output channels: every panel of
    one group's packed table (``table`` from element ``t_off``, K = ``k``, ``vectors`` per
    panel) over the rows, whose segs·seg_len values meet the weights of k = k0 on (the
    rows' other values being zero: kernel rows in the padding). Addresses and strides in
    bytes (``out``: row 0's first channel of the group); the caller keeps ``table``
    alive."""
    lanes = LANES
    nvec = -(-cout_g // lanes)
    base = table.ctypes.data + t_off * 4
    for v0 in range(0, nvec, vectors):
        vp = min(vectors, nvec - v0)
        rem = cout_g - (v0 + vp - 1) * lanes
        bias = base + v0 * lanes * (k + 1) * 4
        wt = bias + (1 + k0) * vp * lanes * 4
        gemm_rows(xs, xs_rs, nrows, segs, seg_len, seg_rs, bias, wt, vp, out + v0 * lanes * 4,
                  out_rs, rem, hs, lo, hi)  # fmt: skip


@njit(cache=True)
def pack_weights(w, bias, group, vectors, table):
    """Fill ``table`` (``table_size`` float32 elements) with OIHW ``w`` (contiguous) and
    ``bias`` in the packed layout: per group, panels of ``vectors`` channel vectors of
    [1 + K, width], the bias first, k in (kernel row, kernel column, input channel) order,
    zeros as padding. Written row by row of each panel (reading w down its columns)."""
    cout, cin_g, kh, kw = w.shape
    og, k = cout // group, cin_g * kh * kw
    lanes = LANES
    nvec = -(-og // lanes)
    wf = w.reshape(w.size)
    for g in range(group):
        gbase = g * nvec * lanes * (k + 1)
        for v0 in range(0, nvec, vectors):
            width = min(vectors, nvec - v0) * lanes
            base = gbase + v0 * lanes * (k + 1)
            o0 = g * og + v0 * lanes
            count = min(og - v0 * lanes, width)
            for col in range(width):
                table[base + col] = bias[o0 + col] if col < count else 0
            for i in range(kh):
                for j in range(kw):
                    for c in range(cin_g):
                        row = base + (1 + (i * kw + j) * cin_g + c) * width
                        src = o0 * k + (c * kh + i) * kw + j
                        for col in range(count):
                            table[row + col] = wf[src + col * k]
                        for col in range(count, width):
                            table[row + col] = 0


def packed_table(w: np.ndarray, bias: np.ndarray, group: int, vectors: int) -> np.ndarray:
    """The packed float32 table of ``w`` (OIHW) and ``bias``, panels of ``vectors``."""
    cout, cin_g, kh, kw = w.shape
    table = np.empty(table_size(cout, group, cin_g * kh * kw), np.float32)
    pack_weights(
        np.ascontiguousarray(w, np.float32),
        np.ascontiguousarray(bias, np.float32),
        group,
        vectors,
        table,
    )
    return table
