"""Resize semantics: ONNX Resize in ``nearest`` and ``linear`` modes.

Resizing is separable, so it runs one axis at a time: each output index along an axis is
mapped to a coordinate in the input (the coordinate transformation), then either the
nearest input element is taken or the two around it are blended. Coordinates are computed
in float32, as onnxruntime computes them, so ties in nearest rounding fall the same way.

Where onnxruntime and the ONNX reference evaluator disagree, this follows the text of the
ONNX spec: ``align_corners`` divides by the integer output length less one, as onnxruntime
does (the reference uses the fractional in * scale); an axis of length floor(in * scale)
exactly, as the reference does (onnxruntime rounds the product to float32 first); and an
output the shape of the input is still resampled when a scale is not 1 (onnxruntime then
copies its input).
"""

from __future__ import annotations

import math

import numpy as np

from irc.reference.registry import semantics


def source_coordinates(out_len: int, in_len: int, scale: float, mode: str) -> np.ndarray:
    """Where output indices 0..out_len-1 along one axis fall in the input (float32).

    ``scale`` is the axis's resize factor (out/in when the model gave sizes) and ``mode``
    the ONNX coordinate_transformation_mode.
    """
    x = np.arange(out_len, dtype=np.float32)
    scale = np.float32(scale)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        if out_len == 1:
            return np.zeros(1, np.float32)
        return (x + 0.5) / scale - 0.5
    if mode == "align_corners":
        if out_len == 1:
            return np.zeros(1, np.float32)
        return x * np.float32(in_len - 1) / np.float32(out_len - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel_symmetric":
        # Centre the sampled region when out_len was rounded down from in_len * scale. The
        # offset is float32 but the rest float64, rounded once, as onnxruntime does it.
        adjustment = np.float32(out_len) / (scale * np.float32(in_len))
        offset = np.float32(in_len) / 2 * (1 - adjustment)
        shifted = (x.astype(np.float64) + 0.5) / np.float64(scale) - 0.5
        return (np.float64(offset) + shifted).astype(np.float32)
    raise ValueError(f"unknown coordinate_transformation_mode '{mode}'")


def nearest_indices(coords: np.ndarray, in_len: int, nearest_mode: str) -> np.ndarray:
    """The input index each coordinate rounds to under ONNX ``nearest_mode``, clamped."""
    coords = coords.astype(np.float64)  # exact, and x ± 0.5 below stays exact
    if nearest_mode == "round_prefer_floor":
        index = np.ceil(coords - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        index = np.floor(coords + 0.5)
    elif nearest_mode == "floor":
        index = np.floor(coords)
    elif nearest_mode == "ceil":
        index = np.ceil(coords)
    else:
        raise ValueError(f"unknown nearest_mode '{nearest_mode}'")
    return np.clip(index, 0, in_len - 1).astype(np.intp)


def _along_axis(weights: np.ndarray, axis: int, rank: int) -> np.ndarray:
    return weights.reshape((1,) * axis + (-1,) + (1,) * (rank - axis - 1))


def linear_taps(coords: np.ndarray, in_len: int):
    """The two input indices around each coordinate (clamped into the input) and their
    float32 weights: (low, high, weight_low, weight_high)."""
    coords = np.clip(coords, 0, in_len - 1)
    low = np.floor(coords).astype(np.intp)
    high = np.minimum(low + 1, in_len - 1)
    weight_high = (coords - low).astype(np.float32)
    weight_low = (high - coords).astype(np.float32)
    at_edge = low == high  # both taps are the last element: split its weight evenly
    weight_low[at_edge] = weight_high[at_edge] = 0.5
    return low, high, weight_low, weight_high


def _linear_along(x: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Blend the two input elements around each coordinate (clamped into the input).

    Integer inputs blend in float32 and truncate back, as onnxruntime does.
    """
    low, high, weight_low, weight_high = linear_taps(coords, x.shape[axis])
    compute = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    blended = np.take(x, low, axis=axis) * _along_axis(weight_low, axis, x.ndim).astype(compute)
    blended += np.take(x, high, axis=axis) * _along_axis(weight_high, axis, x.ndim).astype(compute)
    return blended


@semantics("resize")
def resize(
    x: np.ndarray,
    *,
    mode: str,
    scales: tuple[float, ...],
    sizes: tuple[int, ...],
    coordinate_transformation_mode: str,
    nearest_mode: str,
) -> np.ndarray:
    """ONNX Resize (nearest or linear, no antialiasing).

    Axis i gets sizes[i] elements when ``sizes`` is given and sizes[i] >= 0, else
    floor(dim * scales[i]); coordinates map through scales[i]. Linear mode is N-linear
    over every axis that changes; nearest mode picks by ``nearest_mode``.
    """
    out = x
    for axis, (in_len, scale) in enumerate(zip(x.shape, scales)):
        if sizes and sizes[axis] >= 0:
            out_len = sizes[axis]
        elif scale == 1.0:
            out_len = in_len
        else:
            out_len = math.floor(in_len * scale)
        if scale == 1.0 and out_len == in_len:
            continue  # every coordinate mode maps index i to i here
        coords = source_coordinates(out_len, in_len, scale, coordinate_transformation_mode)
        if mode == "nearest":
            out = np.take(out, nearest_indices(coords, in_len, nearest_mode), axis=axis)
        elif mode == "linear":
            out = _linear_along(out, axis, coords)
        else:
            raise ValueError(f"unknown resize mode '{mode}'")
    return out.astype(x.dtype, copy=False)
