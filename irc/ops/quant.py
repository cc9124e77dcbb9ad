"""Quantized op kinds: quantize / dequantize at precision boundaries, quantized constants,
and the integer layers (qconv2d, qgemm, qadd, qglobal_avg_pool, qconcat, qlut). ``max_pool`` and
nearest ``resize`` need no integer kind: they select levels, so they run on qi8 values as
they are and their result keeps the input's type (``irc.ops.nn``).

What each computes is ``irc.quant``'s arithmetic (see ``irc.reference.quantized``). The
three lowering levels use the same kinds:

- **L1** (``quantize``): layer operands and results carry quantized types, biases are
  still float constants, requantization is implied by the types.
- **L2** (``lower-quantized``): the bias is an int32 ``qconstant`` at scale s_x·s_w, and
  the per-channel fixed-point ``multiplier`` and ``shift`` are explicit int32 operands.
- **L3** (``pack-weights``): 4- and 2-bit weight constants hold packed bytes.

Weights are [O, ...] with output channels on axis 0: qconv2d takes OIHW, qgemm [N, K].

``layout`` (qconv2d, qglobal_avg_pool) names how the op's activations are stored:
``nchw`` as ONNX lays them out, or ``nhwc`` (channels last, chosen by the ``channels-last``
pass): the value types then hold the physical shapes [N, H, W, C]; weights stay OIHW.
"""

from __future__ import annotations

import math

import numpy as np

from irc.errors import TypeInferenceError
from irc.opdef import Attr, define
from irc.ops.nn import _infer_concat, _infer_conv
from irc.ops.shape_rules import (
    LAYOUT,
    broadcast_shapes,
    logical_shape,
    physical_shape,
    static_dim,
)
from irc.quant import INT32_MAX, MAX_SHIFT, packed_row_bytes
from irc.tensor import ElidedTensor, tensor_value_type
from irc.types import DType, QuantParams, TensorType

INF = float("inf")

# a fused activation on integer layers folds into the clamp (hard_swish does not fold)
INT_ACTIVATION = {
    "activation": Attr("str", "none", ("none", "relu", "clip")),
    "act_min": Attr("float", -INF),
    "act_max": Attr("float", INF),
}
OUTPUT_QUANT = {"out_scale": Attr("float"), "out_zero_point": Attr("int", 0)}
WEIGHT_DTYPES = ("i8", "i4", "i2")
QCONSTANT_DTYPES = WEIGHT_DTYPES + ("i32",)


def int8_type(shape, scale: float, zero_point: int) -> TensorType:
    """An int8 activation type ``qi8<scale:zero_point>[shape]``."""
    if not (scale > 0 and math.isfinite(scale)):
        raise TypeInferenceError(f"a quantization scale must be positive and finite, got {scale}")
    if not -128 <= zero_point <= 127:
        raise TypeInferenceError(f"an int8 zero point must be in [-128, 127], got {zero_point}")
    return TensorType(DType.I8, tuple(shape), QuantParams.per_tensor(scale, zero_point))


def _output(attrs, shape) -> TensorType:
    return int8_type(shape, attrs["out_scale"], attrs["out_zero_point"])


def require_int8(t: TensorType, what: str) -> None:
    """TypeInferenceError unless ``t`` is a per-tensor int8 quantized type."""
    if t.dtype != DType.I8 or t.quant is None or t.quant.axis is not None:
        raise TypeInferenceError(f"{what} must be a per-tensor qi8 value, got {t}")


def require_weight(t: TensorType, what: str) -> None:
    """TypeInferenceError unless ``t`` is a per-output-channel i8/i4/i2 weight type."""
    if t.dtype.short not in WEIGHT_DTYPES or t.quant is None or t.quant.axis != 0:
        raise TypeInferenceError(
            f"{what} must be an i8/i4/i2 weight quantized along axis 0, got {t}"
        )


