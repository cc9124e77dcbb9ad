"""Window semantics over NC<spatial> inputs: max and average pooling, global pools, LRN.

Pools are vectorised over pixels: the result accumulates one strided slice of the padded
input per kernel tap, so the Python loop runs over the few taps, never over pixels. Any
number of spatial axes works (the ONNX ops are N-D).
"""

from __future__ import annotations

import itertools

import numpy as np

from irc.ops.shape_rules import conv_output_size
from irc.reference.registry import semantics


def _windows(x, kernel, strides, pads, dilations, ceil_mode, fill):
    """Windows per axis, and per kernel tap the slice of padded x it sees in every window.

    Windows of ``ceil_mode`` may overhang the declared trailing padding; the overhang is
    filled with ``fill`` too and the caller must keep it out of any count.
    """
    nsp = len(kernel)
    counts, pad_width = [], [(0, 0)] * (x.ndim - nsp)
    for i in range(nsp):
        begin, end = pads[i], pads[i + nsp]
        count = conv_output_size(
            x.shape[-nsp + i], kernel[i], strides[i], begin, end, dilations[i], ceil_mode
        )
        reach = (count - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
        counts.append(count)
        pad_width.append((begin, max(0, reach - begin - x.shape[-nsp + i])))
    padded = np.pad(x, pad_width, constant_values=fill) if any(map(any, pad_width)) else x

    def tap_slices():
        for tap in itertools.product(*(range(k) for k in kernel)):
            index = tuple(
                slice(t * d, t * d + s * (c - 1) + 1, s)
                for t, d, s, c in zip(tap, dilations, strides, counts)
            )
            yield padded[(...,) + index]

    return counts, tap_slices()


def _lowest(dtype: np.dtype):
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


@semantics("max_pool")
def max_pool(
    x: np.ndarray,
    *,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    ceil_mode: int,
    dilations: tuple[int, ...],
) -> np.ndarray:
    """ONNX MaxPool: max over each (dilated) window; padding never wins (it is -inf)."""
    _, taps = _windows(x, kernel, strides, pads, dilations, ceil_mode, _lowest(x.dtype))
    out = next(taps).copy()
    for tap in taps:
        np.maximum(out, tap, out=out)
    return out


@semantics("avg_pool")
def avg_pool(
    x: np.ndarray,
    *,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    ceil_mode: int,
    dilations: tuple[int, ...],
    count_include_pad: int,
) -> np.ndarray:
    """ONNX AveragePool: each (dilated) window's sum over its element count.

    The count is of real input elements, or with ``count_include_pad`` of elements within
    the declared padding too; the overhang of a ``ceil_mode`` window never counts.
    """
    nsp = len(kernel)
    counts, taps = _windows(x, kernel, strides, pads, dilations, ceil_mode, 0)
    total = next(taps).copy()
    for tap in taps:
        total += tap
    divisor = np.ones((), dtype=np.int64)
    for i in range(nsp):
        size, begin, end = x.shape[x.ndim - nsp + i], pads[i], pads[i + nsp]
        low, high = (-begin, size + end) if count_include_pad else (0, size)
        starts = np.arange(counts[i]) * strides[i] - begin
        positions = starts[:, None] + np.arange(kernel[i])[None, :] * dilations[i]
        per_axis = ((positions >= low) & (positions < high)).sum(axis=1)
        divisor = np.multiply.outer(divisor, per_axis)
    if np.issubdtype(total.dtype, np.floating):
        divisor = divisor.astype(total.dtype)  # an int64 divisor would widen float32 results
    return (total / divisor).astype(x.dtype, copy=False)


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@semantics("global_avg_pool")
def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """Mean over every spatial axis (all but N and C), kept as size-1 axes."""
    return np.mean(x, axis=_spatial_axes(x), keepdims=True).astype(x.dtype, copy=False)


@semantics("global_max_pool")
def global_max_pool(x: np.ndarray) -> np.ndarray:
    """Max over every spatial axis (all but N and C), kept as size-1 axes."""
    return np.max(x, axis=_spatial_axes(x), keepdims=True)


@semantics("lrn")
def lrn(x: np.ndarray, *, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX LRN: x / (bias + alpha/size * sum of squares over nearby channels) ** beta.

    Channel c sums channels [c - floor((size-1)/2), c + ceil((size-1)/2)] that exist.
    """
    below = (size - 1) // 2
    squares = np.pad(x * x, [(0, 0), (below, size - 1 - below)] + [(0, 0)] * (x.ndim - 2))
    channels = x.shape[1]
    square_sum = squares[:, 0:channels].copy()
    for offset in range(1, size):
        square_sum += squares[:, offset : offset + channels]
    return (x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype, copy=False)
