"""ONNX QDQ export (``irc.export_onnx``, ``irc export``): the checker passes, weights are
stored at their bits holding irc's levels, and onnxruntime's outputs match irc's compiled
model within one quantization step of the output."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_paths import shared_path
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_builders import small_convnet

import irc
from irc import quant
from irc.calibration import load_folder
from irc.export_onnx import OPSET, ExportError, export_onnx
from irc.passes.layout import channels_first
from irc.tools.cli import main as irc_main

DATA = np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)
INPUTS = np.random.default_rng(2).standard_normal((6, 1, 3, 16, 16)).astype(np.float32)
MIXED = {"stem": "int8", "depthwise": "int4", "project": "int8", "head": "fp16",
         "expand": "fp32", "fc": "int8"}  # fmt: skip
MIXED_INT2 = {**MIXED, "project": "int2"}
# INT2's odd levels -3..3 are stored as INT4 (ONNX's INT2 holds [-2, 1] only)
WEIGHT_TYPES = {"i8": TensorProto.INT8, "i4": TensorProto.INT4, "i2": TensorProto.INT4}


def residual_net() -> onnx.ModelProto:
    """stem conv → depthwise conv → 1×1 projection + the stem's output (residual add) →
    strided conv → 1×1 conv → global pool → gemm; ReLU after each but the projection."""
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        init("w0", 8, 3, 3, 3), init("b0", 8), init("w1", 8, 1, 3, 3), init("b1", 8),
        init("w2", 8, 8, 1, 1), init("b2", 8), init("w3", 16, 8, 3, 3, scale=0.2),
        init("b3", 16), init("w4", 16, 16, 1, 1), init("b4", 16), init("fc_w", 10, 16),
        init("fc_b", 10),
    ]  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"], name="relu0"),
        n("Conv", ["r0", "w1", "b1"], ["c1"], name="depthwise", pads=[1, 1, 1, 1], group=8),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "w2", "b2"], ["c2"], name="project"),
        n("Add", ["c2", "r0"], ["s"], name="residual"),
        n("Relu", ["s"], ["rs"], name="relu_s"),
        n("Conv", ["rs", "w3", "b3"], ["c3"], name="head", pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Relu", ["c3"], ["r3"], name="relu3"),
        n("Conv", ["r3", "w4", "b4"], ["c4"], name="expand"),
        n("Relu", ["c4"], ["r4"], name="relu4"),
        n("GlobalAveragePool", ["r4"], ["gap"], name="gap"),
        n("Flatten", ["gap"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "residual_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


_COMPILED: dict = {}
BASIC = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # no QDQ fusion: float between Q/DQ


def compiled(precision, model=residual_net):
    """The model compiled at ``precision`` (cached: the tests only read it)."""
    key = (model.__name__, str(precision))
    if key not in _COMPILED:
        _COMPILED[key] = irc.compile(model(), precision=precision, calibration=DATA,
                                     progress=False)  # fmt: skip
    return _COMPILED[key]


def output_step(model) -> float:
    """One quantization step of the output: the scale of its last quantization, or, for a
    model that ends in float, the scale its calibrated range would quantize at."""
    out = model.graph.outputs[0]
    if out.producer.kind == "dequantize":
        return out.producer.operands[0].type.quant.scales[0]
    return quant.activation_params(*model.calibration.ranges[out.name])[0]


def session(proto, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=None):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def steps_apart(model, sess) -> float:
    """The largest |ORT − irc| over INPUTS, in steps of the output's quantization."""
    worst = 0.0
    for x in INPUTS:
        (want,) = model(x)
        (got,) = sess.run(None, {"x": x})
        worst = max(worst, float(np.abs(got - want).max()))
    return worst / output_step(model)


def weight_initializers(model, proto):
    """(irc qconstant op, its ONNX initializer) for every weight of the compiled graph."""
    inits = {t.name: t for t in proto.graph.initializer}
    return [
        (op, inits[op.result.name])
        for op in model.graph.ops
        if op.kind == "qconstant" and op.attrs["dtype"] in WEIGHT_TYPES
    ]


def irc_levels(op) -> np.ndarray:
    value = op.attrs["value"]
    if op.attrs["packed"]:
        return quant.unpack(value, int(op.attrs["dtype"][1:]), op.attrs["shape"])
    return value


