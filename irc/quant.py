"""The quantization arithmetic: one spec, used by every pass, the reference and the kernels.

Values (``real = scale * (level - zero_point)``):

- **Activations** are 8-bit signed per tensor, asymmetric: levels in [-128, 127], the
  range always containing 0 so that zero (padding, ReLU's floor) is exact.
- **Weights** are signed with zero point 0 and one scale per output channel, at
  b ∈ {8, 4, 2} bits: levels ±127 at 8 bits (the restricted range, so that an int8
  product never reaches -128·-128), the full two's complement range [-8, 7] at 4 bits,
  and at 2 bits the four odd levels {-3, -1, 1, 3}: a grid symmetric about zero, with no
  level at zero (a weight near zero takes ±1 and the error feedback of GPTQ compensates).
  With so few levels every code matters: ternary {-1, 0, 1} wastes a quarter of INT2's
  codes, two's complement [-2, 1] spends its fourth on one side only; on MobileNetV2's
  classifier the odd levels lower the GPTQ-rounded output error by 41% (2.3 dB) against
  [-2, 1]. The scale maps the top level (127, 7 or 3) to the clipping range, which per
  channel minimises the squared error (``"mse"``) or is the channel's largest magnitude
  (``"minmax"``, the baseline). ``round_levels`` rounds to the nearest level of a grid.
  Each scale is a float32 value of at most ``SCALE_BITS`` (11) significant bits, a
  float16's significand (``storable_scales``: rounded before the weights are rounded with
  it), so that a model file stores it in two bytes and every path computes with the value
  stored.
- **Biases** are int32 at scale ``s_x * s_w[c]`` (a model file may store them narrower,
  ``irc.derived_constants``), clipped to ±2^30; a layer reduces over
  at most ``MAX_REDUCTION`` products, so that ``Σ (x - z_x)·w + bias`` always fits int32
  (|x - z_x| ≤ 255, |w| ≤ 127) and ``acc * M`` fits int64: nothing ever wraps.

Rounding is **half to even** everywhere: float → level (as ONNX QuantizeLinear), bias, and
the fixed-point requantization below, so float and integer paths never disagree on a tie.

Integer layers accumulate int8 × int-b products exactly in int32, add the bias, and
requantize by a per-channel fixed-point multiplier: ``real ≈ M * 2^-shift`` with
``M`` in [2^30, 2^31), computed in int64 as ``round_half_even(acc * M / 2^shift)``, then
the output zero point is added and the result clamped to the fused activation's levels.

INT4 and INT2 weights are packed along the reduction axis, low bits first: element ``k``
of output channel ``o`` sits in byte ``k*b // 8`` of row ``o`` at bit ``k*b % 8`` as a
two's-complement b-bit field, the level itself at 4 bits and (level - 1) / 2 at 2 bits
(so a field f in [-2, 1] is the level 2f + 1); each row is padded to whole bytes. A
weight of shape [O, ...] packs as uint8 [O, ceil(K*b / 8)] where K is the product of the
other dims.
"""

from __future__ import annotations

import math

import numpy as np

ACT_QMIN, ACT_QMAX = -128, 127
WEIGHT_BITS = (8, 4, 2)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MULTIPLIER_BITS = 31  # M in [2^30, 2^31)
MAX_SHIFT = 62  # |acc| < 2^31 and M < 2^31, so acc * M fits int64 for every shift
BIAS_LIMIT = 2**30
MAX_REDUCTION = (2**30) // (255 * 127)  # 33,156 products: |Σ| < 2^30
# an all-zero channel's INT2 scale, of the layer's smallest: small enough that its ±1
# levels are near zero, large enough that its bias still fits int32 at s_x · s_w
ZERO_CHANNEL_FRACTION = 2.0**-8
SCALE_BITS = 11  # significant bits of a weight scale: float16's (10 stored + the leading 1)


