"""Property: ``qlut`` (an int8 lookup table of a smooth activation) runs bit-exactly as
``irc.reference`` says, for any table and input; and the tables ``irc.reference.lut``
makes are the float activation on every level's real value, quantized to the output.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_draws import activations

from irc import quant
from irc.backends.numba.kernel_table import bind_kernel
from irc.errors import TypeInferenceError
from irc.ir import Graph
from irc.opdef import build
from irc.ops.quant import LUT_FUNCTIONS
from irc.parser import parse_graph
from irc.printer import print_graph
from irc.reference import evaluate_op
from irc.reference.lut import lut_table
from irc.types import DType, QuantParams, TensorType

seeds = st.integers(0, 2**32 - 1)
zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
scales = st.sampled_from([0.0039, 0.02, 0.1, 1.7, 0.125, 0.5, 0.0625])
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)
FLOAT_KINDS = {"sigmoid": ["sigmoid"], "tanh": ["tanh"], "hard_sigmoid": ["hard_sigmoid"],
               "hard_swish": ["hard_swish"], "silu": ["sigmoid", "mul"],
               "gelu": ["gelu"], "gelu_tanh": ["gelu"]}  # fmt: skip


def qi8(shape, scale, zero_point) -> TensorType:
    """A per-tensor int8 activation type."""
    return TensorType(DType.I8, tuple(shape), QuantParams.per_tensor(scale, zero_point))


def qlut_op(shape, params, table, function="sigmoid", **extra):
    """A qlut on a graph input of ``shape`` at ``params`` (scale, zero point)."""
    graph = Graph()
    x = graph.add_input("x", qi8(shape, *params))
    attrs = {"table": table, "function": function, "out_scale": 0.05, "out_zero_point": -3}
    return build(graph, "qlut", [x], {**attrs, **extra})


def run_kernel(op, levels) -> np.ndarray:
    """``op``'s kernel on ``levels`` into junk; asserted equal to the reference."""
    out = np.full(op.result.type.shape, 77, np.int8)
    bind_kernel(op)(levels, out)
    (want,) = evaluate_op(op, [levels])
    assert want.dtype == np.int8
    np.testing.assert_array_equal(out, want)
    return out


@settings(max_examples=60, deadline=None)
@given(shapes, scales, zero_points, st.sampled_from(["uniform", "extremes", "small"]), seeds)
def test_qlut_kernel_is_the_reference(shape, scale, zero_point, values, seed):
    rng = np.random.default_rng(seed)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    op = qlut_op(shape, (scale, zero_point), table)
    levels = activations(rng, shape, values)
    out = run_kernel(op, levels)
    np.testing.assert_array_equal(out, table[levels.astype(np.int64) + 128])


def float_activation(function: str, reals: np.ndarray, alpha: float, beta: float):
    """``function`` on ``reals`` by irc's float ops (SiLU: sigmoid, then mul by x; affine:
    mul by alpha, then add beta)."""
    graph = Graph()
    x = graph.add_input("x", TensorType(DType.F32, reals.shape))
    if function == "affine":
        a, b = (graph.add_input(n, TensorType(DType.F32, (1,))) for n in ("a", "b"))
        (y,) = evaluate_op(build(graph, "mul", [x, a]), [reals, np.float32([alpha])])
        (y,) = evaluate_op(build(graph, "add", [x, b]), [y, np.float32([beta])])
        return y
    kinds = FLOAT_KINDS[function]
    extra = {"alpha": alpha, "beta": beta} if function == "hard_sigmoid" else {}
    extra = {"approximate": "tanh"} if function == "gelu_tanh" else extra
    gate = build(graph, kinds[0], [x], extra)
    (y,) = evaluate_op(gate, [reals])
    if function == "silu":
        (y,) = evaluate_op(build(graph, "mul", [x, gate.result]), [reals, y])
    return y


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(LUT_FUNCTIONS), scales, zero_points, scales, zero_points,
       st.sampled_from([(0.2, 0.5), (1 / 6, 0.5), (0.5, 0.25)]))  # fmt: skip
def test_tables_are_the_float_activation_quantized(function, s_in, z_in, s_out, z_out, shape):
    alpha, beta = shape
    table = lut_table(function, s_in, z_in, s_out, z_out, alpha, beta)
    levels = np.arange(-128, 128).astype(np.int8)
    reals = quant.dequantize(levels, s_in, z_in)
    want = quant.quantize(float_activation(function, reals, alpha, beta), s_out, z_out)
    np.testing.assert_array_equal(table, want)
    op = qlut_op((256,), (s_in, z_in), table, function, alpha=alpha, beta=beta)
    np.testing.assert_array_equal(run_kernel(op, levels), want)


def test_qlut_prints_and_parses_back_with_its_table():
    table = np.arange(-128, 128, dtype=np.int8)[::-1].copy()
    op = qlut_op((2, 3), (0.1, 4), table, "hard_sigmoid", alpha=0.25)
    op.graph.outputs.append(op.result)
    text = print_graph(op.graph, full=True)
    again = parse_graph(text)
    assert print_graph(again, full=True) == text
    (parsed,) = [o for o in again.ops if o.kind == "qlut"]
    np.testing.assert_array_equal(parsed.attrs["table"], table)
    assert parsed.attrs["alpha"] == 0.25 and parsed.result.type == op.result.type


@pytest.mark.parametrize(
    "table, match",
    [(np.zeros(255, np.int8), r"table must be i8\[256\]"),
     (np.zeros(256, np.int16), r"table must be i8\[256\]")],
)  # fmt: skip
def test_qlut_refuses_a_malformed_table(table, match):
    with pytest.raises(TypeInferenceError, match=match):
        qlut_op((4,), (0.1, 0), table)


def test_qlut_refuses_float_input_and_unknown_functions():
    graph = Graph()
    x = graph.add_input("x", TensorType(DType.F32, (4,)))
    attrs = {"table": np.zeros(256, np.int8), "function": "sigmoid", "out_scale": 0.1}
    with pytest.raises(TypeInferenceError, match="qlut input must be a per-tensor qi8"):
        build(graph, "qlut", [x], attrs)
    with pytest.raises(TypeInferenceError, match="swish"):
        qlut_op((4,), (0.1, 0), np.zeros(256, np.int8), "swish")
