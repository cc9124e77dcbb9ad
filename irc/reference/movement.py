"""Data movement, reductions and constants: concat, reshape, transpose, pad, slice, gather,
shape, expand, tile, range, softmax, reduce_mean / reduce_sum / reduce_max / reduce_min and
constant.

Results may be views of their operands; no semantics here writes into an operand.
"""

from __future__ import annotations

import math

import numpy as np

from irc.errors import TypeInferenceError
from irc.reference.registry import semantics
from irc.tensor import ElidedTensor


@semantics("concat")
def concat(*xs: np.ndarray, axis: int) -> np.ndarray:
    """Join the operands along ``axis``."""
    return np.concatenate(xs, axis=axis)


@semantics("reshape")
def reshape(x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
    """ONNX Reshape (allowzero=0): a 0 copies the input's dimension there, one -1 is inferred."""
    target = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return np.reshape(x, target)


@semantics("transpose")
def transpose(x: np.ndarray, *, perm: tuple[int, ...]) -> np.ndarray:
    """Permute axes: result axis i is input axis perm[i]."""
    return np.transpose(x, perm)


@semantics("pad")
def pad(x: np.ndarray, *, pads: tuple[int, ...], mode: str, value: float) -> np.ndarray:
    """ONNX Pad: pads = [begin per axis…, end per axis…]; a negative pad crops.

    Cropping happens first, so ``reflect``, ``edge`` and ``wrap`` read the cropped tensor.
    ``value`` fills in ``constant`` mode, cast to x's element type.
    """
    rank = x.ndim
    begins, ends = pads[:rank], pads[rank:]
    crop = tuple(
        slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begins, ends))
    )
    cropped = x[crop]
    width = [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
    if not any(map(any, width)):
        return cropped
    if mode == "constant":
        return np.pad(cropped, width, mode="constant", constant_values=x.dtype.type(value))
    return np.pad(cropped, width, mode=mode)


@semantics("slice")
def slice_(
    x: np.ndarray,
    *,
    starts: tuple[int, ...],
    ends: tuple[int, ...],
    axes: tuple[int, ...],
    steps: tuple[int, ...],
) -> np.ndarray:
    """x[start:end:step] on each listed axis, Python slice rules (which equal ONNX Slice's).

    Out-of-range starts and ends clamp; negative ones count from the axis end.
    """
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


@semantics("gather")
def gather(data: np.ndarray, indices: np.ndarray, *, axis: int) -> np.ndarray:
    """numpy.take along ``axis``: negative indices count from the end; out of range raises."""
    return np.take(data, indices, axis=axis)


@semantics("shape")
def shape(x: np.ndarray, *, start: int, end: int) -> np.ndarray:
    """x's dimensions [start:end] (Python slice rules, as ONNX Shape) as int64."""
    return np.array(x.shape[start:end], dtype=np.int64)


@semantics("expand")
def expand(x: np.ndarray, *, shape: tuple[int, ...]) -> np.ndarray:
    """x broadcast against ``shape`` (numpy rules both ways, ONNX Expand), as a new array."""
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))))


@semantics("tile")
def tile(x: np.ndarray, *, repeats: tuple[int, ...]) -> np.ndarray:
    """x repeated ``repeats[i]`` times along axis i (numpy.tile, ONNX Tile)."""
    return np.tile(x, repeats)


def range_count(start, limit, delta) -> int:
    """ONNX Range's length, max(ceil((limit - start) / delta), 0); exact for integers.

    ValueError for a zero delta.
    """
    start, limit, delta = (np.asarray(v).item() for v in (start, limit, delta))
    if delta == 0:
        raise ValueError("range: delta is 0")
    if all(isinstance(v, int) for v in (start, limit, delta)):
        return max(-((start - limit) // delta), 0)
    return max(math.ceil((limit - start) / delta), 0)


@semantics("range")
def range_(start: np.ndarray, limit: np.ndarray, delta: np.ndarray, *, count: int) -> np.ndarray:
    """start + i·delta for i < count, in start's element type (ONNX Range); ``count`` must
    be the length the operands give (``range_count``)."""
    expected = range_count(start, limit, delta)
    if count != expected:
        raise TypeInferenceError(
            f"range: count {count} differs from the {expected} elements its operands give"
        )
    steps = np.arange(count, dtype=np.int64 if start.dtype.kind in "iu" else np.float64)
    return (start.item() + steps * delta.item()).astype(start.dtype)


@semantics("softmax")
def softmax(x: np.ndarray, *, axis: int) -> np.ndarray:
    """exp(x) / sum(exp(x)) along ``axis`` (ONNX Softmax from opset 13), overflow-safe."""
    exps = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return (exps / np.sum(exps, axis=axis, keepdims=True)).astype(x.dtype, copy=False)


@semantics("reduce_mean")
def reduce_mean(x: np.ndarray, *, axes: tuple[int, ...], keepdims: int) -> np.ndarray:
    """Mean over ``axes`` (every axis when empty), keeping them as size 1 if ``keepdims``."""
    mean = np.mean(x, axis=tuple(axes) if axes else None, keepdims=bool(keepdims))
    return np.asarray(mean).astype(x.dtype, copy=False)


@semantics("reduce_sum")
def reduce_sum(x: np.ndarray, *, axes: tuple[int, ...], keepdims: int) -> np.ndarray:
    """Sum over ``axes`` (every axis when empty), keeping them as size 1 if ``keepdims``."""
    total = np.sum(x, axis=tuple(axes) if axes else None, keepdims=bool(keepdims))
    return np.asarray(total).astype(x.dtype, copy=False)


def _lowest(dtype: np.dtype):
    """The identity of max in ``dtype``: -inf, the integer minimum, or False."""
    if np.issubdtype(dtype, np.floating):
        return -np.inf
    if dtype == np.bool_:
        return False
    return np.iinfo(dtype).min


@semantics("reduce_max")
def reduce_max(x: np.ndarray, *, axes: tuple[int, ...], keepdims: int) -> np.ndarray:
    """Max over ``axes`` (every axis when empty); nan propagates; an empty reduction gives
    the type's lowest value (-inf for floats), as ONNX ReduceMax."""
    axis = tuple(axes) if axes else None
    peak = np.max(x, axis=axis, keepdims=bool(keepdims), initial=_lowest(x.dtype))
    return np.asarray(peak).astype(x.dtype, copy=False)


@semantics("reduce_min")
def reduce_min(x: np.ndarray, *, axes: tuple[int, ...], keepdims: int) -> np.ndarray:
    """Min over ``axes`` (every axis when empty); nan propagates; an empty reduction gives
    the type's highest value (+inf for floats), as ONNX ReduceMin."""
    axis = tuple(axes) if axes else None
    least = np.min(x, axis=axis, keepdims=bool(keepdims), initial=_highest(x.dtype))
    return np.asarray(least).astype(x.dtype, copy=False)


def _highest(dtype) -> object:
    """The largest value of ``dtype`` (+inf for floats, True for bool)."""
    if np.issubdtype(dtype, np.floating):
        return np.inf
    if dtype == np.bool_:
        return True
    return np.iinfo(dtype).max


@semantics("constant")
def constant(*, value) -> np.ndarray:
    """The ``value`` attribute, read-only so no consumer can change the graph's data.

    A constant dumped without its data (an ElidedTensor) raises ElidedConstantError.
    """
    if isinstance(value, ElidedTensor):
        return value.require("value")
    view = value.view()
    view.flags.writeable = False
    return view
