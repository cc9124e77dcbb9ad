"""Float pooling kernels: max/average pooling over 2-D windows and the global pools.

The window geometry is solved once in the builder, following the reference's rules
(``irc.reference.windows``): per output row, the range of kernel rows that land on real
input, and for average pooling the divisor per window (real elements, or with
``count_include_pad`` also those within the declared padding; the overhang of a
``ceil_mode`` window never counts).

A 2-D window reduction is separable, so each (image, channel) plane is reduced in two
vectorised passes: every input row, padded with the neutral value (-inf for max, 0 for the
sum), is reduced across the kernel's columns; then each output row reduces its kernel's
real rows of that result. Max pooling takes integer inputs too (padding is the type's
minimum).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.backends.numba.float_common import FLOAT_DTYPES, float_dtype, static_shape
from irc.backends.numba.kernel_table import BackendError, KernelFn, kernel_builder
from irc.ir import Op
from irc.ops.shape_rules import conv_output_size


def _tap_ranges(size, kernel, stride, begin, end, dilation, count, include_pad):
    """Per window along one axis: first and past-last tap on real input, and the divisor."""
    first, last, divisor = (np.zeros(count, dtype=np.int64) for _ in range(3))
    low, high = (-begin, size + end) if include_pad else (0, size)
    for o in range(count):
        positions = o * stride - begin + dilation * np.arange(kernel)
        real = np.flatnonzero((positions >= 0) & (positions < size))
        first[o], last[o] = (real[0], real[-1] + 1) if real.size else (0, 0)
        divisor[o] = np.count_nonzero((positions >= low) & (positions < high))
    return first, last, divisor


def _pool_dtype(op: Op) -> np.dtype:
    dtype = op.results[0].type.dtype.numpy
    if op.kind == "max_pool" and dtype.kind in "iu" and op.operands[0].type.dtype.numpy == dtype:
        return dtype
    return float_dtype(op)


@kernel_builder("max_pool", "avg_pool")
def build_pool(op: Op) -> KernelFn:
    """max_pool / avg_pool over 2-D windows (ONNX semantics, ceil_mode, count_include_pad)."""
    dtype = _pool_dtype(op)
    kernel = op.attrs["kernel"]
    if len(kernel) != 2:
        raise BackendError(f"op {op.label()}: only 2-D pooling has a kernel, not {len(kernel)}-D")
    _, _, h, w = static_shape(op, op.operands[0], "input")
    oh, ow = static_shape(op, op.results[0], "result")[2:]
    strides, pads, dilations = op.attrs["strides"], op.attrs["pads"], op.attrs["dilations"]
    include_pad = op.kind == "avg_pool" and op.attrs["count_include_pad"]
    axes = []
    for axis, (size, count) in enumerate(((h, oh), (w, ow))):
        begin, end = pads[axis], pads[axis + 2]
        expected = conv_output_size(
            size, kernel[axis], strides[axis], begin, end, dilations[axis], op.attrs["ceil_mode"]
        )
        if expected != count:
            raise BackendError(f"op {op.label()}: result shape disagrees with the windows")
        axes.append(_tap_ranges(size, kernel[axis], strides[axis], begin, end, dilations[axis],
                                count, include_pad))  # fmt: skip
    (h_first, h_last, h_div), (_, _, w_div) = axes
    params = (*strides, *dilations, pads[0], pads[1], kernel[1], h_first, h_last)
    if op.kind == "avg_pool":
        divisors = np.multiply.outer(h_div, w_div).astype(dtype)

        def avg_pool(x, out):
            _avg_pool(x, out, *params, divisors)

        return avg_pool
    lowest = dtype.type(-np.inf) if dtype in FLOAT_DTYPES else np.iinfo(dtype).min

    def max_pool(x, out):
        _max_pool(x, out, *params, dtype.type(lowest))

    return max_pool


@njit(cache=True)
def _max_pool(x, out, sh, sw, dh, dw, top, left, kw, h_first, h_last, lowest):
    """Max over each window; a window with no real element gives ``lowest`` (-inf)."""
    _reduce_windows(x, out, sh, sw, dh, dw, top, left, kw, h_first, h_last, True, lowest)


@njit(cache=True, error_model="numpy")
def _avg_pool(x, out, sh, sw, dh, dw, top, left, kw, h_first, h_last, divisors):
    """Each window's sum over its divisor (x/0 is nan, as in the reference)."""
    _reduce_windows(
        x, out, sh, sw, dh, dw, top, left, kw, h_first, h_last, False, divisors[0, 0] * 0
    )
    images, channels = out.shape[0], out.shape[1]
    for b in range(images):
        for c in range(channels):
            out[b, c] /= divisors