# ------------------------------------------------------------------ onnxruntime agrees
@pytest.mark.parametrize(
    "precision, model",
    [("int8", residual_net), ("int4", residual_net), (MIXED, residual_net),
     ({"default": "int8", "fc": "fp16"}, small_convnet)],
    ids=["int8", "int4", "mixed", "float-logits"],
)  # fmt: skip
def test_onnxruntime_matches_irc_within_one_output_step(precision, model):
    model = compiled(precision, model)
    proto = model.export_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    # the QDQ semantics: float ops between DequantizeLinear and QuantizeLinear
    assert steps_apart(model, session(proto, BASIC)) <= 1.0 + 1e-4
    # fused into onnxruntime's integer kernels; INT8 weights as uint8, because its u8×s8
    # kernels saturate int16 pair sums on x86 without VNNI (up to 2 steps off here)
    fused = session(model.export_onnx(int8_weights="uint8"))
    assert steps_apart(model, fused) <= 1.0 + 1e-4


@pytest.mark.parametrize("weights", ["int8", "uint8"])
def test_int8_layers_fuse_into_onnxruntime_integer_kernels(tmp_path, weights):
    optimized = tmp_path / "optimized.onnx"
    session(compiled("int8").export_onnx(int8_weights=weights), optimized=optimized)
    kinds = [n.op_type for n in onnx.load(optimized).graph.node]
    assert not {"Conv", "Gemm", "Add", "GlobalAveragePool"} & set(kinds), kinds
    assert kinds.count("QLinearConv") == 5 and kinds.count("QLinearAdd") == 1
    assert kinds.count("QGemm") == 1 and kinds.count("QLinearGlobalAveragePool") == 1


@pytest.mark.parametrize("options", [{"activations": "int8"}, {"int8_weights": "uint8"}])
def test_storage_options_keep_the_reals(options):
    model = compiled("int8")
    proto = export_onnx(model, **options)
    assert steps_apart(model, session(proto, BASIC)) == 0.0
    inits = {t.name: t for t in proto.graph.initializer}
    want = TensorProto.UINT8 if "int8_weights" in options else TensorProto.INT8
    assert inits["w0.i8"].data_type == want


# ------------------------------------------------------------------ what is stored
@pytest.mark.parametrize("precision", ["int8", "int4", MIXED_INT2], ids=["int8", "int4", "int2"])
def test_weights_are_stored_at_their_bits_holding_irc_levels(precision):
    model = compiled(precision)
    proto = model.export_onnx()
    pairs = weight_initializers(model, proto)
    expected = {"int8": {"i8"}, "int4": {"i4"}}.get(str(precision), {"i8", "i4", "i2"})
    assert {op.attrs["dtype"] for op, _ in pairs} == expected
    assert len(pairs) == (4 if precision == MIXED_INT2 else 6)  # fp16, fp32 layers: float
    for op, init in pairs:
        bits = max(4, int(op.attrs["dtype"][1:]))  # INT2 as INT4
        assert init.data_type == WEIGHT_TYPES[op.attrs["dtype"]]
        count = int(np.prod(op.attrs["shape"]))
        assert len(init.raw_data) == (count * bits + 7) // 8  # really 8 or 4 bits each
        decoded = numpy_helper.to_array(init).astype(np.int8)
        np.testing.assert_array_equal(decoded, irc_levels(op))


def test_int2_model_passes_the_checker_and_dequantizes_to_irc_weights():
    model = compiled(MIXED_INT2)
    proto = model.export_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    inits = {t.name: t for t in proto.graph.initializer}
    for op, _ in weight_initializers(model, proto):
        (node,) = [n for n in proto.graph.node if n.input[0] == op.result.name]
        assert node.op_type == "DequantizeLinear" and node.attribute[0].i == 0  # axis 0
        alone = helper.make_model(
            helper.make_graph([node], "dq", [], [helper.make_tensor_value_info(
                node.output[0], TensorProto.FLOAT, None)], [inits[i] for i in node.input]),
            opset_imports=proto.opset_import,
        )  # fmt: skip
        (got,) = ReferenceEvaluator(alone).run(None, {})
        want = quant.dequantize(irc_levels(op), op.attrs["scales"], 0, axis=0)
        np.testing.assert_array_equal(got, want)
    int2 = [op for op, _ in weight_initializers(model, proto) if op.attrs["dtype"] == "i2"]
    assert int2 and set(np.unique(irc_levels(int2[0]))) <= {-3, -1, 1, 3}
    # onnxruntime runs the INT2 layers (INT4 initializers) in float: it matches irc, at its
    # basic optimization level and at its default one
    assert steps_apart(model, session(proto, BASIC)) <= 1.0 + 1e-4
    assert steps_apart(model, session(proto)) <= 1.0 + 1e-4


