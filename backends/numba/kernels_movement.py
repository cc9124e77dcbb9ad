"""Data-movement kernels: concat, reshape, transpose, pad, slice, gather, shape, cast, constant,
expand, tile and range.

Transpose, pad, slice (and nearest resize, in ``kernels_resize``) are one kernel, ``remap``:
every output element reads the input at a sum of per-axis offsets, or takes a fill value.
The per-axis offset tables are built at bind time by applying numpy itself (the semantics
the reference uses) to index ranges, so the kernels cannot drift from the reference.

The njit kernels take flat (1-D) arrays and do index arithmetic themselves: kernel
functions pass ``a.reshape(-1)`` views, so Numba compiles one specialisation per element
type rather than one per (type, rank) combination, which keeps cold compiles short.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from irc.backends.numba.float_common import advance_outer_index, static_shape
from irc.backends.numba.kernel_table import BackendError, kernel_builder
from irc.ir import Op
from irc.reference.elementwise import cast as reference_cast
from irc.tensor import ElidedTensor
from irc.types import DType


@njit(cache=True)
def copy_flat(src, dst):
    """dst[:] = src (1-D arrays of one size)."""
    for i in range(dst.size):
        dst[i] = src[i]


@njit(cache=True)
def remap(src, dst, offsets, lens, fill, inner_run):
    """dst (C order) from src: element (i0, …, ik) reads src.flat[Σ offsets[a, ia]].

    A negative offset on any axis means ``fill``. ``inner_run`` says the last axis reads
    consecutive elements, so a row is a straight copy (which LLVM vectorises).
    """
    if dst.size == 0:
        return
    rank = lens.shape[0]
    inner = lens[rank - 1]
    last = offsets[rank - 1]
    idx = np.zeros(rank, np.int64)
    for row in range(dst.size // inner):
        base = 0
        valid = True
        for a in range(rank - 1):
            o = offsets[a, idx[a]]
            valid = valid and o >= 0
            base += o
        k = row * inner
        if not valid:
            for j in range(inner):
                dst[k + j] = fill
        elif inner_run:
            base += last[0]
            for j in range(inner):
                dst[k + j] = src[base + j]
        else:
            for j in range(inner):
                o = last[j]
                dst[k + j] = src[base + o] if o >= 0 else fill
        advance_outer_index(idx, lens, rank - 2)


@njit(cache=True)
def copy_columns(src, dst, rows, src_cols, dst_cols, col_offset):
    """dst viewed as [rows, dst_cols] gets src ([rows, src_cols]) at column ``col_offset``."""
    for r in range(rows):
        dst[r * dst_cols + col_offset : r * dst_cols + col_offset + src_cols] = src[
            r * src_cols : (r + 1) * src_cols
        ]


@njit(cache=True)
def take(data, indices, dst, outer, axis_len, inner):
    """dst[o, i, :] = data[o, indices[i], :] with negative indices counted from the end."""
    m = indices.size
    for i in range(m):
        j = indices[i]
        if j < 0:
            j += axis_len
        if j < 0 or j >= axis_len:
            raise IndexError("gather: an index is out of range for the gathered axis")
        for o in range(outer):
            at = (o * axis_len + j) * inner
            dst_at = (o * m + i) * inner
            dst[dst_at : dst_at + inner] = data[at : at + inner]


@njit(cache=True)
def cast_flat(src, dst):
    """dst = src converted elementwise, as numpy's astype: floats truncate toward zero,
    integers keep their low bits, and anything nonzero (NaN too) is True."""
    for i in range(dst.size):
        dst[i] = src[i]


# ------------------------------------------------------------------ bind-time helpers
def flat_kernel(kernel):
    """A kernel function applying a (src, dst) njit kernel to flat views of its arrays."""

    def run(x, out):
        kernel(x.reshape(-1), out.reshape(-1))

    return run


def c_strides(shape) -> list[int]:
    """Element strides of a C-contiguous array of ``shape``."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return strides[::-1]


