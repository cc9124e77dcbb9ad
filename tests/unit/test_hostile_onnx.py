"""Hostile ONNX models (issue 25, a fuzzing campaign): each is refused with a one-line
``irc.IrcError`` naming the node, file or value at fault, never a raw onnx / numpy /
TypeError traceback, a wrong answer or an out-of-bounds read; the input file is left as it
was.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irc
from irc import constant_folding, errors
from irc.errors import ConversionError, IrcError, ModelLoadError, TypeInferenceError
from irc.ir import Graph
from irc.opdef import build, get_opdef, infer_types
from irc.types import DType, TensorType


def _model(nodes, inputs, outputs, inits=(), opset: int = 13) -> onnx.ModelProto:
    """A float32 model from nodes, (name, shape) inputs and outputs, and initializers."""
    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _refused(source, error=IrcError, match: str | None = None, **kwargs) -> str:
    """Import ``source``; assert it raises ``error`` with a one-line message; return it."""
    with pytest.raises(error, match=match) as info:
        irc.import_onnx(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _f32(*shape) -> TensorType:
    return TensorType(DType.F32, shape)


def _infer(kind: str, types, **attrs):
    full = get_opdef(kind).normalize_attrs(attrs, kind)
    return infer_types(kind, list(types), full, kind)


# ------------------------------------------------------------------ 1. Gemm's bias C
def _gemm_model(c_shape, n: int = 1, m=2) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.ones((4, n), np.float32), "w"),
        numpy_helper.from_array(np.zeros(c_shape, np.float32), "c"),
    ]
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="fc")
    return _model([node], [("x", [m, 4])], [("y", [m, n])], inits)


@pytest.mark.parametrize(
    "c_shape", [(0,), (1, 0), (0, 3), (2, 1, 3), (2,), (3, 3), ("M", 3), (2, "N")]
)
def test_gemm_type_rule_refuses_bias_that_does_not_broadcast_to_the_output(c_shape):
    a, b = _f32(2, 4), _f32(4, 3)
    with pytest.raises(TypeInferenceError, match="bias C"):
        _infer("gemm", [a, b, _f32(*c_shape)])


@pytest.mark.parametrize("c_shape", [(), (1,), (3,), (1, 3), (2, 1), (2, 3), (1, 1)])
def test_gemm_type_rule_accepts_unidirectional_bias(c_shape):
    (out,) = _infer("gemm", [_f32(2, 4), _f32(4, 3), _f32(*c_shape)])
    assert out.shape == (2, 3)


def test_gemm_type_rule_with_a_symbolic_batch():
    a, b = _f32("N", 4), _f32(4, 3)
    for ok in [(3,), (1, 3), ("N", 3), ("N", 1)]:
        assert _infer("gemm", [a, b, _f32(*ok)])[0].shape == ("N", 3)
    for bad in [(2, 3), ("M", 3), (0, 3)]:
        with pytest.raises(TypeInferenceError, match="bias C"):
            _infer("gemm", [a, b, _f32(*bad)])


@pytest.mark.parametrize("c_shape", [(0,), (1, 0)])
def test_gemm_with_zero_size_bias_is_refused_at_import(c_shape):
    # onnx's checker and shape inference take these; irc's kernel read past the bias
    message = _refused(_gemm_model(c_shape), ConversionError, match="node 'fc' \\(Gemm\\)")
    assert "zero elements" in message


def test_conv2d_bias_rule_is_exact():
    x, w = _f32(1, 2, 5, 5), _f32(4, 2, 3, 3)
    assert _infer("conv2d", [x, w, _f32(4)])[0].shape == (1, 4, 3, 3)
    for bad in [(0,), (1,), (1, 4), (4, 1), ("C",)]:
        with pytest.raises(TypeInferenceError, match="bias"):
            _infer("conv2d", [x, w, _f32(*bad)])


# ------------------------------------------------------------------ 2. silently wrong imports
def _clip_model(lo: np.ndarray) -> onnx.ModelProto:
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clipper")
    inits = [numpy_helper.from_array(lo, "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    return _model([node], [("x", [2, 3])], [("y", [2, 3])], inits)


def test_clip_with_vector_bounds_is_refused():
    message = _refused(_clip_model(np.array([0, 1, 2], np.float32)), ConversionError)
    assert "node 'clipper' (Clip)" in message and "scalar" in message


def test_clip_with_scalar_or_one_element_bounds_imports():
    x = np.array([[-1, 0, 3], [5, 7, 9]], np.float32)
    for lo in (np.float32(0.5), np.array([0.5], np.float32)):
        (y,) = irc.run(irc.import_onnx(_clip_model(lo)), [x])
        np.testing.assert_array_equal(y, np.clip(x, 0.5, 6))


def test_pad_with_vector_constant_value_is_refused():
    node = helper.make_node("Pad", ["x", "pads", "v"], ["y"], name="padder")
    inits = [
        numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array([1, 2], np.float32), "v"),
    ]
    model = _model([node], [("x", [2, 3])], [("y", [2, 5])], inits)
    message = _refused(model, ConversionError, match="node 'padder' \\(Pad\\)")
    assert "scalar" in message


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
def test_pool_with_pads_not_smaller_than_the_kernel_is_refused(op_type):
    node = helper.make_node(op_type, ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[2] * 4)
    model = _model([node], [("x", [1, 1, 4, 4])], [("y", [1, 1, 7, 7])])
    message = _refused(model, ConversionError, match=f"node 'pool' \\({op_type}\\)")
    assert "pads" in message and "kernel" in message


def test_pool_type_rule_refuses_all_padding_windows():
    x = _f32(1, 1, 4, 4)
    for kind in ("max_pool", "avg_pool"):
        with pytest.raises(TypeInferenceError, match="smaller than the kernel"):
            _infer(kind, [x], kernel=(2, 2), pads=(0, 0, 0, 2))
        assert _infer(kind, [x], kernel=(2, 2), pads=(1, 1, 1, 1))[0].shape == (1, 1, 5, 5)
    # dilation widens the window: pads up to its extent leave no window all padding
    (out,) = _infer("max_pool", [x], kernel=(2, 2), pads=(2, 2, 2, 2), dilations=(2, 2))
    assert out.shape == (1, 1, 6, 6)
    # ... unless the window's gap steps over a short input: elements at -2 and 1 of [0, 1)
    with pytest.raises(TypeInferenceError, match="window 0 along spatial axis 1"):
        _infer("max_pool", [_f32(1, 1, 4, 1)], kernel=(1, 2), pads=(0, 2, 0, 1), dilations=(1, 3))


def test_same_padding_with_dilation_still_imports():
    # SAME needs pads up to the dilated window (here 2 >= kernel 2), which is fine
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], auto_pad="SAME_UPPER",
        dilations=[3, 3],
    )  # fmt: skip
    model = _model([node], [("x", [1, 1, 6, 6])], [("y", [1, 1, 6, 6])])
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    (y,) = irc.run(irc.import_onnx(model), [x])
    assert np.isfinite(y).all() and y.shape == (1, 1, 6, 6)


def test_squeeze_without_axes_over_a_symbolic_dim_is_refused():
    node = helper.make_node("Squeeze", ["x"], ["y"], name="sq")
    model = _model([node], [("x", ["N", 1, 3])], [("y", ["N", 3])])
    message = _refused(model, ConversionError, match="node 'sq' \\(Squeeze\\)")
    assert "'N'" in message and "input_shapes" in message
    for batch, shape in ((2, "f32[2,3]"), (1, "f32[3]")):
        g = irc.import_onnx(model, input_shapes={"x": (batch, 1, 3)})
        assert str(g.outputs[0].type) == shape  # static: every 1 goes, as onnxruntime does


def test_squeeze_with_axes_keeps_symbolic_dims():
    node = helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    model = _model([node], [("x", ["N", 1, 3])], [("y", ["N", 3])], [axes])
    assert str(irc.import_onnx(model).outputs[0].type) == "f32[N,3]"


def test_opset_newer_than_onnx_knows_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    model = _model([node], [("x", [2])], [("y", [2])], opset=99)
    message = _refused(model, ModelLoadError, match="opset 99")
    assert str(onnx.defs.onnx_opset_version()) in message
    _refused(model, ModelLoadError, match="opset 99", check=False)


# ------------------------------------------------------------------ 3. the ONNX loader
def _add_model(tensor: onnx.TensorProto) -> onnx.ModelProto:
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    return _model([node], [("x", [4])], [("y", [4])], [tensor])


def _external(**entries) -> onnx.ModelProto:
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, str(value)
    return _add_model(t)


def _write(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model)
    (tmp_path / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    return path


def _refused_file(path, match: str) -> str:
    before = path.read_bytes()
    message = _refused(path, ModelLoadError, match=match)
    assert str(path) in message
    assert path.read_bytes() == before
    return message


def test_external_data_that_loads_is_fine(tmp_path):
    path = _write(tmp_path, _external(location="w.bin"))
    (y,) = irc.run(irc.import_onnx(path), [np.zeros(4, np.float32)])
    np.testing.assert_array_equal(y, np.ones(4, np.float32))


@pytest.mark.parametrize(
    "entries",
    [
        {"location": "../w.bin"},
        {"location": "w.bin", "offset": 1000, "length": 16},
        {"location": "w.bin", "offset": "abc"},
        {"location": "missing.bin"},
    ],
)
def test_bad_external_data_is_a_load_error(tmp_path, entries):
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", _external(**entries))
    _refused_file(path, match="initializer 'w'|external")


def test_external_data_without_a_path_is_refused():
    model = _external(location="w.bin")
    _refused(model.SerializeToString(), ModelLoadError, match="initializer 'w'.*path")
    _refused(model, ModelLoadError, match="initializer 'w'.*path")


def test_unknown_tensor_data_type_is_a_load_error(tmp_path):
    t = TensorProto(name="w", data_type=999, dims=[4], raw_data=bytes(16))
    path = _write(tmp_path, _add_model(t))
    message = _refused_file(path, match="initializer 'w'")
    assert "999" in message
    _refused(_add_model(t).SerializeToString(), ModelLoadError, match="initializer 'w'.*999")


def test_raw_data_longer_than_the_shape_needs_is_a_load_error(tmp_path):
    t = numpy_helper.from_array(np.ones(4, np.float32), "w")
    t.raw_data = bytes(40)
    message = _refused_file(_write(tmp_path, _add_model(t)), match="initializer 'w'")
    assert "40 bytes" in message and "16" in message


def test_typed_data_longer_than_the_shape_needs_is_a_load_error():
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], float_data=[1.0] * 7)
    _refused(_add_model(t), ModelLoadError, match="initializer 'w'")


def test_malformed_constant_node_tensor_names_the_node():
    t = numpy_helper.from_array(np.ones(4, np.float32), "k")
    t.raw_data = bytes(40)
    nodes = [
        helper.make_node("Constant", [], ["k"], name="konst", value=t),
        helper.make_node("Add", ["x", "k"], ["y"], name="add"),
    ]
    _refused(_model(nodes, [("x", [4])], [("y", [4])]), IrcError, match="'konst'")


def _with_invalid_utf8(model: onnx.ModelProto, marker: bytes) -> bytes:
    data = model.SerializeToString()
    assert data.count(marker) == 1
    return data.replace(marker, marker[:3] + b"\xff" + marker[4:])


def test_node_name_that_is_not_utf8_is_replaced(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="NODEXNAME")
    data = _with_invalid_utf8(_model([node], [("x", [2])], [("y", [2])]), b"NODEXNAME")
    path = _write(tmp_path, data)
    for source in (data, path):
        g = irc.import_onnx(source)
        assert g.ops[0].name == "NOD\ufffdXNAME"
        assert "NOD\\ufffdXNAME" in irc.print_graph(g)  # the printer's JSON path took it
    assert path.read_bytes() == data


def test_value_name_that_is_not_utf8_is_refused(tmp_path):
    node = helper.make_node("Relu", ["x"], ["VALUEXNAM"], name="r")
    idn = helper.make_node("Identity", ["VALUEXNAM"], ["y"], name="i")
    # the name occurs twice (Relu's output, Identity's input): patch both
    data = _model([node, idn], [("x", [2])], [("y", [2])]).SerializeToString()
    data = data.replace(b"VALUEXNAM", b"VAL\xffEXNAM")
    message = _refused_file(_write(tmp_path, data), match="not valid UTF-8")
    assert "graph.node[0].output[0]" in message
    _refused(data, ModelLoadError, match="not valid UTF-8")


# ------------------------------------------------------------------ 4. huge constants
def _constant_of_shape_model(shape) -> onnx.ModelProto:
    nodes = [
        helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill"),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    inits = [numpy_helper.from_array(np.array(shape, np.int64), "s")]
    return _model(nodes, [("x", [1])], [("y", list(shape))], inits)


def test_constant_of_shape_over_the_limit_is_refused_before_allocating():
    # 4 TiB: numpy itself would raise its raw _ArrayMemoryError
    model = _constant_of_shape_model([2**20, 2**20])
    assert len(model.SerializeToString()) < 4096
    message = _refused(
        model, errors.ConstantTooLargeError, match="node 'fill' \\(ConstantOfShape\\)"
    )
    assert "IRC_MAX_CONSTANT_BYTES" in message and "4.0 TiB" in message


def test_the_constant_limit_comes_from_the_environment(monkeypatch):
    assert constant_folding.MAX_CONSTANT_BYTES == 2 * 1024**3
    model = _constant_of_shape_model([512, 1024])  # 2 MiB of float32
    irc.import_onnx(model)
    monkeypatch.setenv("IRC_MAX_CONSTANT_BYTES", str(2**20))
    message = _refused(model, errors.ConstantTooLargeError, match="node 'fill'")
    assert "2.0 MiB" in message and "1.0 MiB" in message
    monkeypatch.setenv("IRC_MAX_CONSTANT_BYTES", "lots")
    _refused(model, IrcError, match="IRC_MAX_CONSTANT_BYTES")


def test_pad_folded_to_a_huge_constant_is_refused():
    nodes = [
        helper.make_node("Pad", ["c", "p"], ["d"], name="padder"),
        helper.make_node("Add", ["x", "d"], ["y"], name="add"),
    ]
    inits = [
        numpy_helper.from_array(np.ones((1, 4), np.float32), "c"),
        numpy_helper.from_array(np.array([0, 0, 2**20, 2**40], np.int64), "p"),
    ]
    model = _model(nodes, [("x", [1])], [("y", [2**20 + 1, 2**40 + 4])], inits)
    _refused(model, errors.ConstantTooLargeError, match="'padder'.*IRC_MAX_CONSTANT_BYTES")
    with pytest.raises(errors.ConstantTooLargeError):
        irc.compile(model)


def test_constant_folding_pass_checks_the_limit_before_evaluating():
    g = Graph("g")
    c = build(g, "constant", [], {"value": np.ones((1, 4), np.float32)}).result
    build(g, "pad", [c], {"pads": (0, 0, 0, 2**40)}, name="big")
    with pytest.raises(errors.ConstantTooLargeError, match="op 'big' \\(pad\\)"):
        constant_folding.fold_constants(g)
    assert math.prod((1, 2**40 + 4)) * 4 > constant_folding.MAX_CONSTANT_BYTES
