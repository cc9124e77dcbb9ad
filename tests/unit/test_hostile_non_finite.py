"""NaN and ±inf across the three implementations (issue 25, finding 5): the reference
interpreter, the compiled model and onnxruntime give the same answer wherever IEEE fixes
one, and where it does not (a sum that overflows, whose value depends on the order of its
terms) they agree on what docs/limits.md promises.

- Clip: -inf as the lower and +inf as the upper bound do not bound; any other bound
  clamps, +inf as the lower bound included (every element becomes the upper bound, as
  ONNX says for min > max); a NaN element stays NaN.
- Activations, elementwise arithmetic, pooling averages, softmax and convs with a fused
  activation propagate NaN and ±inf as IEEE does, bit for bit with onnxruntime.
- MaxPool keeps NaN (numpy's maximum) in the interpreter and the kernels alike, where
  onnxruntime skips it: a documented difference.
- A conv whose exact sum is beyond float32's range is non-finite everywhere; one whose
  terms' magnitudes sum to well within it is finite everywhere and agrees to rounding.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import irc

F32_MAX = float(np.finfo(np.float32).max)
SPECIALS = np.array([[-3.0, 0.0, np.inf, -np.inf, np.nan, 5.0, 7.0, -1e30]], np.float32)


def _model(nodes, x_shape, y_shape, inits=(), opset: int = 14) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "non_finite",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(inits),
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def three_ways(model: onnx.ModelProto, x: np.ndarray):
    """(onnxruntime, interpreter, compiled model) outputs of ``model`` on ``x``."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(None, {"x": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (interpreted,) = irc.run(irc.import_onnx(model), [x])
        (compiled,) = irc.compile(model, num_threads=1, progress=False)(x)
    return expected, interpreted, compiled


def assert_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal element for element, NaN where the other is NaN."""
    np.testing.assert_array_equal(a, b, strict=True)


BOUNDS = [
    (-np.inf, 6.0),
    (0.0, np.inf),
    (-np.inf, np.inf),
    (np.inf, -np.inf),  # min > max: every element is max (-inf), NaN stays
    (np.inf, np.inf),
    (-np.inf, -np.inf),
    (np.inf, 6.0),
    (6.0, 0.0),
]


@pytest.mark.parametrize("lo, hi", BOUNDS)
def test_clip_bounds_agree_with_onnxruntime(lo, hi):
    inits = [
        numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", lo), ("hi", hi))
    ]
    model = _model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [1, 8], [1, 8], inits)
    expected, interpreted, compiled = three_ways(model, SPECIALS)
    assert_bits(interpreted, expected)
    assert_bits(compiled, expected)


def test_a_positive_infinite_lower_bound_clamps_in_the_reference():
    """Before issue 25's audit the reference read any infinite bound as no bound."""
    text = (
        "graph @g(%x: f32[1,8]) {\n  %y = clip(%x) {min=inf, max=6.0} : f32[1,8]\n  return %y\n}\n"
    )
    (y,) = irc.run(irc.parse_graph(text), [SPECIALS])
    want = np.array([[6, 6, 6, 6, np.nan, 6, 6, 6]], np.float32)
    assert_bits(y, want)
    ints = (
        "graph @g(%x: i32[1,3]) {\n  %y = clip(%x) {min=inf, max=inf} : i32[1,3]\n  return %y\n}\n"
    )
    (y,) = irc.run(irc.parse_graph(ints), [np.array([[-5, 0, 7]], np.int32)])
    assert_bits(y, np.full((1, 3), np.iinfo(np.int32).max, np.int32))


@pytest.mark.parametrize(
    "op, attrs",
    [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("HardSigmoid", {}), ("HardSwish", {})],
)
def test_activations_propagate_nan_and_inf_as_onnxruntime(op, attrs):
    model = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [1, 8], [1, 8])
    expected, interpreted, compiled = three_ways(model, SPECIALS)
    assert_bits(interpreted, expected)
    assert_bits(compiled, expected)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_transcendental_activations_agree_on_the_non_finite_elements(op):
    model = _model([helper.make_node(op, ["x"], ["y"])], [1, 8], [1, 8])
    expected, interpreted, compiled = three_ways(model, SPECIALS)
    for got in (interpreted, compiled):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)  # NaN where NaN
        special = ~np.isfinite(SPECIALS) | (np.abs(SPECIALS) > 100)
        assert_bits(got[special], expected[special])  # 0, ±1, NaN exactly


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic_on_infinities_is_ieee(op):
    """inf - inf, 0 * inf, inf / inf are NaN; x / 0 is ±inf."""
    other = np.array([[np.inf, 0.0, np.inf, -np.inf, 1.0, 0.0, -0.0, 1e30]], np.float32)
    init = numpy_helper.from_array(other, "b")
    model = _model([helper.make_node(op, ["x", "b"], ["y"])], [1, 8], [1, 8], [init])
    expected, interpreted, compiled = three_ways(model, SPECIALS)
    assert_bits(interpreted, expected)
    assert_bits(compiled, expected)


