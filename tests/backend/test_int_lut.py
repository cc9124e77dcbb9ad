"""End to end: a smooth activation between two convolutions compiled at INT8 runs as one
``qlut`` on the int8 levels (SiLU, a sigmoid and a mul, as one table).

The compiled graph holds the qlut and no quantize / dequantize around it, its output equals
the reference interpreter on the same graph bit for bit and survives a model file, its SQNR
against the float model stays within 0.5 dB of what it was with the activation in float
(``FLOAT_SQNR_DB``, these inputs), and its ONNX QDQ export runs in onnxruntime within one
output step. A quantized compile keeps HardSwish out of the convolution before it
(``irc.pipelines.QUANTIZED_FLOAT_PIPELINE``: fused, it would be the conv's activation,
which has no integer form, and that conv would stay float).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx_builders import activation_net
from qdq_checks import assert_ort_agrees_within_a_step

import irc
from irc.measure import sqnr_db

DATA = np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)
INPUTS = np.random.default_rng(2).standard_normal((8, 1, 3, 16, 16)).astype(np.float32)
# activation -> (qlut function, SQNR in dB with the activation in float between a
# dequantize and a quantize, before qlut)
CASES = {
    "Sigmoid": ("sigmoid", 36.88),
    "Tanh": ("tanh", 33.63),
    "HardSigmoid": ("hard_sigmoid", 36.76),
    "HardSwish": ("hard_swish", 33.83),
    "SiLU": ("silu", 33.75),
    "GELU": ("gelu", 33.77),
    "GeluTanh": ("gelu_tanh", 33.77),
}  # GeluTanh's was measured with the table, which holds what the float path computes

_COMPILED = {}


def compiled(activation: str):
    """``activation_net(activation)`` at INT8 on one thread (cached: the tests only read it)."""
    if activation not in _COMPILED:
        options = {"calibration": DATA, "num_threads": 1, "progress": False}
        _COMPILED[activation] = irc.compile(activation_net(activation), precision="int8",
                                            **options)  # fmt: skip
    return _COMPILED[activation]


@pytest.mark.parametrize("activation", CASES)
def test_the_activation_is_one_table_between_the_layers(activation):
    graph = compiled(activation).graph
    kinds = Counter(op.kind for op in graph.ops)
    assert kinds["qlut"] == 1 and kinds["qconv2d"] == 2
    assert kinds["quantize"] == 1 and kinds["dequantize"] == 1  # the input and the output
    assert not {"sigmoid", "tanh", "hard_sigmoid", "hard_swish", "gelu", "erf", "mul"} & set(kinds)
    (lut,) = [op for op in graph.ops if op.kind == "qlut"]
    assert lut.attrs["function"] == CASES[activation][0]
    assert lut.operands[0].producer.kind == "qconv2d"
    assert all(user.kind == "qconv2d" for user in lut.result.users())


@pytest.mark.parametrize("activation", CASES)
def test_bit_exact_against_the_reference_interpreter(activation, tmp_path):
    model = compiled(activation)
    path = tmp_path / "lut.ircm"
    model.save(str(path))
    loaded = irc.load(str(path))
    for x in INPUTS[:4]:
        (got,) = model(x)
        (want,) = irc.run(model.graph, [x])
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(loaded(x)[0], got)


@pytest.mark.parametrize("activation", CASES)
def test_sqnr_against_the_float_model_holds(activation):
    session = ort.InferenceSession(activation_net(activation).SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    want = np.concatenate([session.run(None, {"x": x})[0] for x in INPUTS])
    got = np.concatenate([compiled(activation)(x)[0] for x in INPUTS])
    assert sqnr_db(got, want) >= CASES[activation][1] - 0.5


@pytest.mark.parametrize("activation", ["Sigmoid", "HardSigmoid", "SiLU", "GELU", "GeluTanh"])
def test_qdq_export_runs_in_onnxruntime(activation, tmp_path):
    model = compiled(activation)
    path = tmp_path / "lut.qdq.onnx"
    proto = model.export_onnx(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert (
        ops[{"SiLU": "Sigmoid", "GELU": "Gelu", "GeluTanh": "Gelu"}.get(activation, activation)]
        == 1
    )
    assert ops["Mul"] == (activation == "SiLU")
    assert_ort_agrees_within_a_step(model, path, INPUTS[:3])


def test_a_sigmoid_used_elsewhere_is_no_silu():
    """x · sigmoid(x) where the sigmoid is also a graph output: two tables, sigmoid and
    the mul stays float (its operands are one int8 value and one table's)."""
    model = activation_net("SiLU")
    model.graph.output.append(onnx.helper.make_tensor_value_info("gate", onnx.TensorProto.FLOAT,
                                                                 [1, 8, 16, 16]))  # fmt: skip
    compiled_model = irc.compile(model, precision="int8", calibration=DATA, num_threads=1,
                                 progress=False)  # fmt: skip
    kinds = Counter(op.kind for op in compiled_model.graph.ops)
    functions = [op.attrs["function"] for op in compiled_model.graph.ops if op.kind == "qlut"]
    assert functions == ["sigmoid"] and kinds["mul"] == 1


def test_a_float_compile_still_fuses_hard_swish():
    """Only a quantized compile keeps hard_swish apart: at FP32 the conv runs it fused."""
    kinds = Counter(op.kind for op in irc.compile(activation_net("HardSwish")).graph.ops)
    assert "hard_swish" not in kinds


# a scalar affine after HardSwish -> (its table's alpha, beta; SQNR in dB with the mul and
# add, or the sub, in float between a dequantize and a quantize, before the "affine" table)
AFFINE_CASES = {"Affine": ((0.7, 0.3), 34.14), "Shift": ((1.0, -0.25), 32.62)}


@pytest.mark.parametrize("activation", AFFINE_CASES)
def test_a_scalar_affine_is_one_table_after_the_activations(activation, tmp_path):
    """PP-LCNet's learnable affine block (x · a + b by scalar constants) after HardSwish:
    a second table, no float op left; bit-exact with the interpreter, as accurate as the
    float path, and exported as DequantizeLinear → Mul → Add → QuantizeLinear."""
    model = compiled(activation)
    kinds = Counter(op.kind for op in model.graph.ops)
    assert kinds["qlut"] == 2 and not {"mul", "add", "sub"} & set(kinds)
    assert kinds["quantize"] == 1 and kinds["dequantize"] == 1
    (affine,) = [op for op in model.graph.ops if op.attrs.get("function") == "affine"]
    assert (affine.attrs["alpha"], affine.attrs["beta"]) == pytest.approx(
        AFFINE_CASES[activation][0]
    )
    for x in INPUTS[:3]:
        np.testing.assert_array_equal(model(x)[0], irc.run(model.graph, [x])[0])
    session = ort.InferenceSession(activation_net(activation).SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    want = np.concatenate([session.run(None, {"x": x})[0] for x in INPUTS])
    got = np.concatenate([model(x)[0] for x in INPUTS])
    assert sqnr_db(got, want) >= AFFINE_CASES[activation][1] - 0.5
    path = tmp_path / "affine.qdq.onnx"
    proto = model.export_onnx(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert_ort_agrees_within_a_step(model, path, INPUTS[:3])


@pytest.mark.parametrize("activation", ["Halve", "SubFrom", "ChannelScale"])
def test_what_is_not_a_scalar_affine_stays_float(activation):
    """x / c (rounds otherwise than x · (1/c)), c − x and a per-channel scale are no
    "affine" table: the op stays float between a dequantize and a quantize."""
    kinds = Counter(op.kind for op in compiled(activation).graph.ops)
    functions = [op.attrs["function"] for op in compiled(activation).graph.ops
                 if op.kind == "qlut"]  # fmt: skip
    assert functions == ["hard_swish"]
    assert kinds[{"Halve": "div", "SubFrom": "sub", "ChannelScale": "mul"}[activation]] == 1


def test_a_scalar_affine_read_by_a_float_layer_stays_float():
    """Quantizing x · a + b costs nothing only where int8 layers read it: before a layer
    kept at FP32 the mul and the add stay float (on ppocrv4-rec, such tables read by float
    ops cost 5 dB of output SQNR)."""
    model = irc.compile(activation_net("Affine"), precision={"default": "int8", "head": "fp32"},
                        calibration=DATA, num_threads=1, progress=False)  # fmt: skip
    kinds = Counter(op.kind for op in model.graph.ops)
    functions = [op.attrs["function"] for op in model.graph.ops if op.kind == "qlut"]
    assert functions == ["hard_swish"] and kinds["mul"] == kinds["add"] == 1