def remap_tables(maps: list[np.ndarray], in_shape) -> tuple[np.ndarray, np.ndarray, bool]:
    """The (offsets, lens, inner_run) arguments of ``remap`` from per-axis index maps.

    ``maps[a][i]`` is the input index that output index i of axis a reads (-1: fill), and
    ``maps[a]`` may index any input axis's stride via ``in_shape`` order. A rank-0 array
    is treated as one element of rank 1.
    """
    if not maps:
        maps, in_shape = [np.zeros(1, np.int64)], (1,)
    strides = c_strides(in_shape)
    lens = np.array([len(m) for m in maps], np.int64)
    offsets = np.full((len(maps), max(1, int(lens.max()))), -1, np.int64)
    for a, (m, stride) in enumerate(zip(maps, strides)):
        offsets[a, : len(m)] = np.where(m >= 0, m * stride, -1)
    last = maps[-1]
    inner_run = bool(
        len(last) and last[0] >= 0 and np.array_equal(last, last[0] + np.arange(len(last)))
    )
    return offsets, lens, inner_run


def remap_kernel(maps: list[np.ndarray], in_shape, fill):
    """A kernel function running ``remap`` with tables built once, here."""
    offsets, lens, inner_run = remap_tables(maps, in_shape)

    def run(x, out):
        remap(x.reshape(-1), out.reshape(-1), offsets, lens, fill, inner_run)

    return run


def fill_value(op: Op, value: float):
    """``value`` as a scalar of the op's element type (how the reference casts it)."""
    return op.operands[0].type.dtype.numpy.type(value)


# ------------------------------------------------------------------ builders
@kernel_builder("reshape")
def build_reshape(op: Op):
    """A copy; the memory plan normally aliases reshape results and never calls this."""
    return flat_kernel(copy_flat)


@kernel_builder("constant")
def build_constant(op: Op):
    """Writes the constant into its result (the driver normally binds constants directly)."""
    value = op.attrs["value"]
    if isinstance(value, ElidedTensor):
        raise BackendError(f"op {op.label()}: the constant was dumped without its data")
    value = np.ascontiguousarray(value).reshape(-1)

    def run(out):
        copy_flat(value, out.reshape(-1))

    return run


@kernel_builder("transpose")
def build_transpose(op: Op):
    """Output axis k walks input axis perm[k], over the fewest axes that say the same."""
    shape, perm = merge_axes(static_shape(op, op.operands[0], "input"), op.attrs["perm"])
    if perm in ((1, 0), (0, 2, 1)):  # matrices transposed (NCHW <-> NHWC): blocked copies
        batches, rows, cols = (1, *shape) if len(shape) == 2 else shape
        bytewise = op.operands[0].type.dtype.numpy.itemsize == 1
        if bytewise and rows in INTERLEAVE:  # e.g. an image's 3 planes into RGB pixels
            interleave = INTERLEAVE[rows]

            def run_interleave(x, out):
                interleave(x.reshape(-1), out.reshape(-1), batches, cols)

            return run_interleave

        if rows > cols:  # e.g. NHWC -> NCHW: long output rows, written in tiles
            tile = 64 if bytewise else 32

            def run_tiles(x, out):
                transpose_tiles(x.reshape(-1), out.reshape(-1), batches, rows, cols, tile)

            return run_tiles

        def run_matrices(x, out):
            transpose_matrices(x.reshape(-1), out.reshape(-1), batches, rows, cols)

        return run_matrices
    strides = c_strides(shape)
    # Index maps are in output order and carry the input strides of the permuted axes.
    offsets = [np.arange(shape[p], dtype=np.int64) * strides[p] for p in perm]
    return remap_kernel(offsets, [1] * len(perm), fill_value(op, 0))


@njit(cache=True)
def transpose_matrices(xf, of, batches, rows, cols):
    """of[b, j, i] = xf[b, i, j] for ``batches`` matrices [rows, cols], in blocks of 64
    columns, so that each block's reads and writes stay in a few cache lines."""
    for b in range(batches):
        base = b * rows * cols
        for j0 in range(0, cols, 64):
            j1 = min(cols, j0 + 64)
            for i in range(rows):
                src = base + i * cols
                for j in range(j0, j1):
                    of[base + j * rows + i] = xf[src + j]


