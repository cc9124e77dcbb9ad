"""Reduction kernels: softmax, reduce_mean / reduce_sum / reduce_max / reduce_min, LRN
(local response normalisation) and layer normalisation.

Each follows the arithmetic order of its reference in ``irc.reference`` where that order
decides float32 rounding (LRN sums channels in the same order, in float32); sums that
numpy computes pairwise are accumulated in float64 here, which is at least as accurate.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.backends.numba.float_common import (
    advance_outer_index,
    element_strides,
    float_dtype,
    static_shape,
)
from irc.backends.numba.kernel_table import BackendError, kernel_builder
from irc.ir import Op


@njit(cache=True)
def softextreme_kernel(src, dst, outer, n, inner):
    """Softmax over the middle axis of src viewed as [outer, n, inner]."""
    for o in range(outer):
        for i in range(inner):
            base = o * n * inner + i
            peak = src[base]
            for j in range(1, n):
                peak = max(peak, src[base + j * inner])
            total = 0.0
            for j in range(n):
                e = np.exp(src[base + j * inner] - peak)
                dst[base + j * inner] = e
                total += e
            for j in range(n):
                dst[base + j * inner] = dst[base + j * inner] / total


@njit(cache=True)
def mean_kernel(src, dst, lens, out_strides, count):
    """dst.flat[Σ idx[a] * out_strides[a]] accumulates src in C order, then / count.

    ``out_strides[a]`` is 0 on reduced axes; the sums are float64.
    """
    acc = np.zeros(dst.size, np.float64)
    inner = lens[lens.shape[0] - 1]
    step = out_strides[lens.shape[0] - 1]
    bases = row_bases(lens, out_strides, src.size)
    for row in range(bases.shape[0]):
        k = row * inner
        for j in range(inner):
            acc[bases[row] + j * step] += src[k + j]
    for i in range(dst.size):
        dst[i] = acc[i] / count


@njit(cache=True)
def lrn_kernel(src, dst, n, channels, pixels, size, alpha, beta, bias):
    """ONNX LRN over src viewed as [n, channels, pixels], summing squares in float32."""
    below = (size - 1) // 2
    coef = src.dtype.type(alpha / size)
    b, bt = src.dtype.type(bias), src.dtype.type(beta)
    for b_i in range(n):
        for c in range(channels):
            for p in range(pixels):
                total = src.dtype.type(0)
                # the reference adds the window's channels in ascending order, from zero
                for k in range(c - below, c - below + size):
                    if 0 <= k < channels:
                        v = src[(b_i * channels + k) * pixels + p]
                        total += v * v
                at = (b_i * channels + c) * pixels + p
                dst[at] = src[at] / (b + coef * total) ** bt


@kernel_builder("softmax")
def build_softmax(op: Op):
    """Softmax along the op's axis."""
    float_dtype(op)  # BackendError unless f32 or f64
    shape = static_shape(op, op.operands[0], "input")
    axis = op.attrs["axis"] % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    n = shape[axis]

    def run(x, out):
        softextreme_kernel(x.reshape(-1), out.reshape(-1), outer, n, inner)

    return run


@njit(cache=True)
def extreme_kernel(src, dst, lens, out_strides, start, sign):
    """dst.flat[Σ idx[a] * out_strides[a]] = max (``sign`` 1) or min (``sign`` -1) of src
    over the reduced axes (as ``mean_kernel`` walks them); nan wins, an empty reduction
    leaves ``start``."""
    for i in range(dst.size):
        dst[i] = start
    inner = lens[lens.shape[0] - 1]
    step = out_strides[lens.shape[0] - 1]
    bases = row_bases(lens, out_strides, src.size)
    for row in range(bases.shape[0]):
        k = row * inner
        for j in range(inner):
            v, at = src[k + j], bases[row] + j * step
            peak = dst[at]
            beyond = v > peak if sign > 0 else v < peak
            if peak == peak and (beyond or v != v):
                dst[at] = v


@njit(cache=True)
def row_bases(lens, out_strides, size):
    """For each row of ``size`` elements laid out as ``lens`` in C order (a row: the last
    axis), its output offset Σ idx[a] · out_strides[a] over the other axes (none when
    ``size`` is 0)."""
    rank = lens.shape[0]
    rows = size // lens[rank - 1] if size else 0
    bases = np.zeros(rows, np.int64)
    idx = np.zeros(rank, np.int64)
    for row in range(rows):
        for a in range(rank - 1):
            bases[row] += idx[a] * out_strides[a]
        advance_outer_index(idx, lens, rank - 2)
    return bases


