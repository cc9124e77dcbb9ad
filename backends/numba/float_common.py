"""Builder-side checks shared by the float kernel modules: element types and static shapes.

Builders run once per op at compile time, so everything here is plain Python; a form the
float kernels cannot run raises BackendError naming the op.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.backends.numba.kernel_table import BackendError
from irc.ir import Op, Value

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(op: Op) -> np.dtype:
    """The op's float element type (f32 or f64); BackendError for any other."""
    dtype = op.results[0].type.dtype.numpy
    if dtype not in FLOAT_DTYPES or any(v.type.dtype.numpy != dtype for v in op.operands):
        raise BackendError(
            f"op {op.label()}: the float kernels take f32 or f64 operands, got "
            + ", ".join(v.type.dtype.short for v in op.operands)
        )
    return dtype


def static_shape(op: Op, value: Value, what: str) -> tuple[int, ...]:
    """The shape of ``value`` as ints; BackendError naming ``op`` if a dimension is symbolic."""
    shape = value.type.shape
    if not all(isinstance(d, int) for d in shape):
        raise BackendError(f"op {op.label()}: {what} shape {list(shape)} is not static")
    return tuple(shape)


def element_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of a C-contiguous ``shape`` broadcast to ``out_shape`` (numpy rules:
    missing leading axes and size-1 axes read with stride 0)."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, step = [0] * len(out_shape), 1
    for axis in range(len(out_shape) - 1, -1, -1):
        strides[axis] = step if padded[axis] != 1 else 0
        step *= padded[axis]
    return strides


@njit(cache=True)
def advance_outer_index(idx, lens, last_axis):
    """Step the multi-index ``idx`` over axes [0, last_axis], last axis fastest (an odometer)."""
    a = last_axis
    while a >= 0:
        idx[a] += 1
        if idx[a] < lens[a]:
            return
        idx[a] = 0
        a -= 1
