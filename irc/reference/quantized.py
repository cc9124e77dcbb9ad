"""Quantized op semantics: ``irc.quant``'s integer arithmetic, exactly.

These are the meaning of the quantized levels L1–L3 and the oracle every integer kernel is
tested against, bit for bit. Accumulators are exact: integer levels are multiplied and
summed in float64 BLAS, where every partial sum is an integer below 2^53, then converted
to int64. The functions are ``typed``: they read scales and zero points from the operand
types (``types=``), which is where the IR keeps them.
"""

from __future__ import annotations

import numpy as np

from irc import quant
from irc.reference.linalg import conv2d
from irc.reference.registry import semantics
from irc.tensor import ElidedTensor


def _per_tensor(t) -> tuple[float, int]:
    return t.quant.scales[0], t.quant.zero_points[0]


def _nchw(x, layout: str) -> np.ndarray:
    """An activation stored in ``layout`` as NCHW (a view)."""
    return np.transpose(x, (0, 3, 1, 2)) if layout == "nhwc" else x


def _stored(y, layout: str) -> np.ndarray:
    """An NCHW result stored in ``layout`` (contiguous)."""
    return np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1)) if layout == "nhwc" else y)


@semantics("quantize", typed=True)
def quantize(x, *, scale, zero_point, types):
    """float → int8 levels (round half to even, saturate; NaN → zero point)."""
    return quant.quantize(x, scale, zero_point)


@semantics("dequantize", typed=True)
def dequantize(x, *, types):
    """levels → float32 reals, per tensor or along the type's axis."""
    q = types[0].quant
    return quant.dequantize(x, q.scales, q.zero_points, q.axis)


@semantics("qconstant")
def qconstant(*, value, dtype, shape, scales, axis, packed):
    """The constant's levels, unpacked (int8 for weights, int32 for a bias)."""
    if isinstance(value, ElidedTensor):
        value.require(f"qconstant {list(shape)}")
    if packed:
        return quant.unpack(value, int(dtype[1:]), shape)
    return np.asarray(value)


def _layer_tail(types, out_channels, b, multiplier, shift, out_scale):
    """Bias levels and (M, shift) per channel: given (L2) or derived from the types (L1)."""
    x_scale, _ = _per_tensor(types[0])
    w_scales = np.asarray(types[1].quant.scales, np.float32)
    if b is None:
        bias = np.zeros(out_channels, np.int64)
    elif np.asarray(b).dtype.kind == "f":
        bias = quant.quantize_bias(b, x_scale, w_scales).astype(np.int64)
    else:
        bias = np.asarray(b, np.int64)
    if multiplier is None:
        multiplier, shift = quant.layer_multipliers(x_scale, w_scales, out_scale)
    m = np.broadcast_to(np.asarray(multiplier, np.int64), (out_channels,))
    s = np.broadcast_to(np.asarray(shift, np.int64), (out_channels,))
    return bias, m, s


def _clamp(activation, act_min, act_max, out_scale, out_zero_point):
    return quant.activation_levels(activation, act_min, act_max, out_scale, out_zero_point)


@semantics("qconv2d", typed=True)
def qconv2d(x, w, b=None, multiplier=None, shift=None, *, strides, pads, dilations, group,
            out_scale, out_zero_point, activation, act_min, act_max, layout="nchw",
            types):  # fmt: skip
    """Σ (x - z_x)·w + bias in exact integers, requantized per output channel, clamped;
    ``x`` and the result stored in ``layout``."""
    _, x_zero = _per_tensor(types[0])
    centred = _nchw(np.asarray(x, np.float64), layout) - x_zero  # padding adds real zeros
    acc = conv2d(
        centred, np.asarray(w, np.float64), strides=strides, pads=pads, dilations=dilations,
        group=group,
    )  # fmt: skip
    out_channels = w.shape[0]
    bias, m, s = _layer_tail(types, out_channels, b, multiplier, shift, out_scale)
    acc = np.rint(acc).astype(np.int64) + bias.reshape(1, -1, 1, 1)
    lo, hi = _clamp(activation, act_min, act_max, out_scale, out_zero_point)
    y = quant.requantize(acc, m.reshape(1, -1, 1, 1), s.reshape(1, -1, 1, 1), out_zero_point,
                         lo, hi)  # fmt: skip
    return _stored(y, layout)


@semantics("qgemm", typed=True)
def qgemm(a, w, b=None, multiplier=None, shift=None, *, out_scale, out_zero_point, activation,
          act_min, act_max, types):  # fmt: skip
    """(a - z_a) @ w.T + bias in exact integers, requantized per output feature, clamped."""
    _, a_zero = _per_tensor(types[0])
    acc = (np.asarray(a, np.float64) - a_zero) @ np.asarray(w, np.float64).T
    bias, m, s = _layer_tail(types, w.shape[0], b, multiplier, shift, out_scale)
    acc = np.rint(acc).astype(np.int64) + bias
    lo, hi = _clamp(activation, act_min, act_max, out_scale, out_zero_point)
    return quant.requantize(acc, m, s, out_zero_point, lo, hi)


@semantics("qadd", typed=True)
def qadd(a, b, *, out_scale, out_zero_point, activation, act_min, act_max, types):
    """Both operands rescaled to the output scale by fixed point, summed, rounded once."""
    (sa, za), (sb, zb) = _per_tensor(types[0]), _per_tensor(types[1])
    ma, mb, shift = quant.add_multipliers(sa / out_scale, sb / out_scale)
    acc = (np.asarray(a, np.int64) - za) * ma + (np.asarray(b, np.int64) - zb) * mb
    lo, hi = _clamp(activation, act_min, act_max, out_scale, out_zero_point)
    return np.clip(quant.rounding_shift(acc, shift) + out_zero_point, lo, hi).astype(np.int8)


@semantics("qglobal_avg_pool", typed=True)
def qglobal_avg_pool(x, *, out_scale, out_zero_point, layout="nchw", types):
    """The int sum over spatial axes, minus count·z_x, requantized by s_x / (count·s_y)."""
    if layout == "nhwc":
        args = dict(out_scale=out_scale, out_zero_point=out_zero_point, types=types)
        return _stored(qglobal_avg_pool(_nchw(x, layout), **args), layout)
    x_scale, x_zero = _per_tensor(types[0])
    axes = tuple(range(2, x.ndim))
    count = int(np.prod([x.shape[i] for i in axes], dtype=np.int64))
    total = np.sum(np.asarray(x, np.int64), axis=axes, keepdims=True) - count * x_zero
    m, s = quant.mean_multiplier(x_scale, count, out_scale)
    return quant.requantize(total, m[0], s[0], out_zero_point)


@semantics("qconcat", typed=True)
def qconcat(*xs, axis, out_scale, out_zero_point, types):
    """The operands joined along ``axis``, each at the output's scale and zero point: as
    they are where they already have them, else ``irc.quant.rescale``d."""
    parts = []
    for x, t in zip(xs, types):
        scale, zero_point = _per_tensor(t)
        if np.float32(scale) == np.float32(out_scale) and zero_point == out_zero_point:
            parts.append(np.asarray(x, np.int8))
        else:
            parts.append(quant.rescale(x, scale, zero_point, out_scale, out_zero_point))
    return np.concatenate(parts, axis=axis)


@semantics("qlut", typed=True)
def qlut(x, *, table, function, alpha, beta, out_scale, out_zero_point, types):
    """Each level's table entry: table[x + 128] (``irc.reference.lut`` makes the table)."""
    if isinstance(table, ElidedTensor):
        table.require("qlut table")
    return np.asarray(table, np.int8)[np.asarray(x, np.int64) + 128]