def weight_qmax(bits: int) -> int:
    """The largest weight level at ``bits`` bits: 127, 7 or 3."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weights are quantized to {WEIGHT_BITS} bits, not {bits}")
    return 3 if bits == 2 else 2 ** (bits - 1) - 1


def weight_qmin(bits: int) -> int:
    """The smallest weight level at ``bits`` bits: -127 at 8 (the restricted range), -8 at
    4 (two's complement), -3 at 2 (the odd levels)."""
    return -weight_qmax(bits) if bits in (8, 2) else -(2 ** (bits - 1))


def weight_levels(bits: int) -> np.ndarray:
    """Every weight level at ``bits`` bits, ascending (int64): at 2 bits -3, -1, 1, 3."""
    step = 2 if bits == 2 else 1
    return np.arange(weight_qmin(bits), weight_qmax(bits) + 1, step)


def round_levels(x: np.ndarray, bits: int) -> np.ndarray:
    """The nearest weight level at ``bits`` bits to each of ``x`` (weights over their
    scale; float64): half to even on the integer grids, ties up on the odd INT2 grid."""
    x = np.asarray(x, np.float64)
    if bits == 2:
        return np.clip(2.0 * np.floor(x / 2.0) + 1.0, -3.0, 3.0)
    return np.clip(np.rint(x), weight_qmin(bits), weight_qmax(bits))


def storable_scales(scales) -> np.ndarray:
    """``scales`` rounded to ``SCALE_BITS`` significant bits (half to even, from float64)
    as float32: in float16's normal range, the nearest float16 value."""
    mantissa, exponent = np.frexp(np.asarray(scales, np.float64))  # mantissa in [0.5, 1)
    unit = 2.0**SCALE_BITS
    return np.ldexp(np.rint(mantissa * unit) / unit, exponent).astype(np.float32)


def as_f32(x) -> float:
    """``x`` rounded to float32 (every scale is a float32 value, so text round-trips)."""
    return float(np.float32(x))


# ------------------------------------------------------------------ activations
def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point of an int8 activation whose real range is [lo, hi].

    The range is widened to contain 0; an empty range (all zeros) gets scale 1.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"activation range [{lo}, {hi}] is not finite")
    scale = as_f32((hi - lo) / (ACT_QMAX - ACT_QMIN))
    if scale == 0.0 or not math.isfinite(scale):
        return 1.0, 0
    zero_point = int(np.clip(np.rint(ACT_QMIN - lo / scale), ACT_QMIN, ACT_QMAX))
    return scale, zero_point


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 levels of float ``x``: clamp(rint(x / scale) + zero_point), in float32 math.

    NaN maps to the zero point. This is ONNX QuantizeLinear with saturation.
    """
    x = np.asarray(x, np.float32)
    v = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    v = np.where(np.isnan(v), np.float32(zero_point), v)
    return np.clip(v, ACT_QMIN, ACT_QMAX).astype(np.int8)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """float32 reals of levels ``q``: (q - zero_point) * scale, per tensor or along ``axis``."""
    q = np.asarray(q)
    scale = np.asarray(scale, np.float32)
    zero_point = np.asarray(zero_point, np.float32)
    if axis is not None:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def activation_levels(activation: str, act_min: float, act_max: float, scale: float,
                      zero_point: int) -> tuple[int, int]:  # fmt: skip
    """The [lo, hi] levels a fused ReLU / clip folds into (the whole range for none).

    Quantization is monotonic, so clamping levels equals quantizing the clamped real.
    """
    if activation == "none":
        return ACT_QMIN, ACT_QMAX
    if activation == "relu":
        act_min, act_max = 0.0, math.inf
    elif activation != "clip":
        raise ValueError(f"activation {activation!r} does not fold into an integer clamp")
    lo = int(quantize(np.float32(act_min), scale, zero_point)) if act_min > -math.inf else ACT_QMIN
    hi = int(quantize(np.float32(act_max), scale, zero_point)) if act_max < math.inf else ACT_QMAX
    return lo, max(lo, hi)


# ------------------------------------------------------------------ weights
def _as_rows(w: np.ndarray) -> np.ndarray:
    """``w`` as [O, K]: output channels on axis 0, everything else flattened."""
    return np.asarray(w, np.float64).reshape(w.shape[0], -1)


def weight_scales(w: np.ndarray, bits: int, method: str = "mse") -> np.ndarray:
    """Per-output-channel (axis 0) scales for ``w`` at ``bits``; float32 values of
    ``SCALE_BITS`` significant bits (``storable_scales``).

    ``minmax``: the channel's largest magnitude maps to the top level. ``mse``: the clip
    ratio in [0.2, 1] of that magnitude (a grid of 80) with the least squared error, each
    candidate judged at its storable value.
    A channel of zeros gets scale 1, except at 2 bits, whose grid has no zero level: there
    it gets ``ZERO_CHANNEL_FRACTION`` of the smallest other channel's scale (of 1 when all
    are zero), so that its levels ±1 stand for weights near zero.
    """
    qmax = weight_qmax(bits)
    rows = _as_rows(w)
    if not np.all(np.isfinite(rows)):
        raise ValueError("weights hold NaN or infinity")
    peak = np.max(np.abs(rows), axis=1) if rows.size else np.zeros(rows.shape[0])
    if method == "minmax":
        best = storable_scales(peak / qmax)
    elif method == "mse":
        # ratio 1 first, so that on a tie the unclipped scale stays
        ratios = np.concatenate([[1.0], np.linspace(0.2, 1.0, 80)[:-1]])
        candidates = storable_scales(peak[None, :] * ratios[:, None] / qmax)  # [R, O]
        errors = np.empty(candidates.shape)
        step = max(1, _ERROR_CHUNK // max(rows.size, 1))  # ratios judged at a time
        for start in range(0, len(ratios), step):
            errors[start : start + step] = _weight_errors(rows, candidates[start : start + step],
                                                          bits)  # fmt: skip
        best = candidates[np.argmin(errors, axis=0), np.arange(rows.shape[0])]
    else:
        raise ValueError(f"unknown weight clipping method {method!r}; use 'mse' or 'minmax'")
    best = best.astype(np.float32)
    empty = np.float32(1.0)
    if bits == 2:
        live = best[best > 0]
        empty = np.float32((live.min() if live.size else 1.0) * ZERO_CHANNEL_FRACTION)
    return storable_scales(np.where(best > 0, best, empty))


_ERROR_CHUNK = 1 << 16  # weights × candidate scales rounded at a time by weight_scales


def _weight_errors(rows: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """The squared rounding error of each row of ``rows`` [O, K] at each candidate of
    ``scales`` [C, O] → [C, O]."""
    safe = np.where(scales > 0, scales, 1.0)[:, :, None]
    q = round_levels(rows[None] / safe, bits)
    return np.sum((q * safe - rows[None]) ** 2, axis=2)


def quantize_weights(w: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """int8 levels of ``w`` (same shape) at per-channel ``scales`` (axis 0): the nearest
    level of the ``bits`` grid (``round_levels``)."""
    rows = _as_rows(w)
    s = np.asarray(scales, np.float32).astype(np.float64)[:, None]
    return round_levels(rows / s, bits).astype(np.int8).reshape(w.shape)


def quantize_bias(b: np.ndarray, input_scale: float, weight_scales_: np.ndarray) -> np.ndarray:
    """int32 levels of bias ``b`` at scale ``input_scale * weight_scales_[c]`` (float64
    math), clipped to ±BIAS_LIMIT."""
    scale = np.float64(np.float32(input_scale)) * np.asarray(weight_scales_, np.float32).astype(
        np.float64
    )
    levels = np.rint(np.asarray(b, np.float64) / scale)
    return np.clip(levels, -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)


def bias_scales(input_scale: float, weight_scales_: np.ndarray) -> np.ndarray:
    """The float32 scales of an int32 bias: ``s_x * s_w[c]`` (for its type)."""
    return (np.float32(input_scale) * np.asarray(weight_scales_, np.float32)).astype(np.float32)


# ------------------------------------------------------------------ requantization
def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point (M, shift) with ``real ≈ M * 2^-shift``, elementwise over ``real`` ≥ 0.

    M is int32 in [2^30, 2^31) and shift in [1, 62]; a multiplier too small for shift 62
    becomes M = 0 (every int32 accumulator then rounds to 0 anyway).
    """
    real = np.atleast_1d(np.asarray(real, np.float64))
    if np.any(~np.isfinite(real)) or np.any(real < 0):
        raise ValueError("requantization multipliers must be finite and non-negative")
    mantissa, exponent = np.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    m = np.rint(mantissa * 2.0**MULTIPLIER_BITS).astype(np.int64)
    carry = m == 2**MULTIPLIER_BITS
    m = np.where(carry, m // 2, m)
    exponent = exponent + carry
    shift = MULTIPLIER_BITS - exponent.astype(np.int64)
    if np.any((shift < 1) & (m > 0)):
        raise ValueError(f"requantization multiplier {real.max()} is too large (>= 2^30)")
    tiny = (shift > MAX_SHIFT) | (m == 0)
    m = np.where(tiny, 0, m)
    shift = np.where(tiny, MAX_SHIFT, shift)
    return m.astype(np.int32), shift.astype(np.int32)


def rounding_shift(p: np.ndarray, shift) -> np.ndarray:
    """round_half_even(p / 2^shift) for int64 ``p`` and shift ≥ 1 (elementwise)."""
    p = np.asarray(p, np.int64)
    shift = np.asarray(shift, np.int64)
    floor = p >> shift
    rem = p - (floor << shift)
    half = np.left_shift(np.int64(1), shift - 1)
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return floor + up


def requantize(acc, multiplier, shift, zero_point: int, lo: int = ACT_QMIN,
               hi: int = ACT_QMAX) -> np.ndarray:  # fmt: skip
    """int8 levels clamp(round_half_even(acc * M / 2^shift) + zero_point, lo, hi).

    ``multiplier`` and ``shift`` broadcast against ``acc`` (per-channel: shape them so).
    """
    p = np.asarray(acc, np.int64) * np.asarray(multiplier, np.int64)
    return np.clip(rounding_shift(p, shift) + zero_point, lo, hi).astype(np.int8)


def add_multipliers(a_ratio: float, b_ratio: float) -> tuple[int, int, int]:
    """Integer add's (Ma, Mb, shift): ``a_ratio ≈ Ma / 2^shift``, same shift for both.

    The larger multiplier lands in [2^30, 2^31); levels differ by at most 255 from their
    zero points, so ``(a - za) * Ma + (b - zb) * Mb`` fits int64.
    """
    top = max(a_ratio, b_ratio)
    if not (math.isfinite(top) and top > 0):
        raise ValueError(f"integer add needs positive finite scale ratios: {a_ratio}, {b_ratio}")
    shift = min(MAX_SHIFT, MULTIPLIER_BITS - math.frexp(top)[1])
    if shift < 1:
        raise ValueError(f"integer add scale ratio {top} is too large")
    ma, mb = (int(np.rint(r * 2.0**shift)) for r in (a_ratio, b_ratio))
    if max(ma, mb) >= 2**31:  # rounding carried the top multiplier to 2^31
        shift -= 1
        ma, mb = (int(np.rint(r * 2.0**shift)) for r in (a_ratio, b_ratio))
    return ma, mb, shift


# ------------------------------------------------------------------ packing
def packed_row_bytes(k: int, bits: int) -> int:
    """Bytes of one packed output channel of ``k`` elements at ``bits`` bits."""
    return (k * bits + 7) // 8


def pack(levels: np.ndarray, bits: int) -> np.ndarray:
    """uint8 [O, packed_row_bytes(K, bits)] of int8 ``levels`` [O, ...] at 4 or 2 bits."""
    if bits not in (4, 2):
        raise ValueError(f"only 4- and 2-bit weights are packed, not {bits}")
    rows = np.asarray(levels).reshape(levels.shape[0], -1).astype(np.int64)
    if rows.size and not np.all(np.isin(rows, weight_levels(bits))):
        raise ValueError(f"levels off the {bits}-bit grid {weight_levels(bits).tolist()}")
    if bits == 2:
        rows = (rows - 1) // 2  # the field f of level 2f + 1
    o, k = rows.shape
    per_byte = 8 // bits
    padded = np.zeros((o, packed_row_bytes(k, bits) * per_byte), np.uint8)
    padded[:, :k] = rows.astype(np.int64) & (2**bits - 1)
    fields = padded.reshape(o, -1, per_byte).astype(np.uint16)
    shifts = (np.arange(per_byte) * bits).astype(np.uint16)
    return np.bitwise_or.reduce(fields << shifts, axis=2).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int, shape) -> np.ndarray:
    """int8 levels of ``shape`` from ``pack``'s bytes (sign-extended b-bit fields f: the
    level f at 4 bits, 2f + 1 at 2)."""
    shape = tuple(int(d) for d in shape)
    o = shape[0]
    k = int(np.prod(shape[1:], dtype=np.int64))
    per_byte = 8 // bits
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    fields = (np.asarray(packed, np.uint8)[:, :, None] >> shifts) & np.uint8(2**bits - 1)
    values = fields.reshape(o, -1)[:, :k].astype(np.int8)
    sign = np.int8(2 ** (bits - 1))
    fields = (values ^ sign) - sign
    if bits == 2:
        fields = 2 * fields + 1
    return fields.astype(np.int8).reshape(shape)