# Serial: window pools are rare in the target networks, and a parallel region adds
# seconds to this kernel's compile time (measured on the test suite's cold cache).
@njit(cache=True)
def _reduce_windows(x, out, sh, sw, dh, dw, top, left, kw, h_first, h_last, is_max, pad):
    """out = max (or sum) over each window, padding read as ``pad``, per plane."""
    n, c, height, width = x.shape
    oh_all, ow_all = out.shape[2], out.shape[3]
    # A padded input row split into sw column phases of ``pitch``: kernel column j then
    # reads phase (j·dw) % sw from (j·dw) // sw on, a unit-stride run for every stride.
    pitch = ow_all + ((kw - 1) * dw) // sw
    real = max(0, min(width, sw * pitch - left))  # input columns inside the padded row
    for task in range(n * c):
        src, dst = x[task // c, task % c], out[task // c, task % c]
        padded = np.full(sw * pitch, pad, dtype=x.dtype)
        phases = np.empty(sw * pitch, dtype=x.dtype)
        across = np.empty((height, ow_all), dtype=x.dtype)
        for ih in range(height):
            line, inner = src[ih], padded[left : left + real]  # views: no wraparound
            for q in range(real):
                inner[q] = line[q]
            _split_phases(padded, phases, sw, pitch)
            result = across[ih]
            for j in range(kw):
                taps = phases[(j * dw) % sw * pitch + (j * dw) // sw :]
                if j == 0:
                    for o in range(ow_all):
                        result[o] = taps[o]
                else:
                    for o in range(ow_all):
                        result[o] = _combine(result[o], taps[o], is_max)
        for oh in range(oh_all):
            row = dst[oh]
            for o in range(ow_all):
                row[o] = pad
            for i in range(h_first[oh], h_last[oh]):
                part = across[oh * sh - top + i * dh]
                for o in range(ow_all):
                    row[o] = _combine(row[o], part[o], is_max)


@njit(cache=True)
def _split_phases(padded, phases, sw, pitch):
    """phases[p·pitch + q] = padded[q·sw + p]: stride 1 a copy, stride 2 an even/odd split
    with constant strides that LLVM vectorises."""
    if sw == 1:
        for q in range(pitch):
            phases[q] = padded[q]
    elif sw == 2:
        for q in range(pitch):
            phases[q] = padded[2 * q]
            phases[pitch + q] = padded[2 * q + 1]
    else:
        for p in range(sw):
            for q in range(pitch):
                phases[p * pitch + q] = padded[q * sw + p]


@njit(cache=True)
def _combine(acc, v, is_max):
    """max (nan wins, as np.maximum) or sum. Not ``v if v > acc else acc``: stored back over
    acc, LLVM turns that into a masked store, slow on this CPU (measured 3× slower)."""
    if is_max:
        return np.maximum(acc, v)
    return acc + v


@kernel_builder("global_avg_pool", "global_max_pool")
def build_global_pool(op: Op) -> KernelFn:
    """global_avg_pool / global_max_pool: mean or max over all spatial axes of each plane."""
    if op.kind == "global_max_pool":
        _pool_dtype(op)  # max takes integers too
    else:
        float_dtype(op)
    shape = static_shape(op, op.operands[0], "input")
    planes = (shape[0] * shape[1], int(np.prod(shape[2:], dtype=np.int64)))
    if planes[1] == 0:
        raise BackendError(f"op {op.label()}: global pooling over an empty plane")
    jit = _global_avg if op.kind == "global_avg_pool" else _global_max

    def global_pool(x, out):
        jit(x, out, planes)

    return global_pool


# The global pools run serially: a few thousand small planes are less than a parallel
# region's start-up costs.
@njit(cache=True)
def _global_avg(x, out, planes):
    """out[plane] = mean of x's plane, summed in float64."""
    xs, of = x.reshape(planes), out.reshape(out.size)
    count, size = planes
    for t in range(count):
        total = 0.0
        for p in range(size):
            total += xs[t, p]
        of[t] = total / size


@njit(cache=True)
def _global_max(x, out, planes):
    """out[plane] = max of x's plane."""
    xs, of = x.reshape(planes), out.reshape(out.size)
    count, size = planes
    for t in range(count):
        best = xs[t, 0]
        for p in range(1, size):
            v = xs[t, p]
            best = v if v > best else best
        of[t] = best