@njit(cache=True)
def transpose_tiles(xf, of, batches, rows, cols, tile):
    """``transpose_matrices`` in square tiles of ``tile``, each output row's part of a tile
    written as one contiguous run: for many rows and few columns (NHWC -> NCHW), where the
    column-blocked copy writes ``cols`` streams a whole output row apart, which alias in
    the cache when that row is a multiple of 4 KB."""
    for b in range(batches):
        base = b * rows * cols
        for i0 in range(0, rows, tile):
            i1 = min(rows, i0 + tile)
            for j0 in range(0, cols, tile):
                j1 = min(cols, j0 + tile)
                for j in range(j0, j1):
                    dst = base + j * rows
                    for i in range(i0, i1):
                        of[dst + i] = xf[base + i * cols + j]


def _make_interleave(rows: int):
    """An njit ``(xf, of, batches, cols)``: of[b, j, i] = xf[b, i, j] for ``rows`` planes of
    ``cols`` bytes, 16 columns at a time as one LLVM shuffle of the planes' 16-byte runs
    (LLVM lowers it to byte permutes), the last columns one by one."""

    @intrinsic
    def block(typingctx, src, cols, dst):
        sig = types.void(types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            src, cols, dst = args
            run = ir.VectorType(ir.IntType(8), 16)
            parts = []
            for i in range(rows):
                at = builder.add(src, builder.mul(cols, ir.Constant(ir.IntType(64), i)))
                parts.append(builder.load(builder.inttoptr(at, run.as_pointer()), align=1))
            while len(parts) > 1:  # concatenate pairwise (shuffles take equal types)
                if len(parts) % 2:
                    parts.append(ir.Constant(parts[0].type, None))
                width = parts[0].type.count
                both = ir.Constant(ir.VectorType(ir.IntType(32), 2 * width), list(range(2 * width)))
                parts = [
                    builder.shuffle_vector(parts[k], parts[k + 1], both)
                    for k in range(0, len(parts), 2)
                ]
            order = [i * 16 + j for j in range(16) for i in range(rows)]
            mask = ir.Constant(ir.VectorType(ir.IntType(32), len(order)), order)
            out = builder.shuffle_vector(parts[0], parts[0], mask)
            ptr = builder.inttoptr(dst, ir.VectorType(ir.IntType(8), 16 * rows).as_pointer())
            builder.store(out, ptr, align=1)
            return context.get_dummy_value()

        return sig, codegen

    @njit(cache=True)
    def interleave(xf, of, batches, cols):
        for b in range(batches):
            base = b * rows * cols
            j = 0
            while j + 16 <= cols:
                block(xf.ctypes.data + base + j, cols, of.ctypes.data + base + rows * j)
                j += 16
            for q in range(j, cols):
                for i in range(rows):
                    of[base + rows * q + i] = xf[base + i * cols + q]

    return interleave


INTERLEAVE = {rows: _make_interleave(rows) for rows in (2, 3, 4)}


def merge_axes(shape, perm) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An equivalent (shape, perm) without size-1 axes, input axes that stay neighbours in
    the output merged (a [1,4,34,28,28] swap of axes 1 and 2 is a [4,34,784] one)."""
    kept = [a for a in range(len(shape)) if shape[a] != 1]
    if not kept:
        return (1,), (0,)
    order = [a for a in perm if shape[a] != 1]
    runs: list[list[int]] = []
    for a in order:
        if runs and runs[-1][-1] + 1 == a:
            runs[-1].append(a)
        else:
            runs.append([a])
    by_first = sorted(runs, key=lambda run: run[0])
    merged = tuple(int(np.prod([shape[a] for a in run])) for run in by_first)
    return merged, tuple(by_first.index(run) for run in runs)


@kernel_builder("pad")
def build_pad(op: Op):
    """Index maps are numpy's own padding of 0..n-1 (cropped first, as the reference)."""
    in_shape = static_shape(op, op.operands[0], "input")
    pads, mode = op.attrs["pads"], op.attrs["mode"]
    rank = len(in_shape)
    maps = []
    for a, n in enumerate(in_shape):
        begin, end = pads[a], pads[a + rank]
        kept = np.arange(n, dtype=np.int64)[max(0, -begin) : n - max(0, -end)]
        width = (max(0, begin), max(0, end))
        try:
            if mode == "constant":
                maps.append(np.pad(kept, width, mode="constant", constant_values=-1))
            else:
                maps.append(np.pad(kept, width, mode=mode))
        except ValueError as e:
            raise BackendError(f"op {op.label()}: cannot pad axis {a}: {e}") from None
    return remap_kernel(maps, in_shape, fill_value(op, op.attrs["value"]))


@kernel_builder("slice")
def build_slice(op: Op):
    """Python slicing of 0..n-1 per listed axis gives the index maps."""
    in_shape = static_shape(op, op.operands[0], "input")
    maps = [np.arange(n, dtype=np.int64) for n in in_shape]
    a = op.attrs
    for start, end, axis, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        maps[axis] = maps[axis][slice(start, end, step)]
    return remap_kernel(maps, in_shape, fill_value(op, 0))


def concat_blocks(op: Op) -> tuple[int, int, list[tuple[int, int]]]:
    """A concat's result viewed as [rows, total] columns: (rows, total, and per operand its
    (columns, column offset))."""
    out_shape = static_shape(op, op.result, "result")
    axis = op.attrs["axis"] % len(out_shape)
    rows = int(np.prod(out_shape[:axis], dtype=np.int64))
    inner = int(np.prod(out_shape[axis + 1 :], dtype=np.int64))
    blocks, offset = [], 0
    for x in op.operands:
        cols = static_shape(op, x, "operand")[axis] * inner
        blocks.append((cols, offset))
        offset += cols
    return rows, offset, blocks


@kernel_builder("concat")
def build_concat(op: Op):
    """Each operand is a block of columns of the result viewed as [outer, axis * inner]."""
    rows, total, blocks = concat_blocks(op)

    def run(*arrays):
        flat = arrays[-1].reshape(-1)
        for x, (cols, col_offset) in zip(arrays, blocks):
            copy_columns(x.reshape(-1), flat, rows, cols, total, col_offset)

    return run


@kernel_builder("gather")
def build_gather(op: Op):
    """numpy.take along the axis; an out-of-range index raises IndexError at run time."""
    shape = static_shape(op, op.operands[0], "input")
    axis = op.attrs["axis"] % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    axis_len = shape[axis]

    def run(data, indices, out):
        take(data.reshape(-1), indices.reshape(-1), out.reshape(-1), outer, axis_len, inner)

    return run


@kernel_builder("shape")
def build_shape(op: Op):
    """Shapes are static here, so the result is known at bind time."""
    shape = static_shape(op, op.operands[0], "input")
    dims = np.array(shape[op.attrs["start"] : op.attrs["end"]], dtype=np.int64)

    def run(x, out):
        copy_flat(dims, out.reshape(-1))

    return run


@kernel_builder("cast")
def build_cast(op: Op):
    """Numba casts for ordinary types; numpy (the reference) for float16 and sub-byte types."""
    source, target = op.operands[0].type.dtype, op.result.type.dtype
    if target.is_sub_byte or DType.F16 in (source, target):
        to = op.attrs["to"]

        def run_numpy(x, out):
            # Numba has no float16 arithmetic and sub-byte types wrap at their own width.
            np.copyto(out, reference_cast(x, to=to))

        return run_numpy
    return flat_kernel(cast_flat)


@kernel_builder("expand")
def build_expand(op: Op):
    """Broadcast: index maps of 0 on axes the input has as 1 (or lacks), 0..n-1 elsewhere."""
    out_shape = static_shape(op, op.result, "result")
    in_shape = static_shape(op, op.operands[0], "input")
    padded = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    maps = [
        np.zeros(n, np.int64) if d == 1 else np.arange(n, dtype=np.int64)
        for d, n in zip(padded, out_shape)
    ]
    return remap_kernel(maps, padded, fill_value(op, 0))


@kernel_builder("tile")
def build_tile(op: Op):
    """numpy.tile of 0..n-1 per axis gives the index maps."""
    in_shape = static_shape(op, op.operands[0], "input")
    maps = [np.tile(np.arange(n, dtype=np.int64), r) for n, r in zip(in_shape, op.attrs["repeats"])]
    return remap_kernel(maps, in_shape, fill_value(op, 0))


@njit(cache=True)
def range_fill(start, delta, dst):
    """dst[i] = start + i·delta."""
    for i in range(dst.size):
        dst[i] = start + i * delta


@kernel_builder("range")
def build_range(op: Op):
    """start + i·delta (the op normally folds to a constant before it gets here)."""

    def run(start, limit, delta, out):
        range_fill(start.reshape(-1)[0], delta.reshape(-1)[0], out)

    return run