def layer_multipliers(input_scale: float, weight_scales_, output_scale: float):
    """Per-channel (M, shift) of an integer layer: s_x * s_w[c] / s_y, in float64 math."""
    real = (
        np.float64(np.float32(input_scale))
        * np.asarray(weight_scales_, np.float32).astype(np.float64)
        / np.float64(np.float32(output_scale))
    )
    return quantize_multiplier(real)


def mean_multiplier(input_scale: float, count: int, output_scale: float):
    """(M, shift) of an integer mean of ``count`` levels: s_x / (count * s_y)."""
    real = np.float64(np.float32(input_scale)) / (count * np.float64(np.float32(output_scale)))
    return quantize_multiplier(real)


def represented_range(scale: float, zero_point: int) -> tuple[float, float]:
    """The reals int8 levels [-128, 127] stand for at (scale, zero_point), in float64
    (``activation_params`` of this range gives back the same scale and zero point)."""
    s = np.float64(np.float32(scale))
    return float(s * (ACT_QMIN - zero_point)), float(s * (ACT_QMAX - zero_point))


def rescale_multiplier(input_scale: float, output_scale: float):
    """(M, shift) of a requantization from ``input_scale`` to ``output_scale``: s_x / s_y,
    in float64 math."""
    real = np.float64(np.float32(input_scale)) / np.float64(np.float32(output_scale))
    return quantize_multiplier(real)


def rescale(levels, input_scale: float, input_zero: int, output_scale: float,
            output_zero: int) -> np.ndarray:  # fmt: skip
    """int8 ``levels`` at (input_scale, input_zero) as levels at (output_scale, output_zero):
    ``requantize(levels - input_zero)`` by ``rescale_multiplier``, saturating."""
    m, s = rescale_multiplier(input_scale, output_scale)
    return requantize(np.asarray(levels, np.int64) - input_zero, m[0], s[0], output_zero)
