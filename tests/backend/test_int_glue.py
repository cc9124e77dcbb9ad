"""End to end: a detector's glue (max pool, concat of two branches of different ranges,
nearest resize) compiled at INT8 runs in integers between its convolutions.

The compiled graph holds no quantize / dequantize around the glue, its output equals the
reference interpreter on the same graph bit for bit, its SQNR against the float model stays
within 0.5 dB of what it was when the glue ran in float (33.29 dB on these inputs; 33.68 dB
in integers), and its ONNX QDQ export runs in onnxruntime within one output step.

A concat that only feeds the graph's output (a detector's boxes in pixels beside its scores
in 0..1) stays float of its inputs each dequantized at its own scale: as an int8 qconcat at
the union of their ranges, the scores (one step of 1/255 against the boxes' ~9) measured
0.0 dB against the float model; float, 42 dB.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx_builders import detector_head_net, pool_concat_resize_net
from qdq_checks import assert_ort_agrees_within_a_step

import irc
from irc import quant
from irc.measure import sqnr_db
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE

DATA = np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)
INPUTS = np.random.default_rng(2).standard_normal((8, 1, 3, 16, 16)).astype(np.float32)
FLOAT_GLUE_SQNR_DB = 33.29  # the same model and inputs with the glue in float (before)
GLUE = ("max_pool", "qconcat", "resize")

_COMPILED = {}


def compiled():
    """The model compiled at INT8 on one thread (cached: the tests only read it)."""
    if "int8" not in _COMPILED:
        options = {"calibration": DATA, "num_threads": 1, "progress": False}
        _COMPILED["int8"] = irc.compile(pool_concat_resize_net(), precision="int8", **options)
    return _COMPILED["int8"]


def float_outputs() -> np.ndarray:
    session = ort.InferenceSession(pool_concat_resize_net().SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    return np.concatenate([session.run(None, {"x": x})[0] for x in INPUTS])


def test_glue_runs_in_integers_between_the_layers():
    graph = compiled().graph
    kinds = Counter(op.kind for op in graph.ops)
    assert all(kinds[k] == 1 for k in GLUE) and kinds["concat"] == 0
    assert kinds["quantize"] == 1 and kinds["dequantize"] == 1  # the input and the output
    for op in graph.ops:
        if op.kind in GLUE:
            assert all(v.type.quant is not None for v in (*op.operands, op.result))
            assert all(v.producer.kind != "quantize" for v in op.operands)
            assert all(user.kind != "dequantize" for user in op.result.users())


def test_concat_takes_the_union_of_its_inputs_ranges():
    """The wide branch's range holds the narrow one's: its levels are copied, the narrow
    branch's requantized; max pool and resize keep their input's parameters."""
    ops = {op.kind: op for op in compiled().graph.ops}
    cat, pool, up = ops["qconcat"], ops["max_pool"], ops["resize"]
    params = [(v.type.quant.scales[0], v.type.quant.zero_points[0]) for v in cat.operands]
    ranges = [quant.represented_range(*p) for p in params]
    union = quant.activation_params(min(r[0] for r in ranges), max(r[1] for r in ranges))
    assert (cat.attrs["out_scale"], cat.attrs["out_zero_point"]) == union
    assert union in params and len(set(params)) == 2
    assert pool.result.type.quant == pool.operands[0].type.quant
    assert up.result.type.quant == cat.result.type.quant


def test_equal_inputs_concat_at_their_own_parameters():
    """Both branches calibrated alike: the qconcat keeps their parameters (a byte copy)."""
    graph = irc.import_onnx(pool_concat_resize_net(), {"x": (1, 3, 16, 16)})
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    ranges = {v.name: (-1.0, 2.0) for op in graph.ops for v in op.results}
    ranges.update({v.name: (-1.0, 2.0) for v in graph.inputs})
    ctx = PassContext(verify_each=True)
    ctx.analyses["calibration"] = ranges
    PassManager("quantize", ctx).run(graph)
    (cat,) = [op for op in graph.ops if op.kind == "qconcat"]
    want = quant.activation_params(-1.0, 2.0)
    assert (cat.attrs["out_scale"], cat.attrs["out_zero_point"]) == want
    assert {(v.type.quant.scales[0], v.type.quant.zero_points[0]) for v in cat.operands} == {want}


def test_bit_exact_against_the_reference_interpreter():
    model = compiled()
    for x in INPUTS:
        (got,) = model(x)
        (want,) = irc.run(model.graph, [x])
        np.testing.assert_array_equal(got, want)


def test_sqnr_against_the_float_model_holds():
    model = compiled()
    got = np.concatenate([model(x)[0] for x in INPUTS])
    assert sqnr_db(got, float_outputs()) >= FLOAT_GLUE_SQNR_DB - 0.5


def test_qdq_export_runs_in_onnxruntime(tmp_path):
    model = compiled()
    path = tmp_path / "glue.qdq.onnx"
    proto = model.export_onnx(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["MaxPool"] == ops["Concat"] == ops["Resize"] == 1
    assert_ort_agrees_within_a_step(model, path, INPUTS[:3])


def test_an_output_concat_keeps_each_inputs_scale():
    data = np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)
    inputs = np.random.default_rng(2).standard_normal((8, 1, 3, 8, 8)).astype(np.float32)
    model = irc.compile(detector_head_net(), precision="int8", calibration=data, num_threads=1,
                        progress=False)  # fmt: skip
    kinds = Counter(op.kind for op in model.graph.ops)
    assert kinds["qconcat"] == 0 and kinds["concat"] == 1 and kinds["qlut"] == 1
    assert dict(model.stats)["quantize"]["float-output-concat"] == 1
    session = ort.InferenceSession(detector_head_net().SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    want = np.concatenate([session.run(None, {"x": x})[0] for x in inputs])
    got = np.concatenate([model(x)[0] for x in inputs])
    assert sqnr_db(got[..., 4], want[..., 4]) >= 40.0  # the scores (0.0 dB as a qconcat)
    assert sqnr_db(got[..., :4], want[..., :4]) >= 35.0  # the boxes, as before
    for x in inputs[:2]:
        np.testing.assert_array_equal(model(x)[0], irc.run(model.graph, [x])[0])
