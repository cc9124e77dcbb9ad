"""Resize kernels: ONNX Resize in nearest and linear modes, as ``irc.reference.resize``.

Coordinates, nearest rounding and linear taps come from the reference's own functions at
bind time, so both compute from identical float32 tables. Nearest resize is then an index
remap; linear resize blends one changed axis at a time in the reference's axis order, with
float32 products and sums in the same order, so the results agree to the last bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from irc.backends.numba.float_common import float_dtype, static_shape
from irc.backends.numba.kernel_table import kernel_builder
from irc.backends.numba.kernels_movement import remap_kernel
from irc.ir import Op
from irc.reference.resize import linear_taps, nearest_indices, source_coordinates


@njit(cache=True)
def lerp_axis(src, dst, outer, in_len, out_len, inner, low, high, w_low, w_high):
    """dst[o, j, :] = src[o, low[j], :] * w_low[j] + src[o, high[j], :] * w_high[j]."""
    for o in range(outer):
        for j in range(out_len):
            a = (o * in_len + low[j]) * inner
            b = (o * in_len + high[j]) * inner
            k = (o * out_len + j) * inner
            wl, wh = w_low[j], w_high[j]
            for i in range(inner):
                dst[k + i] = src[a + i] * wl + src[b + i] * wh


def changed_axes(op: Op) -> list[tuple[int, int, int, float]]:
    """(axis, in_len, out_len, scale) of every axis the reference resamples, in order."""
    in_shape = static_shape(op, op.operands[0], "input")
    out_shape = static_shape(op, op.result, "result")
    axes = []
    for axis, (in_len, out_len, scale) in enumerate(zip(in_shape, out_shape, op.attrs["scales"])):
        if not (scale == 1.0 and out_len == in_len):
            axes.append((axis, in_len, out_len, scale))
    return axes


@kernel_builder("resize")
def build_resize(op: Op):
    """Nearest: one remap over all axes. Linear: one blend pass per changed axis."""
    in_shape = static_shape(op, op.operands[0], "input")
    mode = op.attrs["coordinate_transformation_mode"]
    axes = changed_axes(op)
    if op.attrs["mode"] == "nearest":
        maps = [np.arange(n, dtype=np.int64) for n in in_shape]
        for axis, in_len, out_len, scale in axes:
            coords = source_coordinates(out_len, in_len, scale, mode)
            maps[axis] = nearest_indices(coords, in_len, op.attrs["nearest_mode"]).astype(np.int64)
        return remap_kernel(maps, in_shape, op.operands[0].type.dtype.numpy.type(0))

    dtype = float_dtype(op)  # linear blends run on f32 and f64 only
    passes, shape = [], list(in_shape)
    for k, (axis, in_len, out_len, scale) in enumerate(axes):
        coords = source_coordinates(out_len, in_len, scale, mode)
        low, high, w_low, w_high = linear_taps(coords, in_len)
        outer = math.prod(shape[:axis])
        inner = math.prod(shape[axis + 1 :])
        shape[axis] = out_len
        # intermediate results live in buffers owned by this kernel; the last writes `out`
        scratch = np.empty(shape, dtype) if k < len(axes) - 1 else None
        taps = tuple(t.astype(np.int64) for t in (low, high))
        taps += tuple(w.astype(dtype) for w in (w_low, w_high))
        passes.append((outer, in_len, out_len, inner, taps, scratch))

    def run(x, out):
        src = x
        for i, (outer, in_len, out_len, inner, taps, scratch) in enumerate(passes):
            dst = out if i == len(passes) - 1 else scratch
            lerp_axis(src.reshape(-1), dst.reshape(-1), outer, in_len, out_len, inner, *taps)
            src = dst
        if not passes:
            np.copyto(out, x)

    return run