def _conv_model(weights: np.ndarray, activation: str | None) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(weights, "w"),
             numpy_helper.from_array(np.linspace(-1, 1, weights.shape[0], dtype=np.float32), "b"),
             numpy_helper.from_array(np.float32(0), "lo"),
             numpy_helper.from_array(np.float32(6), "hi")]  # fmt: skip
    out = "y" if activation is None else "c"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [out], pads=[1, 1, 1, 1])]
    if activation == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif activation is not None:
        nodes.append(helper.make_node(activation, ["c"], ["y"]))
    else:
        inits = inits[:2]
    if activation in (None, "Relu", "HardSwish"):
        inits = inits[:2]
    shape = [1, weights.shape[0], 6, 6]
    return _model(nodes, [1, weights.shape[1], 6, 6], shape, inits)


@pytest.mark.parametrize("activation", [None, "Relu", "Clip", "HardSwish"])
def test_conv_with_a_fused_activation_propagates_nan_and_inf(activation):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    x = rng.normal(size=(1, 3, 6, 6)).astype(np.float32)
    x[0, 0, 2, 2], x[0, 1, 4, 4], x[0, 2, 0, 0] = np.nan, np.inf, -np.inf
    expected, interpreted, compiled = three_ways(_conv_model(w, activation), x)
    for got in (interpreted, compiled):
        assert_bits(np.isnan(got), np.isnan(expected))
        assert_bits(np.isinf(got), np.isinf(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_conv_overflow_is_non_finite_everywhere_and_no_overflow_is_finite():
    """The order of a sum's terms decides inf or NaN once a partial sum overflows (BLAS,
    the kernels and onnxruntime each sum in their own order), so only what every order
    gives is promised: an exact sum beyond float32's range is non-finite, a sum whose
    terms' magnitudes stay far below it is finite."""
    rng = np.random.default_rng(25)
    w = (rng.normal(size=(4, 3, 3, 3)) * 1e37).astype(np.float32)
    x = rng.normal(size=(1, 3, 6, 6)) * 10
    x[..., :3] *= 1e-4  # the left columns' sums stay far from overflowing
    x = x.astype(np.float32)
    model = _conv_model(w, None)
    outputs = three_ways(model, x)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    exact = np.zeros((4, 6, 6))
    magnitude = np.zeros((4, 6, 6))
    for i in range(3):
        for j in range(3):
            patch = padded[0, :, i : i + 6, j : j + 6]  # (3, 6, 6)
            terms = w[:, :, i, j].astype(np.float64)[:, :, None, None] * patch[None]
            exact += terms.sum(1)
            magnitude += np.abs(terms).sum(1)
    exact += np.linspace(-1, 1, 4)[:, None, None]
    overflows = np.abs(exact) > 1.01 * F32_MAX
    safe = magnitude < 0.5 * F32_MAX
    assert overflows.any() and safe.any()  # the draw covers both cases
    for got in outputs:
        assert not np.isfinite(got[0][overflows]).any()
        assert np.isfinite(got[0][safe]).all()
        np.testing.assert_allclose(got[0][safe], exact[safe], rtol=1e-4)


def test_max_pool_keeps_nan_in_the_interpreter_and_the_kernels():
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    model = _model([node], [1, 1, 4, 4], [1, 1, 2, 2])
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0], x[0, 0, 3, 3], x[0, 0, 2, 0] = np.nan, -np.inf, np.inf
    expected, interpreted, compiled = three_ways(model, x)
    assert_bits(interpreted, compiled)
    assert np.isnan(interpreted[0, 0, 0, 0]) and not np.isnan(expected[0, 0, 0, 0])
    assert_bits(interpreted.ravel()[1:], expected.ravel()[1:])  # the windows without NaN


@pytest.mark.parametrize("op", ["GlobalAveragePool", "AveragePool"])
def test_average_pools_propagate_nan_and_inf(op):
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]} if op == "AveragePool" else {}
    out = [1, 1, 2, 2] if op == "AveragePool" else [1, 1, 1, 1]
    model = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [1, 1, 4, 4], out)
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0], x[0, 0, 3, 3] = np.nan, np.inf
    expected, interpreted, compiled = three_ways(model, x)
    for got in (interpreted, compiled):
        assert_bits(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "row", [[np.inf, 1, 2, 3], [1e30, 1, 2, 3], [-np.inf, 1, 2, 3], [np.nan, 1, 2, 3]]
)
def test_softmax_of_extremes(row):
    model = _model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [1, 4], [1, 4])
    x = np.array([row], np.float32)
    expected, interpreted, compiled = three_ways(model, x)
    for got in (interpreted, compiled):
        assert_bits(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-6)
