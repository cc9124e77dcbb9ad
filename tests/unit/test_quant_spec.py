"""The quantization arithmetic spec (irc.quant) against exact oracles: rational arithmetic
for rounding and requantization, onnx's reference QuantizeLinear for float -> int8."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from irc import quant


def _round_half_even(x: Fraction) -> int:
    floor = x.numerator // x.denominator
    rem = x - floor
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(1, 62))
def test_rounding_shift_is_exact_half_even(p, shift):
    assert int(quant.rounding_shift(np.int64(p), shift)) == _round_half_even(Fraction(p, 2**shift))


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-12, 2.0**29, allow_nan=False), st.integers(-(2**31), 2**31 - 1))
def test_requantize_equals_rational_rounding_of_fixed_point(real, acc):
    (m,), (s,) = quant.quantize_multiplier(real)
    assert 0 <= m < 2**31 and 1 <= s <= quant.MAX_SHIFT
    if m:
        assert abs(m * 2.0**-s - real) <= real * 2.0**-30
    want = min(127, max(-128, _round_half_even(Fraction(acc * int(m), 2 ** int(s))) + 5))
    assert int(quant.requantize(np.int64(acc), m, s, 5)) == want


def test_tiny_multiplier_becomes_zero_and_huge_one_is_refused():
    m, s = quant.quantize_multiplier([1e-30])
    assert m[0] == 0 and s[0] == quant.MAX_SHIFT
    with pytest.raises(ValueError, match="too large"):
        quant.quantize_multiplier([2.0**31])


def test_quantize_matches_onnx_quantize_linear():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(0, 3, 500), np.arange(-10, 10) * 0.25, [1e9, -1e9, 0.0, -0.0]]
    ).astype(np.float32)
    node = onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "q",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [x.size])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT8, [x.size])],
        [
            onnx.numpy_helper.from_array(np.float32(0.5), "s"),
            onnx.numpy_helper.from_array(np.int8(-3), "z"),
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(quant.quantize(x, 0.5, -3), want)
    assert quant.quantize(np.float32(np.nan), 0.5, -3) == -3


@pytest.mark.parametrize(
    ("lo", "hi"), [(-1.0, 5.0), (0.0, 6.0), (-3.0, -1.0), (2.0, 2.5), (0.0, 0.0)]
)
def test_activation_params_keep_zero_exact_and_cover_the_range(lo, hi):
    scale, zero_point = quant.activation_params(lo, hi)
    assert scale > 0 and -128 <= zero_point <= 127
    assert (
        quant.dequantize(quant.quantize(np.float32(0.0), scale, zero_point), scale, zero_point) == 0
    )
    for edge in (lo, hi):
        back = quant.dequantize(
            quant.quantize(np.float32(edge), scale, zero_point), scale, zero_point
        )
        assert abs(back - edge) <= scale


def test_activation_levels_fold_relu6_into_the_clamp():
    scale, zero_point = quant.activation_params(-2.0, 8.0)
    lo, hi = quant.activation_levels("clip", 0.0, 6.0, scale, zero_point)
    assert lo == zero_point and hi == int(np.rint(6.0 / scale)) + zero_point
    assert quant.activation_levels("none", 0, 0, scale, zero_point) == (-128, 127)
    with pytest.raises(ValueError):
        quant.activation_levels("hard_swish", 0, 0, scale, zero_point)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_weight_scales_mse_never_worse_than_minmax(bits):
    rng = np.random.default_rng(bits)
    w = rng.standard_t(3, size=(16, 8, 3, 3)).astype(np.float32)

    def error(scales):
        levels = quant.quantize_weights(w, scales, bits)
        assert np.isin(levels, quant.weight_levels(bits)).all()
        return float(np.sum((levels * scales[:, None, None, None] - w) ** 2))

    assert error(quant.weight_scales(w, bits, "mse")) <= error(
        quant.weight_scales(w, bits, "minmax")
    )


def test_zero_channel_and_nan_weights():
    w = np.zeros((2, 3), np.float32)
    w[1] = [1, -2, 3]
    scales = quant.weight_scales(w, 8)
    assert scales[0] == 1.0 and np.all(quant.quantize_weights(w, scales, 8)[0] == 0)
    with pytest.raises(ValueError, match="NaN"):
        quant.weight_scales(np.array([[np.nan]], np.float32), 8)


def test_pack_layout_is_low_bits_first_with_rows_padded():
    levels = np.array([[1, -1, 2], [-7, 7, 0]], np.int8)
    np.testing.assert_array_equal(quant.pack(levels, 4), [[0xF1, 0x02], [0x79, 0x00]])
    two = np.array([[1, -1, -3, 3, 1]], np.int8)  # fields (level - 1) / 2: 0, -1, -2, 1, 0
    np.testing.assert_array_equal(quant.pack(two, 2), [[0b01101100, 0b00]])
    np.testing.assert_array_equal(quant.unpack(quant.pack(two, 2), 2, two.shape), two)
    with pytest.raises(ValueError):
        quant.pack(np.array([[8]], np.int8), 4)
    with pytest.raises(ValueError, match="grid"):  # even levels are not on the INT2 grid
        quant.pack(np.array([[0]], np.int8), 2)


def test_add_multipliers_share_one_shift():
    ma, mb, shift = quant.add_multipliers(0.7, 1.3)
    assert (
        max(ma, mb) < 2**31 and abs(ma / 2**shift - 0.7) < 1e-9 and abs(mb / 2**shift - 1.3) < 1e-9
    )


@pytest.mark.parametrize("bits, lo, hi", [(8, -127, 127), (4, -8, 7)])
def test_weight_levels_use_the_full_range_at_four_bits(bits, lo, hi):
    assert (quant.weight_qmin(bits), quant.weight_qmax(bits)) == (lo, hi)
    scales = np.ones(1, np.float32)
    w = np.array([[-200.0, lo - 0.6, lo - 0.4, -0.5, 0.5, hi + 0.4, 300.0]], np.float32)
    levels = quant.quantize_weights(w, scales, bits)
    # half to even at ±0.5; clamped to [lo, hi]; lo - 0.4 rounds to lo, not past it
    assert levels.tolist() == [[lo, lo, lo, 0, 0, hi, hi]]
    if bits < 8:
        packed = quant.pack(levels, bits)
        assert np.array_equal(quant.unpack(packed, bits, levels.shape), levels)


def test_int2_levels_are_the_odd_ones_and_round_to_the_nearest():
    assert quant.weight_levels(2).tolist() == [-3, -1, 1, 3]
    assert (quant.weight_qmin(2), quant.weight_qmax(2)) == (-3, 3)
    w = np.array([[-200.0, -2.1, -1.9, -0.1, 0.1, 1.9, 2.1, 300.0]], np.float32)
    levels = quant.quantize_weights(w, np.ones(1, np.float32), 2)
    assert levels.tolist() == [[-3, -3, -1, -1, 1, 1, 3, 3]]
    # every weight's level is a nearest level of the grid (distance ≤ 1 inside [-3, 3])
    x = np.random.default_rng(0).uniform(-3, 3, 1000)
    assert np.all(np.abs(quant.round_levels(x, 2) - x) <= 1.0 + 1e-12)
    # the per-channel scale maps the top level 3 to the clipping range (to a float16's
    # significand, 11 bits)
    scales = quant.weight_scales(np.array([[0.3, -0.6, 0.9]], np.float32), 2, "minmax")
    np.testing.assert_allclose(scales, [0.3], rtol=2.0**-11)


@pytest.mark.parametrize("method", ["mse", "minmax"])
def test_an_all_zero_channel_stays_near_zero_on_the_int2_grid(method):
    """INT2 has no zero level: a channel of zeros gets a scale 2^-8 of the layer's
    smallest, so its dequantized weights stay near zero (not ±1), and it packs."""
    w = np.zeros((3, 5), np.float32)
    w[1] = [0.3, -0.6, 0.9, 0.1, -0.2]
    w[2] = [3.0, -1.0, 2.0, 0.5, 1.5]
    scales = quant.weight_scales(w, 2, method)
    levels = quant.quantize_weights(w, scales, 2)
    assert scales[0] == np.float32(min(scales[1], scales[2]) * quant.ZERO_CHANNEL_FRACTION)
    assert np.abs(levels[0] * scales[0]).max() <= scales[1] / 256 + 1e-12
    np.testing.assert_array_equal(quant.unpack(quant.pack(levels, 2), 2, w.shape), levels)
    assert quant.weight_scales(np.zeros((2, 3), np.float32), 2)[0] == np.float32(2.0**-8)
    assert quant.weight_scales(np.zeros((2, 3), np.float32), 4)[0] == 1.0
