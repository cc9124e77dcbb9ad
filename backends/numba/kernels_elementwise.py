"""Float elementwise kernels: the unary activations, sqrt, erf and gelu, and the broadcasting
arithmetic ops (add, sub, mul, div, pow).

Each family is one njit function that takes the op as an int code, so a whole model's
elementwise ops compile to a handful of specialisations; the code is loop-invariant and
LLVM unswitches the inner loops on it, so each still vectorises (checked in the assembly).
``error_model="numpy"`` drops Python's zero-division check: x/0 is IEEE inf or nan.

Binary broadcasting is solved in the builder: operand strides against the result shape,
size-1 axes dropped and contiguous runs merged, so any numpy broadcast becomes at most a
4-D loop nest whose innermost run reads each operand at stride 1 or 0 (a scalar).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64

from irc.backends.numba.float_activation import (
    activate_inplace,
    activation_args,
    hard_swish_gate,
)
from irc.backends.numba.float_common import element_strides, float_dtype, static_shape
from irc.backends.numba.kernel_table import BackendError, KernelFn, kernel_builder
from irc.ir import Op

_CLAMP, _SIGMOID, _TANH, _HARD_SWISH, _LEAKY_RELU, _HARD_SIGMOID = range(6)
_SQRT, _ERF, _NEG, _LOG, _GELU, _GELU_TANH = range(6, 12)
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_TWO_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@kernel_builder(
    "relu",
    "sigmoid",
    "tanh",
    "hard_swish",
    "leaky_relu",
    "hard_sigmoid",
    "clip",
    "sqrt",
    "erf",
    "gelu",
    "neg",
    "log",
)
def build_unary(op: Op) -> KernelFn:
    """The unary activations; relu and clip are both a clamp to [lo, hi]."""
    dtype = float_dtype(op)
    attrs, inf = op.attrs, np.inf
    code, first, second = {
        "relu": (_CLAMP, 0.0, inf),
        "clip": (_CLAMP, attrs.get("min"), attrs.get("max")),
        "sigmoid": (_SIGMOID, 0.0, 0.0),
        "tanh": (_TANH, 0.0, 0.0),
        "hard_swish": (_HARD_SWISH, 0.0, 0.0),
        "leaky_relu": (_LEAKY_RELU, attrs.get("alpha"), 0.0),
        "hard_sigmoid": (_HARD_SIGMOID, attrs.get("alpha"), attrs.get("beta")),
        "sqrt": (_SQRT, 0.0, 0.0),
        "erf": (_ERF, 0.0, 0.0),
        "gelu": (_GELU_TANH if attrs.get("approximate") == "tanh" else _GELU, 0.0, 0.0),
        "neg": (_NEG, 0.0, 0.0),
        "log": (_LOG, 0.0, 0.0),
    }[op.kind]
    # Attribute floats enter the reference as numpy "weak" scalars: rounded to x's type.
    first, second = dtype.type(first), dtype.type(second)

    def unary(x, out):
        _unary(x, out, code, first, second)

    return unary


@njit(cache=True, error_model="numpy")
def _unary(x, out, code, p, q):
    """out = f(x) elementwise for unary op ``code`` with parameters p, q (a thin shell per
    rank over one flat kernel, which each new rank then need not recompile)."""
    _unary_flat(x.reshape(x.size), out.reshape(out.size), code, p, q)


@njit(cache=True, error_model="numpy")
def _unary_flat(xf, of, code, p, q):
    """``_unary`` on the flat arrays."""
    if code == _CLAMP:  # keeps nan as np.maximum / np.minimum do
        for i in range(xf.size):
            v = xf[i]
            v = p if v < p else v
            of[i] = q if v > q else v
    elif code == _SIGMOID:  # exp of -|x| never overflows
        for i in range(xf.size):
            v = xf[i]
            decay = np.exp(-abs(v))
            positive = _ONE / (_ONE + decay)
            of[i] = positive if v >= 0 else decay * positive
    elif code == _TANH:
        for i in range(xf.size):
            of[i] = np.tanh(xf[i])
    elif code == _HARD_SWISH:
        for i in range(xf.size):
            v = xf[i]
            of[i] = v * hard_swish_gate(v)
    elif code == _LEAKY_RELU:
        for i in range(xf.size):
            v = xf[i]
            of[i] = v if v >= 0 else p * v
    elif code == _SQRT:
        for i in range(xf.size):
            of[i] = np.sqrt(xf[i])
    elif code == _NEG:
        for i in range(xf.size):
            of[i] = -xf[i]
    elif code == _LOG:
        for i in range(xf.size):
            of[i] = np.log(xf[i])
    elif code == _ERF:  # in float64, as the reference
        for i in range(xf.size):
            of[i] = math.erf(np.float64(xf[i]))
    elif code == _GELU:  # in float64, as the reference
        for i in range(xf.size):
            v = np.float64(xf[i])
            of[i] = 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))
    elif code == _GELU_TANH:  # in float64, as the reference
        for i in range(xf.size):
            v = np.float64(xf[i])
            inner = _SQRT_TWO_OVER_PI * (v + _GELU_CUBIC * v * v * v)
            of[i] = 0.5 * v * (1.0 + math.tanh(inner))
    else:  # hard sigmoid: clamp(p·x + q, 0, 1), nan kept
        for i in range(xf.size):
            v = p * xf[i] + q
            v = _ZERO if v < _ZERO else v
            of[i] = _ONE if v > _ONE else v


_ADD, _SUB, _MUL, _DIV, _POW = range(5)
_BINARY = {"add": _ADD, "sub": _SUB, "mul": _MUL, "div": _DIV, "pow": _POW}
_RANK = 4  # loop nest depth of the binary kernel


def broadcast_plan(out_shape, a_shape, b_shape):
    """(shape, a strides, b strides), each _RANK long, walking the C-contiguous result.

    Size-1 axes are dropped and neighbouring axes merged wherever result and both operands
    are contiguous across them, then the nest is padded in front with size-1 axes. None when
    the broadcast still needs more than _RANK axes.
    """
    a_strides = element_strides(a_shape, out_shape)
    b_strides = element_strides(b_shape, out_shape)
    axes = [(d, sa, sb) for d, sa, sb in zip(out_shape, a_strides, b_strides) if d != 1]
    merged: list[tuple[int, int, int]] = []
    for d, sa, sb in axes:
        if merged:
            pd, psa, psb = merged[-1]
            if psa == sa * d and psb == sb * d:  # previous axis steps over whole runs of this
                merged[-1] = (pd * d, sa, sb)
                continue
        merged.append((d, sa, sb))
    if len(merged) > _RANK:
        return None
    merged = [(1, 0, 0)] * (_RANK - len(merged)) + merged
    shape, sa, sb = zip(*merged)
    return tuple(shape), tuple(sa), tuple(sb)


@kernel_builder("add", "sub", "mul", "div", "pow")
def build_binary(op: Op) -> KernelFn:
    """add / sub / mul / div / pow with numpy broadcasting; add applies its fused
    activation."""
    dtype = float_dtype(op)
    out_shape = static_shape(op, op.results[0], "result")
    plan = broadcast_plan(
        out_shape,
        static_shape(op, op.operands[0], "a"),
        static_shape(op, op.operands[1], "b"),
    )
    if plan is None:
        raise BackendError(f"op {op.label()}: this broadcast needs more than {_RANK} loop axes")
    code = _BINARY[op.kind]
    act = op.attrs.get("activation", "none") != "none"
    hard_swish, lo, hi = activation_args(op, dtype)

    def binary(a, b, out):
        _binary(a, b, out, *plan, code, act, hard_swish, lo, hi)

    return binary


@njit(cache=True, error_model="numpy")
def _binary(a, b, out, shape, sa, sb, code, act, hs, lo, hi):
    """out = a ∘ b over the broadcast plan, then add's fused activation when ``act``.

    A thin shell per operand rank over one flat kernel, as for ``_unary``.
    """
    af, bf, of = a.reshape(a.size), b.reshape(b.size), out.reshape(out.size)
    _binary_flat(af, bf, of, shape, sa, sb, code, act, hs, lo, hi)


@njit(cache=True, error_model="numpy")
def _binary_flat(af, bf, of, shape, sa, sb, code, act, hs, lo, hi):
    """``_binary`` on the flat arrays."""
    n0, n1, n2, n3 = shape
    o = 0
    for i0 in range(n0):
        for i1 in range(n1):
            for i2 in range(n2):
                ao = i0 * sa[0] + i1 * sa[1] + i2 * sa[2]
                bo = i0 * sb[0] + i1 * sb[1] + i2 * sb[2]
                _binary_run(af, ao, sa[3], bf, bo, sb[3], of, o, n3, code)
                if act:  # a second pass over the run while it is in L1
                    activate_inplace(of, o, n3, hs, lo, hi)
                o += n3


@njit(cache=True, error_model="numpy")
def _combine(code, x, y):
    """x ∘ y for binary op ``code``."""
    if code == _ADD:
        return x + y
    if code == _SUB:
        return x - y
    if code == _MUL:
        return x * y
    if code == _DIV:
        return x / y
    return x**y


@njit(cache=True, error_model="numpy")
def _binary_run(af, ao, sa, bf, bo, sb, of, oo, count, code):
    """of[oo + k] = af[ao + k·sa] ∘ bf[bo + k·sb] for k < count; unit and zero strides
    get loops of their own (uint64 indices: no wraparound check, so they vectorise)."""
    ao, bo, oo, n = uint64(ao), uint64(bo), uint64(oo), uint64(count)
    if sa == 1 and sb == 1:
        for k in range(n):
            of[oo + k] = _combine(code, af[ao + k], bf[bo + k])
    elif sa == 1 and sb == 0:
        y = bf[bo]
        for k in range(n):
            of[oo + k] = _combine(code, af[ao + k], y)
    elif sa == 0 and sb == 1:
        x = af[ao]
        for k in range(n):
            of[oo + k] = _combine(code, x, bf[bo + k])
    else:
        step_a, step_b = uint64(sa), uint64(sb)
        for k in range(n):
            of[oo + k] = _combine(code, af[ao + k * step_a], bf[bo + k * step_b])