def _check_layer_tail(types, out_channels, what: str) -> None:
    """The optional bias (f32 at L1, i32 from L2) and L2's multiplier / shift operands."""
    if len(types) >= 3:
        b = types[2]
        if b.shape != (out_channels,) or b.dtype not in (DType.F32, DType.I32):
            raise TypeInferenceError(f"{what} bias must be f32 or i32 [{out_channels}], got {b}")
    if len(types) == 4:
        raise TypeInferenceError(f"{what}: a multiplier needs its shift operand")
    for t, name in zip(types[3:], ("multiplier", "shift")):
        if t.dtype != DType.I32 or t.shape not in ((out_channels,), (1,)):
            raise TypeInferenceError(f"{what} {name} must be i32 [{out_channels}] or [1], got {t}")


# ------------------------------------------------------------------ requantization payloads
# The shifts ``irc.quant.rounding_shift`` (and the kernels' copy of it) compute for: 2^-shift
# with a half to round to needs shift >= 1, and acc * M fits int64 only up to MAX_SHIFT.
MIN_SHIFT = 1
# M in [2^30, 2^31) or 0 (``irc.quant.quantize_multiplier``): a non-negative int32
MULTIPLIER_RANGE = (0, INT32_MAX)
SHIFT_RANGE = (MIN_SHIFT, MAX_SHIFT)


def payload_range_problem(what: str, values, lo: int, hi: int) -> str | None:
    """A one-line problem if an integer payload holds a value outside [lo, hi]: the first
    such value and, when there are several channels, its channel; None when all fit."""
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind not in "iu":
        return f"{what} must hold integers, got {flat.dtype}"
    if flat.dtype == np.uint64:  # the one integer dtype int64 cannot hold
        bad = [i for i, v in enumerate(flat.tolist()) if not lo <= v <= hi]
    else:
        wide = flat.astype(np.int64)
        bad = np.flatnonzero((wide < lo) | (wide > hi)).tolist()
    if not bad:
        return None
    first = int(bad[0])
    problem = f"{what} {int(flat[first])} outside [{lo}, {hi}]"
    if flat.size > 1:
        others = len(bad) - 1
        more = f", and {others} other channel{'s' if others > 1 else ''}" if others else ""
        problem += f" (channel {first}{more})"
    return problem


def _requantization_payloads(payloads: dict[int, object]) -> list[str]:
    """Problems of an L2 integer layer's constant multiplier (operand 3) and shift (4)."""
    problems = []
    for index, what, (lo, hi) in ((3, "multiplier", MULTIPLIER_RANGE), (4, "shift", SHIFT_RANGE)):
        if index in payloads:
            problem = payload_range_problem(what, payloads[index], lo, hi)
            if problem:
                problems.append(problem)
    return problems


# What type rules cannot see: op kind -> (operand indices, check of those operands'
# constant payloads by index -> problems). The verifier applies them where the operands
# are constants (a runtime value cannot be checked before it exists).
PAYLOAD_RULES = {
    "qconv2d": ((3, 4), _requantization_payloads),
    "qgemm": ((3, 4), _requantization_payloads),
}


# ------------------------------------------------------------------ boundaries
def _infer_quantize(types, attrs):
    (x,) = types
    if not x.dtype.is_float:
        raise TypeInferenceError(f"quantize takes a float value, got {x}")
    return [int8_type(x.shape, attrs["scale"], attrs["zero_point"])]


define(
    "quantize",
    ["x"],
    {"scale": Attr("float"), "zero_point": Attr("int", 0)},
    _infer_quantize,
    doc="float → qi8<scale:zero_point>: clamp(rint(x / scale) + zero_point), NaN → zero_point",
    traits=("elementwise",),
)


def _infer_dequantize(types, attrs):
    (x,) = types
    if x.quant is None:
        raise TypeInferenceError(f"dequantize takes a quantized value, got {x}")
    return [TensorType(DType.F32, x.shape)]


define(
    "dequantize",
    ["x"],
    {},
    _infer_dequantize,
    doc="quantized → f32: (x - zero_point) * scale, per tensor or along the type's axis",
    traits=("elementwise",),
)