def reduction_tables(op: Op):
    """(lens, out_strides, count) of a reduction op: the input shape, the result's element
    strides per input axis (0 on reduced axes) and the number of elements per result."""
    shape = static_shape(op, op.operands[0], "input")
    rank = len(shape)
    axes = {a % rank for a in op.attrs["axes"]} or set(range(rank))
    kept = [d if a not in axes else 1 for a, d in enumerate(shape)]
    strides, step = [], 1
    for a in reversed(range(rank)):
        strides.append(0 if a in axes else step)
        step *= kept[a]
    out_strides = np.array(strides[::-1] or [0], np.int64)
    lens = np.array(shape or (1,), np.int64)
    count = float(np.prod([shape[a] for a in axes], dtype=np.int64))
    return lens, out_strides, count


@kernel_builder("reduce_mean", "reduce_sum")
def build_reduce_mean(op: Op):
    """Mean (or sum) over the op's axes (all when empty), accumulated in float64; integer
    means truncate, as the reference."""
    lens, out_strides, count = reduction_tables(op)
    if op.kind == "reduce_sum":
        count = 1.0

    def run(x, out):
        mean_kernel(x.reshape(-1), out.reshape(-1), lens, out_strides, count)

    return run


@kernel_builder("reduce_max", "reduce_min")
def build_reduce_max(op: Op):
    """Max (min) over the op's axes (all when empty), any element type but bool: the min
    is ``extreme_kernel`` with its comparison reversed."""
    dtype = op.operands[0].type.dtype.numpy
    if dtype == np.bool_:
        raise BackendError(f"op {op.label()}: {op.kind} has no kernel for bool")
    lens, out_strides, _ = reduction_tables(op)
    if op.kind == "reduce_max":
        start, sign = (-np.inf if dtype.kind == "f" else np.iinfo(dtype).min), 1
    else:
        start, sign = (np.inf if dtype.kind == "f" else np.iinfo(dtype).max), -1
    start = dtype.type(start)

    def run(x, out):
        extreme_kernel(x.reshape(-1), out.reshape(-1), lens, out_strides, start, sign)

    return run


@njit(cache=True)
def layer_norm_kernel(src, scale, bias, dst, outer, inner, scale_at, bias_at, epsilon):
    """Each of ``outer`` rows of ``inner`` elements normalised (statistics in float64),
    times scale.flat[scale_at[j]] plus bias.flat[bias_at[j]]."""
    for r in range(outer):
        base = r * inner
        total = 0.0
        for j in range(inner):
            total += src[base + j]
        mean = total / inner
        square = 0.0
        for j in range(inner):
            d = src[base + j] - mean
            square += d * d
        inv = 1.0 / np.sqrt(square / inner + epsilon)
        for j in range(inner):
            y = (src[base + j] - mean) * inv * scale[scale_at[j]] + bias[bias_at[j]]
            dst[base + j] = y


def _broadcast_index(op: Op, value, tail) -> np.ndarray:
    """Per element of the normalised ``tail`` shape, the flat index into ``value``."""
    shape = static_shape(op, value, "operand")
    strides = element_strides(shape, tail)
    grid = np.indices(tail, dtype=np.int64).reshape(len(tail), -1)
    return np.ascontiguousarray(np.tensordot(np.array(strides, np.int64), grid, axes=1))


@kernel_builder("layer_norm")
def build_layer_norm(op: Op):
    """Layer normalisation over the axes from ``axis`` on, rows of the flat input."""
    dtype = float_dtype(op)
    shape = static_shape(op, op.operands[0], "input")
    axis = op.attrs["axis"] % len(shape)
    tail = shape[axis:]
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(tail, dtype=np.int64))
    scale_at = _broadcast_index(op, op.operands[1], tail)
    has_bias = len(op.operands) == 3
    bias_at = _broadcast_index(op, op.operands[2], tail) if has_bias else np.zeros(inner, np.int64)
    no_bias = np.zeros(1, dtype)
    epsilon = float(op.attrs["epsilon"])

    def run(x, scale, *rest):
        bias, out = rest if has_bias else (no_bias, rest[0])
        flat = (x.reshape(-1), scale.reshape(-1), bias.reshape(-1), out.reshape(-1))
        layer_norm_kernel(*flat, outer, inner, scale_at, bias_at, epsilon)

    return run


@kernel_builder("lrn")
def build_lrn(op: Op):
    """LRN across channels (axis 1) of an [N, C, spatial…] tensor."""
    float_dtype(op)  # BackendError unless f32 or f64
    shape = static_shape(op, op.operands[0], "input")
    pixels = int(np.prod(shape[2:], dtype=np.int64))
    a = op.attrs

    def run(x, out):
        lrn_kernel(
            x.reshape(-1),
            out.reshape(-1),
            shape[0],
            shape[1],
            pixels,
            a["size"],
            a["alpha"],
            a["beta"],
            a["bias"],
        )

    return run
