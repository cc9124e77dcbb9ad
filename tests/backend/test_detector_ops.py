"""The ops detectors and OCR models need (issue 23): each as a one-node ONNX model, run by
onnxruntime, by irc's reference interpreter and by the compiled model, on random inputs.

Inputs that fix a result's shape (Expand's shape, Tile's repeats, reduction axes, Range's
bounds) are initializers; everything else is a graph input. A Range / Expand / Shape chain on
static shapes must fold to constants before the backend sees it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from onnx import TensorProto, helper, numpy_helper

import irc
from irc.errors import IrcError
from irc.export_onnx import export_onnx
from irc.ir import Graph
from irc.onnx_backend import IrcBackend
from irc.opdef import build
from irc.reference.movement import range_count
from irc.types import DType, TensorType

FEW = settings(max_examples=12, deadline=None)


def one_node(op_type: str, inputs: dict, consts: dict | None = None, opset: int = 18,
             n_outputs: int = 1, **attrs) -> onnx.ModelProto:  # fmt: skip
    """One ``op_type`` node; ``inputs`` become graph inputs and ``consts`` initializers, in
    the node's input order given by the keys' insertion order of ``inputs | consts`` (a None
    value leaves that input out)."""
    consts = consts or {}
    order = attrs.pop("order", list(inputs) + list(consts))
    names = ["" if {**inputs, **consts}[n] is None else n for n in order]
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, name=op_type.lower(), **attrs)
    graph = helper.make_graph(
        [node],
        op_type.lower(),
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_empty_tensor_value_info(o) for o in outs[:1]],
        [numpy_helper.from_array(a, n) for n, a in consts.items() if a is not None],
    )
    return typed(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its outputs' types filled in by onnx shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.value_info}
    for out in model.graph.output:
        if not out.type.HasField("tensor_type"):
            source = known.get(out.name) or next(
                v for v in inferred.graph.output if v.name == out.name
            )
            out.type.CopyFrom(source.type)
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape"):
            out.CopyFrom(next(v for v in inferred.graph.output if v.name == out.name))
    return model


def onnxruntime_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An unoptimised CPU session of ``model``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def onnxruntime_result(model: onnx.ModelProto, inputs: dict) -> np.ndarray:
    """The first output onnxruntime computes."""
    return onnxruntime_session(model).run(None, inputs)[0]


def assert_close(actual, expected, rtol=1e-5, atol=1e-5) -> None:
    actual = np.asarray(actual)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if np.issubdtype(expected.dtype, np.floating):
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(actual, expected)


def check(model: onnx.ModelProto, inputs: dict, rtol=1e-5, atol=1e-5) -> None:
    """onnxruntime, irc's reference and irc's compiled model agree on ``inputs`` (on the
    first output)."""
    expected = onnxruntime_result(model, inputs)
    shapes = {n: a.shape for n, a in inputs.items()}
    reference = irc.run(irc.import_onnx(model, input_shapes=shapes), list(inputs.values()))[0]
    assert_close(reference, expected, rtol, atol)
    compiled = irc.compile(model, input_shapes=shapes, num_threads=1)(*inputs.values())[0]
    assert_close(compiled, expected, rtol, atol)


def normal(*shape, seed=0, dtype=np.float32) -> np.ndarray:
    return np.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def i64(*values) -> np.ndarray:
    return np.array(values, np.int64)


# ------------------------------------------------------------------ elementwise
@pytest.mark.parametrize("op_type", ["Sqrt", "Erf", "Neg", "Log"])
def test_unary(op_type):
    x = normal(2, 3, 5, 7, seed=1) * 2
    x = np.abs(x) if op_type in ("Sqrt", "Log") else x
    check(one_node(op_type, {"x": x}), {"x": x})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = normal(2, 3, 5, 7, seed=3) * 3
    check(one_node("Gelu", {"x": x}, opset=20, approximate=approximate), {"x": x})


def test_gelu_of_unknown_form_is_refused_naming_the_node():
    x = normal(1, 4, seed=3)
    with pytest.raises(IrcError, match=r"gelu.*approximate='sigmoid'"):
        irc.import_onnx(one_node("Gelu", {"x": x}, opset=20, approximate="sigmoid"))


def test_log_at_zero_and_below():
    x = np.array([-1.0, 0.0, 1.0, np.e], np.float32)
    check(one_node("Log", {"x": x}), {"x": x})


def test_sqrt_of_negative_is_nan():
    x = np.array([-1.0, 0.0, 4.0], np.float32)
    check(one_node("Sqrt", {"x": x}), {"x": x})


@FEW
@given(mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4), st.integers(0, 99))
def test_pow_broadcasts(shapes, seed):
    a_shape, b_shape = shapes.input_shapes
    a = np.asarray(np.abs(normal(*a_shape, seed=seed)) + 0.1)
    b = normal(*b_shape, seed=seed + 1)
    check(one_node("Pow", {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-4)


def test_pow_float_base_integer_exponent():
    """LayerNorm written out: Pow(x, 2) with an int64 exponent constant."""
    x = normal(2, 8, seed=3)
    check(one_node("Pow", {"x": x}, {"y": i64(2)}), {"x": x})


@FEW
@given(mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4), st.integers(0, 99))
def test_equal_broadcasts(shapes, seed):
    a_shape, b_shape = shapes.input_shapes
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, a_shape).astype(np.int64)
    b = rng.integers(0, 3, b_shape).astype(np.int64)
    check(one_node("Equal", {"a": a, "b": b}), {"a": a, "b": b})


def test_equal_float():
    a = np.array([[1.0, 2.0, np.nan]], np.float32)
    b = np.array([[1.0], [np.nan]], np.float32)
    check(one_node("Equal", {"a": a, "b": b}), {"a": a, "b": b})


@FEW
@given(mutually_broadcastable_shapes(num_shapes=3, max_dims=4, max_side=4), st.integers(0, 99))
def test_where_broadcasts(shapes, seed):
    c_shape, x_shape, y_shape = shapes.input_shapes
    cond = np.asarray(np.random.default_rng(seed).random(c_shape) < 0.5)
    x, y = normal(*x_shape, seed=seed), normal(*y_shape, seed=seed + 1)
    check(one_node("Where", {"c": cond, "x": x, "y": y}), {"c": cond, "x": x, "y": y})


def test_equal_feeds_where():
    """Equal's bool result is Where's condition (a detector's masking idiom)."""
    a, x = normal(4, 6, seed=5).round(), normal(4, 6, seed=6)
    nodes = [
        helper.make_node("Equal", ["a", "zero"], ["mask"]),
        helper.make_node("Where", ["mask", "x", "a"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mask",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 6]) for n in ("a", "x")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 6])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    check(model, {"a": a, "x": x})


# ------------------------------------------------------------------ shape ops
@pytest.mark.parametrize(
    "start,limit,delta,dtype",
    [(0, 10, 1, np.int64), (10, -3, -3, np.int64), (1.0, 5.5, 0.5, np.float32),
     (4.0, -2.0, -0.75, np.float32), (5, 5, 1, np.int32), (3, 17, 4, np.int32)],
)  # fmt: skip
def test_range(start, limit, delta, dtype):
    consts = {n: np.array(v, dtype) for n, v in zip(("s", "l", "d"), (start, limit, delta))}
    x = normal(1, seed=7)  # the model needs a graph input; Range's operands are constants
    nodes = [
        helper.make_node("Range", ["s", "l", "d"], ["r"]),
        helper.make_node("Identity", ["r"], ["out"]),
        helper.make_node("Identity", ["x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "range",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor_value_info(
                "out", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), ["n"]
            ),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
        ],
        [numpy_helper.from_array(a, n) for n, a in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    check(model, {"x": x})


def test_range_of_graph_inputs_in_the_reference():
    """Range's bounds as graph inputs: the onnx backend freezes them as constants."""
    s, l, d = (np.array(v, np.float32) for v in (2.0, -1.0, -0.5))
    model = one_node("Range", {"s": s, "l": l, "d": d})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("out0", TensorProto.FLOAT, ["n"]))
    expected = onnxruntime_result(model, {"s": s, "l": l, "d": d})
    (got,) = IrcBackend.prepare(model).run([s, l, d])
    assert_close(got, expected)


def test_range_zero_delta_is_an_error():
    consts = {n: np.array(v, np.int64) for n, v in zip(("s", "l", "d"), (0, 4, 0))}
    model = one_node("Range", {}, consts)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("out0", TensorProto.INT64, ["n"]))
    with pytest.raises(IrcError, match="range"):
        irc.import_onnx(model)


@pytest.mark.parametrize(
    "x_shape,shape",
    [((3, 1), (2, 3, 4)), ((1, 4), (3, 1)), ((2, 3), (1,)), ((1,), (2, 1, 5)), ((), (3, 2)),
     ((4, 1, 2), (4, 3, 2))],
)  # fmt: skip
def test_expand(x_shape, shape):
    x = normal(*x_shape, seed=8)
    check(one_node("Expand", {"x": x}, {"shape": i64(*shape)}), {"x": x})


@pytest.mark.parametrize(
    "x_shape,repeats", [((2, 3), (2, 1)), ((2, 3), (1, 3)), ((2, 1, 3), (2, 3, 2)), ((4,), (0,))]
)
def test_tile(x_shape, repeats):
    x = normal(*x_shape, seed=9)
    check(one_node("Tile", {"x": x}, {"repeats": i64(*repeats)}), {"x": x})


def yolo_grid_model() -> onnx.ModelProto:
    """A YOLO head's anchor grid: Shape → Gather → Range → Expand → Add onto the input."""
    c = {
        "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64),
        "idx3": np.array(3, np.int64),
        "cast_shape": i64(1, 2, 4, 6),
    }
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx3"], ["width"], axis=0),
        helper.make_node("Range", ["zero", "width", "one"], ["cols"]),
        helper.make_node("Cast", ["cols"], ["cols_f"], to=TensorProto.FLOAT),
        helper.make_node("Expand", ["cols_f", "cast_shape"], ["grid"]),
        helper.make_node("Add", ["x", "grid"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_grid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 4, 6])],
        [numpy_helper.from_array(a, n) for n, a in c.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_range_expand_chain_folds_to_constants():
    model = yolo_grid_model()
    x = normal(1, 2, 4, 6, seed=10)
    check(model, {"x": x})
    graph = irc.import_onnx(model, input_shapes={"x": (1, 2, 4, 6)})
    assert {op.kind for op in graph.ops} <= {"constant", "add"}
    compiled = irc.compile(model, input_shapes={"x": (1, 2, 4, 6)}, num_threads=1)
    assert not {"range", "expand", "shape", "gather"} & {op.kind for op in compiled.graph.ops}


# ------------------------------------------------------------------ reductions, softmax
@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes", [None, (1,), (-1,), (0, 2), (-3, -1)])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce(op_type, axes, keepdims):
    x = normal(3, 4, 5, seed=11)
    consts = {"axes": None if axes is None else i64(*axes)}
    check(one_node(op_type, {"x": x}, consts, keepdims=keepdims), {"x": x}, rtol=1e-5)


def test_reduce_sum_opset11_axes_attribute_and_noop():
    x = normal(2, 3, 4, seed=12)
    check(one_node("ReduceSum", {"x": x}, opset=11, axes=[-2], keepdims=0), {"x": x})
    model = one_node("ReduceSum", {"x": x}, {"axes": None}, noop_with_empty_axes=1)
    check(model, {"x": x})


@pytest.mark.parametrize("op_type", ["ReduceMax", "ReduceMin"])
def test_reduce_extremes_of_integers(op_type):
    x = np.random.default_rng(13).integers(-50, 50, (3, 5)).astype(np.int32)
    check(one_node(op_type, {"x": x}, {"axes": i64(1)}), {"x": x})


@pytest.mark.parametrize("axis", [0, 1, -2, -1])
def test_softmax_any_axis(axis):
    x = normal(3, 4, 5, seed=14)
    check(one_node("Softmax", {"x": x}, opset=13, axis=axis), {"x": x})


@pytest.mark.parametrize(
    "a_shape,b_shape", [((2, 3, 4, 5), (2, 3, 5, 6)), ((3, 4, 5), (5, 2)), ((2, 1, 4, 5),
                        (3, 5, 2)), ((5,), (2, 5, 3))]
)  # fmt: skip
def test_matmul_batch(a_shape, b_shape):
    a, b = normal(*a_shape, seed=15), normal(*b_shape, seed=16)
    check(one_node("MatMul", {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axis", [-1, -2, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm(axis, bias):
    x = normal(2, 5, 8, seed=17) * 3 + 1
    tail = x.shape[axis % 3 :]
    consts = {"scale": normal(*tail, seed=18), "bias": normal(*tail, seed=19) if bias else None}
    model = one_node("LayerNormalization", {"x": x}, consts, opset=17, axis=axis, epsilon=1e-4)
    check(model, {"x": x}, rtol=1e-4, atol=1e-4)


def test_layer_norm_statistics_outputs():
    """Mean and InvStdDev, when used, are computed too (written out as smaller ops)."""
    x = normal(2, 3, 4, seed=20) * 2 + 1
    model = one_node("LayerNormalization", {"x": x}, {"scale": normal(3, 4)}, opset=17,
                     n_outputs=3, axis=1)  # fmt: skip
    for name in ("out1", "out2"):
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    model = typed(model)
    expected = onnxruntime_session(model).run(None, {"x": x})
    reference = irc.run(irc.import_onnx(model), [x])
    compiled = irc.compile(model, num_threads=1)(x)
    for got in (reference, compiled):
        for g, e in zip(got, expected, strict=True):
            assert_close(g, e, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ conv transpose
CONV_TRANSPOSE_CASES = [
    dict(),
    dict(strides=[2, 2]),
    dict(strides=[2, 3], pads=[1, 0, 1, 2]),
    dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(dilations=[2, 1], pads=[0, 1, 1, 0]),
    dict(strides=[3, 2], output_padding=[2, 1], dilations=[1, 2]),
    dict(group=2, strides=[2, 2]),
    dict(strides=[2, 2], output_shape=[10, 9]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER", kernel_shape=[3, 3]),
]


@pytest.mark.parametrize("attrs", CONV_TRANSPOSE_CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose(attrs, bias):
    group = attrs.get("group", 1)
    x = normal(2, 4, 5, 4, seed=21)
    consts = {
        "w": normal(4, 6 // group, 3, 3, seed=22),
        "b": normal(6 // group * group, seed=23) if bias else None,
    }
    check(one_node("ConvTranspose", {"x": x}, consts, **attrs), {"x": x}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 2), (1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_whose_taps_tile_the_output(kernel, bias):
    """Stride = kernel (DBNet's 2×2 stride-2 upsamplers): the one-product path."""
    x = normal(2, 5, 7, 6, seed=27)
    consts = {"w": normal(5, 3, *kernel, seed=28), "b": normal(3, seed=29) if bias else None}
    model = one_node("ConvTranspose", {"x": x}, consts, strides=list(kernel))
    check(model, {"x": x}, rtol=1e-4, atol=1e-4)


@FEW
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
    st.integers(0, 2), st.integers(0, 99),
)  # fmt: skip
def test_conv_transpose_property(stride, dilation, kh, kw, pad, seed):
    x = normal(1, 3, 4, 5, seed=seed)
    pads = [min(pad, kh - 1), min(pad, kw - 1)] * 2
    attrs = dict(strides=[stride, stride], dilations=[dilation, dilation], pads=pads,
                 output_padding=[stride - 1, 0])  # fmt: skip
    consts = {"w": normal(3, 2, kh, kw, seed=seed + 1)}
    check(one_node("ConvTranspose", {"x": x}, consts, **attrs), {"x": x}, rtol=1e-4, atol=1e-4)


def test_conv_transpose_1d_is_unsupported():
    x = normal(1, 2, 5, seed=24)
    model = one_node("ConvTranspose", {"x": x}, {"w": normal(2, 3, 3, seed=25)})
    with pytest.raises(irc.UnsupportedOpError, match="convtranspose"):
        irc.import_onnx(model)


# ------------------------------------------------------------------ resize
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_modes(mode):
    x = normal(1, 3, 4, 5, seed=26)
    consts = {"roi": None, "scales": np.array([1, 1, 2, 1.5], np.float32)}
    check(one_node("Resize", {"x": x}, consts, mode=mode), {"x": x})


# ------------------------------------------------------------------ onnx export
EXPORT_CASES = {
    "pow": lambda x: (
        one_node("Pow", {"x": np.abs(x)}, {"y": np.array(0.5, np.float32)}),
        {"x": np.abs(x)},
    ),
    "erf": lambda x: (one_node("Erf", {"x": x}), {"x": x}),
    "gelu": lambda x: (one_node("Gelu", {"x": x}, opset=20), {"x": x}),
    "gelu-tanh": lambda x: (one_node("Gelu", {"x": x}, opset=20, approximate="tanh"), {"x": x}),
    "expand": lambda x: (one_node("Expand", {"x": x}, {"s": i64(2, 1, 1, 1)}), {"x": x}),
    "tile": lambda x: (one_node("Tile", {"x": x}, {"r": i64(1, 2, 1, 2)}), {"x": x}),
    "reduce-max": lambda x: (one_node("ReduceMax", {"x": x}, {"a": i64(1)}), {"x": x}),
    "reduce-min": lambda x: (one_node("ReduceMin", {"x": x}, {"a": i64(1)}), {"x": x}),
    "neg": lambda x: (one_node("Neg", {"x": x}), {"x": x}),
    "log": lambda x: (one_node("Log", {"x": np.abs(x) + 1}), {"x": np.abs(x) + 1}),
    "reduce-sum": lambda x: (
        one_node("ReduceSum", {"x": x}, {"a": i64(-1)}, keepdims=0),
        {"x": x},
    ),  # fmt: skip
    "layer-norm": lambda x: (
        one_node("LayerNormalization", {"x": x}, {"s": normal(5)}, opset=17),
        {"x": x},
    ),
    "conv-transpose": lambda x: (
        one_node(
            "ConvTranspose",
            {"x": x},
            {"w": normal(3, 2, 3, 3)},
            strides=[2, 2],
            pads=[1, 0, 0, 1],
            output_padding=[1, 1],
        ),
        {"x": x},
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_float_export_runs_in_onnxruntime(case):
    """The compiled float graph exports to ONNX that onnxruntime runs to the same values."""
    model, inputs = EXPORT_CASES[case](normal(1, 3, 4, 5, seed=27))
    compiled = irc.compile(model, num_threads=1)
    proto = export_onnx(compiled)
    expected = onnxruntime_result(model, inputs)
    assert_close(onnxruntime_result(proto, inputs), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,bounds", [(DType.F32, (1.0, 3.0, 0.25)), (DType.I64, (10, -3, -3))])
def test_range_kernel_on_graph_inputs(dtype, bounds):
    """A range whose operands are not constants (a graph built directly) runs its kernel."""
    graph = Graph("range")
    operands = [graph.add_input(n, TensorType(dtype, ())) for n in ("s", "l", "d")]
    arrays = [np.array(v, dtype.numpy) for v in bounds]
    op = build(graph, "range", operands, {"count": range_count(*arrays)}, result_names=["y"])
    graph.outputs.append(op.result)
    expected = np.arange(*bounds, dtype=dtype.numpy)
    assert_close(irc.run(graph, arrays)[0], expected)
    assert_close(irc.compile(graph, pipeline="", num_threads=1)(*arrays)[0], expected)