def _infer_qconstant(types, attrs):
    dtype = DType.from_short(attrs["dtype"])
    shape, scales, axis = attrs["shape"], attrs["scales"], attrs["axis"]
    scales_type = tensor_value_type(scales)
    count = shape[axis] if axis >= 0 else 1
    if scales_type.shape != (count,):
        raise TypeInferenceError(
            f"qconstant needs {count} scales along axis {axis}, got {list(scales_type.shape)}"
        )
    if isinstance(scales, ElidedTensor):
        quant = QuantParams(None, None, axis, count) if axis >= 0 else None
    elif axis >= 0:
        quant = QuantParams.per_axis(scales.tolist(), (0,) * count, axis)
    else:
        quant = QuantParams.per_tensor(float(scales[0]))
    if quant is None:
        raise TypeInferenceError("a per-tensor qconstant's scale cannot be elided")
    if attrs["packed"] and dtype.short not in ("i4", "i2"):
        raise TypeInferenceError(f"only i4 and i2 constants are packed, not {dtype.short}")
    return [TensorType(dtype, shape, quant)]


def qconstant_payload_type(attr: str, result: TensorType, attrs: dict) -> TensorType:
    """The stored type of a qconstant's tensor attribute (how the parser reads its bytes)."""
    if attr == "scales":
        count = result.quant.count if result.quant is not None else 1
        return TensorType(DType.F32, (count,))
    if attrs.get("packed"):
        k = int(math.prod(result.shape[1:]))
        bits = result.dtype.bits
        return TensorType(DType.U8, (result.shape[0], packed_row_bytes(k, bits)))
    return TensorType(DType.from_numpy(result.dtype.numpy), result.shape)


define(
    "qconstant",
    [],
    {
        "value": Attr("tensor"),
        "dtype": Attr("str", "i8", QCONSTANT_DTYPES),
        "shape": Attr("ints"),
        "scales": Attr("tensor"),
        "axis": Attr("int", 0),
        "packed": Attr("int", 0, (0, 1)),
    },
    _infer_qconstant,
    doc="a quantized constant (zero points 0): int8 levels, int32 bias levels, or (packed=1) "
    "i4/i2 levels packed along the reduction axis; scales along `axis` (-1: per tensor)",
    traits=("constant",),
)
LUT_SIZE = 256  # one entry per int8 level
LUT_FUNCTIONS = (
    "sigmoid",
    "tanh",
    "hard_sigmoid",
    "hard_swish",
    "silu",
    "gelu",
    "gelu_tanh",
    "affine",
)


def qlut_payload_type(attr: str, result: TensorType, attrs: dict) -> TensorType:
    """The stored type of a qlut's table: int8 [256]."""
    return TensorType(DType.I8, (LUT_SIZE,))


PAYLOAD_TYPES = {"qconstant": qconstant_payload_type, "qlut": qlut_payload_type}


# ------------------------------------------------------------------ integer layers
def _infer_qconv(types, attrs):
    x, w = types[0], types[1]
    require_int8(x, "qconv2d input")
    require_weight(w, "qconv2d weight")
    float_x = TensorType(DType.F32, logical_shape(x.shape, attrs, "qconv2d input"))
    float_w = TensorType(DType.F32, w.shape)
    conv_attrs = dict(attrs, activation="none", layout="nchw")  # on the logical shapes
    (out,) = _infer_conv([float_x, float_w], conv_attrs)
    _check_layer_tail(types, static_dim(w.shape[0], "qconv2d output channels"), "qconv2d")
    return [_output(attrs, physical_shape(out.shape, attrs))]


define(
    "qconv2d",
    ["x", "w", "b?", "multiplier?", "shift?"],
    {
        "strides": Attr("ints", (1, 1)),
        "pads": Attr("ints", (0, 0, 0, 0)),
        "dilations": Attr("ints", (1, 1)),
        "group": Attr("int", 1),
        **OUTPUT_QUANT,
        **INT_ACTIVATION,
        **LAYOUT,
    },
    _infer_qconv,
    doc="integer convolution: qi8 NCHW (or, layout nhwc, NHWC) input (padding is real zero), "
    "per-channel i8/i4/i2 OIHW weight, bias, requantized to qi8<out_scale:out_zero_point> and "
    "clamped by the fused activation",
    traits=("integer-layer",),
)