def test_names_precisions_and_float_layers():
    model = compiled(MIXED)
    proto = model.export_onnx()
    graph = proto.graph
    assert [v.name for v in graph.input] == ["x"] and [v.name for v in graph.output] == ["logits"]
    produced = {o for n in graph.node for o in n.output}
    kinds = ("constant", "qconstant")  # initializers, when read (multiplier, shift never are)
    exported = channels_first(model.graph)  # the layout the export writes: no transposes
    assert {op.result.name for op in exported.ops if op.kind not in kinds} <= produced
    assert not any(n.op_type == "Transpose" for n in graph.node)
    docs = {n.name: n.doc_string for n in graph.node if n.doc_string}
    assert docs["depthwise"].endswith(": int4") and docs["head"].endswith(": fp16")
    assert "irc.precision" in {p.key for p in proto.metadata_props}
    inits = {t.name: t for t in graph.initializer}
    (head,) = [n for n in graph.node if n.name == "head"]
    (cast,) = [n for n in graph.node if n.output[0] == head.input[1]]
    assert cast.op_type == "Cast" and inits[cast.input[0]].data_type == TensorProto.FLOAT16
    (expand,) = [n for n in graph.node if n.name == "expand"]
    assert inits[expand.input[1]].data_type == TensorProto.FLOAT  # fp32: the weight as is
    assert {vi.name for vi in graph.value_info} >= {"r0.q", "rs.q"}  # shapes for viewers


ODD_OUTPUTS = """graph @q(%x: f32[2,4]) {
  %x.q = quantize(%x) {scale=0.05, zero_point=3} : qi8<0.05:3>[2,4]
  %r.q = reshape(%x.q) {shape=[4,2]} : qi8<0.05:3>[4,2]
  %r = dequantize(%r.q) : f32[4,2]
  %s = relu(%r) : f32[4,2]
  return %r.q, %s, %s, %x
}
"""


@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_int8_outputs_repeated_outputs_and_inputs_as_outputs(activations):
    graph = irc.parse_graph(ODD_OUTPUTS)
    proto = export_onnx(graph, activations=activations)
    assert [v.name for v in proto.graph.output] == ["r.q", "s", "s.out", "x"]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    for got, want in zip(session(proto).run(None, {"x": x}), irc.run(graph, [x])):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_bad_options_and_elided_graphs_are_refused():
    with pytest.raises(ExportError, match="activations must be one of"):
        export_onnx(compiled("int8"), activations="int4")
    elided = irc.parse_graph(irc.print_graph(compiled("int8").graph, full=False), verify=False)
    with pytest.raises(ExportError, match="no data|elided"):
        export_onnx(elided)


# ------------------------------------------------------------------ the command
def test_irc_export_writes_the_onnx_of_a_compiled_model_file(tmp_path, capsys):
    model = compiled("int4")
    model.save(tmp_path / "m.ircm")
    out = tmp_path / "m.onnx"
    assert irc_main(["export", str(tmp_path / "m.ircm"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert steps_apart(model, session(proto, BASIC)) <= 1.0 + 1e-4


@pytest.mark.parametrize("damage", ["onnx", "truncated", "corrupt", "missing"])
def test_irc_export_of_a_bad_file_is_one_line_and_exit_2(tmp_path, capsys, damage):
    path = tmp_path / "m.ircm"
    if damage == "onnx":
        onnx.save(residual_net(), path)
    elif damage != "missing":
        compiled("int8").save(path)
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            data = data[:400]
        else:
            data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    assert irc_main(["export", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("irc: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ a real model
@pytest.mark.slow
def test_mobilenetv2_int8_in_onnxruntime():
    path = shared_path("models", "mobilenetv2_bn.onnx")
    calib = load_folder(shared_path("data", "imagenet-calib256"), "torchvision", limit=8)
    images = load_folder(shared_path("data", "imagenet-val1300"), "torchvision", limit=16)
    model = irc.compile(path, precision="int8", calibration=calib, progress=False)
    step = output_step(model)
    want = [model(x[None])[0] for x in images]
    default, unsigned = model.export_onnx(), model.export_onnx(int8_weights="uint8")
    for what, sess, min_agree, max_steps in (
        ("QDQ semantics (ORT_ENABLE_BASIC)", session(default, BASIC), 13, 16),
        ("fused, INT8 weights as uint8", session(unsigned), 13, 16),
        ("fused, INT8 weights (u8×s8 saturates without VNNI)", session(default), 11, 160),
    ):
        got = [sess.run(None, {"input": x[None]})[0] for x in images]
        diffs = [float(np.abs(g - w).max()) / step for g, w in zip(got, want)]
        agree = sum(int(g.argmax() == w.argmax()) for g, w in zip(got, want))
        print(f"{what}: top-1 agreement {agree}/{len(images)}, max {max(diffs):.0f} steps, "
              f"median {np.median(diffs):.1f}")  # fmt: skip
        assert agree >= min_agree and max(diffs) <= max_steps
