"""ONNX importer behaviour: folding, specialisation, opset handling, errors, no mutation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import single_node_model, tiny_cnn

import irc
from irc.errors import ConversionError, ModelLoadError, UnsupportedOpError


def _kinds(graph):
    return [op.kind for op in graph.ops]


def test_shape_gather_cast_concat_chain_folds_to_a_constant_reshape():
    # y = Reshape(x, Concat(Cast(Gather(Shape(x), 0)), [-1])): a typical exported flatten
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Cast", ["n1"], ["n2"], to=TensorProto.INT64),
        helper.make_node("Concat", ["n2", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = irc.import_onnx(model)
    assert _kinds(g) == ["reshape"]
    assert g.ops[0].attrs["shape"] == (2, -1)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (y,) = irc.run(g, [x])
    np.testing.assert_array_equal(y, x.reshape(2, 12))


def test_symbolic_batch_imports_and_specialises():
    g = irc.import_onnx(tiny_cnn(batch="N"))
    assert str(g.inputs[0].type) == "f32[N,3,8,8]" and str(g.outputs[0].type) == "f32[N,5]"
    g8 = irc.import_onnx(tiny_cnn(batch="N"), input_shapes={"x": (8, 3, 8, 8)})
    assert str(g8.outputs[0].type) == "f32[8,5]"
    assert str(irc.specialize(g, {"x": (4, 3, 8, 8)}).outputs[0].type) == "f32[4,5]"
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        irc.run(g, [x])[0], irc.run(g8, [np.concatenate([x, x, x[:2]])])[0][:3]
    )


def test_given_shape_must_agree_with_static_dims():
    with pytest.raises(ConversionError, match="static dimension 3 at axis 1"):
        irc.import_onnx(tiny_cnn(), input_shapes={"x": (1, 4, 8, 8)})
    with pytest.raises(ConversionError, match="no model input is called"):
        irc.import_onnx(tiny_cnn(), input_shapes={"image": (1, 3, 8, 8)})


def test_import_does_not_modify_the_users_model():
    model = tiny_cnn()
    before = model.SerializeToString()
    irc.import_onnx(model, input_shapes={"x": (2, 3, 8, 8)})
    assert model.SerializeToString() == before


def test_old_opset_is_refused_with_advice():
    model = single_node_model("Relu", [("x", [2])], [("y", [2])], opset=6)
    with pytest.raises(ModelLoadError, match="opset 6; irc imports opset 7 and newer"):
        irc.import_onnx(model)


def test_operand_needed_at_compile_time_is_named():
    model = single_node_model("Reshape", [("x", [2, 3]), ("shape", [2])], [("y", [3, 2])])
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(ConversionError, match="input 'shape' .* must be a constant"):
        irc.import_onnx(model)


def test_nan_weights_import_and_propagate():
    model = tiny_cnn(batch=1)
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0, 0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    (y,) = irc.run(irc.import_onnx(model), [np.ones((1, 3, 8, 8), np.float32)])
    assert np.isnan(y).all()  # channel 0 feeds every logit


def test_unsupported_domain():
    model = single_node_model("Relu", [("x", [2])], [("y", [2])])
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError, match="domain 'com.example'"):
        irc.import_onnx(model, check=False)


def test_dropout_and_identity_vanish():
    nodes = [
        helper.make_node("Dropout", ["x"], ["d"]),
        helper.make_node("Identity", ["d"], ["i"]),
        helper.make_node("Relu", ["i"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    g = irc.import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert _kinds(g) == ["relu"]


def test_model_bytes_and_path_import_alike(tmp_path):
    model = tiny_cnn()
    onnx.save(model, tmp_path / "m.onnx")
    a = irc.print_graph(irc.import_onnx(tmp_path / "m.onnx"))
    b = irc.print_graph(irc.import_onnx(model.SerializeToString()))
    assert a == b
