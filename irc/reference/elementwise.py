"""Elementwise semantics: activations, sqrt, erf, clip, the arithmetic ops, pow, equal, where
and cast.

Every result keeps its input's element type. Attribute floats are Python floats, which
numpy treats as "weak" scalars, so ``alpha * x`` on float32 stays float32; results that
numpy would widen anyway (integer inputs to a float formula) are cast back.
"""

from __future__ import annotations

import math

import numpy as np

from irc.reference.registry import semantics
from irc.types import DType


def _as_dtype_of(result, like: np.ndarray) -> np.ndarray:
    return np.asarray(result).astype(like.dtype, copy=False)


@semantics("relu")
def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return _as_dtype_of(np.maximum(x, 0), x)


@semantics("sigmoid")
def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    decay = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    positive = 1 / (1 + decay)
    return _as_dtype_of(np.where(x >= 0, positive, decay * positive), x)


@semantics("tanh")
def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return _as_dtype_of(np.tanh(x), x)


@semantics("hard_swish")
def hard_swish(x: np.ndarray) -> np.ndarray:
    """x * max(0, min(1, x/6 + 1/2)) (ONNX HardSwish)."""
    return _as_dtype_of(x * np.clip(x / 6 + 0.5, 0, 1), x)


@semantics("sqrt")
def sqrt(x: np.ndarray) -> np.ndarray:
    """Square root; nan below zero (no warning)."""
    with np.errstate(invalid="ignore"):
        return _as_dtype_of(np.sqrt(x), x)


@semantics("neg")
def neg(x: np.ndarray) -> np.ndarray:
    """-x (integers wrap, as ONNX Neg's two's complement)."""
    return np.negative(x)


@semantics("log")
def log(x: np.ndarray) -> np.ndarray:
    """Natural logarithm: -inf at zero, nan below (no warning)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _as_dtype_of(np.log(x), x)


_ERF = np.frompyfunc(math.erf, 1, 1)
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_TWO_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


@semantics("erf")
def erf(x: np.ndarray) -> np.ndarray:
    """The error function, computed in float64 (``math.erf``) and rounded to x's type."""
    return _as_dtype_of(_ERF(x.astype(np.float64)).astype(np.float64), x)


@semantics("gelu")
def gelu(x: np.ndarray, *, approximate: str = "none") -> np.ndarray:
    """x/2 · (1 + erf(x/√2)), or with ``approximate="tanh"`` x/2 · (1 + tanh(√(2/π) ·
    (x + 0.044715 x³))); computed in float64 and rounded to x's type."""
    wide = x.astype(np.float64)
    if approximate == "tanh":
        inner = _SQRT_TWO_OVER_PI * (wide + _GELU_CUBIC * wide * wide * wide)
        return _as_dtype_of(0.5 * wide * (1.0 + np.tanh(inner)), x)
    return _as_dtype_of(0.5 * wide * (1.0 + _ERF(wide * _SQRT_HALF).astype(np.float64)), x)


@semantics("leaky_relu")
def leaky_relu(x: np.ndarray, *, alpha: float) -> np.ndarray:
    """x where x >= 0, else alpha * x."""
    return _as_dtype_of(np.where(x >= 0, x, alpha * x), x)


@semantics("hard_sigmoid")
def hard_sigmoid(x: np.ndarray, *, alpha: float, beta: float) -> np.ndarray:
    """max(0, min(1, alpha * x + beta))."""
    return _as_dtype_of(np.clip(alpha * x + beta, 0, 1), x)


def _bound_in_dtype(bound: float, dtype: np.dtype, lower: bool):
    """``bound`` as a scalar of ``dtype``, or None when it does not bound: -inf as the lower
    bound, +inf as the upper. An integer dtype saturates every other bound to its range
    (+inf as a lower bound is the dtype's largest value); a float dtype keeps it as is."""
    if np.isinf(bound) and (bound < 0) == lower:
        return None
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.isinf(bound):
            return dtype.type(info.max if bound > 0 else info.min)
        # Python compares int and float exactly, so this saturates without rounding.
        return dtype.type(int(max(min(bound, info.max), info.min)))
    return dtype.type(bound)