def _infer_qgemm(types, attrs):
    a, w = types[0], types[1]
    require_int8(a, "qgemm input")
    require_weight(w, "qgemm weight")
    if a.rank != 2 or w.rank != 2:
        raise TypeInferenceError(f"qgemm takes [M,K] and [N,K], got {a}, {w}")
    if a.shape[1] != w.shape[1]:
        raise TypeInferenceError(f"qgemm: inner dimensions {a.shape[1]} and {w.shape[1]} differ")
    _check_layer_tail(types, static_dim(w.shape[0], "qgemm output features"), "qgemm")
    return [_output(attrs, (a.shape[0], w.shape[0]))]


define(
    "qgemm",
    ["a", "w", "b?", "multiplier?", "shift?"],
    {**OUTPUT_QUANT, **INT_ACTIVATION},
    _infer_qgemm,
    doc="integer a @ w.T + bias: qi8 [M,K] times per-channel weight [N,K], requantized and "
    "clamped like qconv2d",
    traits=("integer-layer",),
)


def _infer_qadd(types, attrs):
    a, b = types
    require_int8(a, "qadd operand a")
    require_int8(b, "qadd operand b")
    return [_output(attrs, broadcast_shapes([a.shape, b.shape]))]


define(
    "qadd",
    ["a", "b"],
    {**OUTPUT_QUANT, **INT_ACTIVATION},
    _infer_qadd,
    doc="integer add with rescale: both operands brought to the output scale by fixed-point "
    "multipliers, summed, rounded once, clamped by the fused activation",
    traits=("elementwise",),
)


def _infer_qgap(types, attrs):
    (x,) = types
    require_int8(x, "qglobal_avg_pool input")
    if x.rank < 3:
        raise TypeInferenceError("global pooling needs an input of rank >= 3")
    shape = logical_shape(x.shape, attrs, "qglobal_avg_pool input")
    return [_output(attrs, physical_shape(shape[:2] + (1,) * (x.rank - 2), attrs))]


define(
    "qglobal_avg_pool",
    ["x"],
    {**OUTPUT_QUANT, **LAYOUT},
    _infer_qgap,
    doc="integer mean over all spatial axes (layout nchw: axes 2.., nhwc: axes 1 and 2): the "
    "int32 sum requantized to the output type",
)


def _infer_qconcat(types, attrs):
    for i, t in enumerate(types):
        require_int8(t, f"qconcat operand {i}")
    (joined,) = _infer_concat(types, attrs)
    return [_output(attrs, joined.shape)]


define(
    "qconcat",
    ["xs*"],
    {"axis": Attr("int"), **OUTPUT_QUANT},
    _infer_qconcat,
    doc="integer join along axis: an operand quantized as the output is copied, any other "
    "requantized to the output's scale and zero point by a fixed-point multiplier",
)


def _infer_qlut(types, attrs):
    (x,) = types
    require_int8(x, "qlut input")
    table = tensor_value_type(attrs["table"])
    if table.dtype != DType.I8 or table.shape != (LUT_SIZE,):
        raise TypeInferenceError(f"a qlut table must be i8[{LUT_SIZE}], got {table}")
    return [_output(attrs, x.shape)]


define(
    "qlut",
    ["x"],
    {
        "table": Attr("tensor"),
        "function": Attr("str", choices=LUT_FUNCTIONS),
        "alpha": Attr("float", 0.2),
        "beta": Attr("float", 0.5),
        **OUTPUT_QUANT,
    },
    _infer_qlut,
    doc="integer lookup: y = table[x + 128], the table holding the output level of each "
    "input level of the smooth activation `function` (silu: x*sigmoid(x); affine: "
    "x*alpha + beta; alpha, beta: also hard_sigmoid's), made by irc.reference.lut",
    traits=("elementwise",),
)