@semantics("clip")
def clip(x: np.ndarray, *, min: float, max: float) -> np.ndarray:  # the op's attribute names
    """min(max(x, min), max) with both bounds first cast to x's element type.

    -inf as ``min`` and +inf as ``max`` do not bound; an integer x saturates other bounds
    to its range. When min > max every element becomes max, as in ONNX (so ``min=+inf``
    gives ``max`` everywhere); a NaN element stays NaN.
    """
    lo, hi = _bound_in_dtype(min, x.dtype, True), _bound_in_dtype(max, x.dtype, False)
    out = x if lo is None else np.maximum(x, lo)
    return _as_dtype_of(out if hi is None else np.minimum(out, hi), x)


def fused_activation(y: np.ndarray, activation: str, act_min: float, act_max: float):
    """The activation a fusing pass folded into conv2d, gemm or add, applied to ``y``.

    ``none`` keeps y, ``relu`` and ``hard_swish`` are those ops, and ``clip`` is clip to
    [act_min, act_max].
    """
    if activation == "none":
        return y
    if activation == "relu":
        return relu(y)
    if activation == "clip":
        return clip(y, min=act_min, max=act_max)
    if activation == "hard_swish":
        return hard_swish(y)
    raise ValueError(f"unknown fused activation '{activation}'")


@semantics("add")
def add(
    a: np.ndarray,
    b: np.ndarray,
    *,
    activation: str = "none",
    act_min: float = -np.inf,
    act_max: float = np.inf,
) -> np.ndarray:
    """a + b with numpy broadcasting (integers wrap), then the fused activation."""
    return fused_activation(np.add(a, b), activation, act_min, act_max)


@semantics("sub")
def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b with numpy broadcasting (integers wrap)."""
    return np.subtract(a, b)


@semantics("mul")
def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b with numpy broadcasting (integers wrap)."""
    return np.multiply(a, b)


@semantics("div")
def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with numpy broadcasting; integer division truncates toward zero (as in C).

    Float division by zero gives IEEE inf or nan without a warning.
    """
    if np.issubdtype(a.dtype, np.integer):
        with np.errstate(divide="ignore"):
            quotient = np.floor_divide(a, b)
            # floor and truncation differ when the division is inexact and the signs differ
            inexact = np.remainder(a, b) != 0
        return quotient + (inexact & ((a < 0) != (b < 0))).astype(quotient.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b)


@semantics("pow")
def pow_(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a ** b with numpy broadcasting (ONNX Pow); an integer base with a negative exponent
    is computed in float64 and truncated back, as numpy refuses it for integers."""
    if np.issubdtype(a.dtype, np.integer) and np.any(b < 0):
        return np.trunc(np.power(a.astype(np.float64), b)).astype(a.dtype)
    with np.errstate(all="ignore"):
        return _as_dtype_of(np.power(a, b), a)


@semantics("equal")
def equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a == b with numpy broadcasting, as bool."""
    return np.equal(a, b)


@semantics("where")
def where(cond: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x where cond is true, else y; all three broadcast (numpy.where, ONNX Where)."""
    return np.where(cond, x, y)


@semantics("cast")
def cast(x: np.ndarray, *, to: str) -> np.ndarray:
    """x converted to the element type named ``to`` (``f32``, ``i8``, …), per ONNX Cast.

    Float to integer truncates toward zero; integer to a narrower integer keeps the low
    bits (two's complement); any nonzero value becomes True for ``bool``. Sub-byte types
    (``i4``, ``u2``, …) are stored unpacked in int8/uint8 and follow the same rules at
    their own width, as the ONNX reference casts to INT4/UINT4.
    """
    target = DType.from_short(to)
    if not target.is_sub_byte:
        with np.errstate(over="ignore"):  # a float too large for a narrower float becomes inf
            return x.astype(target.numpy)
    low = -(1 << (target.bits - 1)) if target.is_signed else 0
    whole = np.trunc(x) if np.issubdtype(x.dtype, np.floating) else x
    wrapped = (whole.astype(np.int64) - low) % (1 << target.bits) + low
    return wrapped.astype(target.numpy)
