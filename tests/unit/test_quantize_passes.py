"""The quantize pipeline on a small model: plans, levels L1 = L2 = L3 in the reference
interpreter, fp16 storage, what stays float, and the errors a user meets."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import tiny_cnn

import irc
from irc.interpreter import run_graph
from irc.pass_manager import PassContext, PassFailure, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import PlanError, PrecisionPlan, layer_name, layers

INPUTS = [np.random.default_rng(i).normal(size=(2, 3, 8, 8)).astype(np.float32) for i in range(4)]


def float_graph():
    graph = irc.import_onnx(tiny_cnn(), {"x": (2, 3, 8, 8)})
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    return graph


def ranges_of(graph):
    """min/max of every float value over INPUTS (a stand-in for irc.calibration)."""
    ranges = {"x": (min(float(x.min()) for x in INPUTS), max(float(x.max()) for x in INPUTS))}

    def observe(op, args, results):
        for value, array in zip(op.results, results):
            if array.dtype.kind == "f":
                lo, hi = ranges.get(value.name, (np.inf, -np.inf))
                ranges[value.name] = (min(lo, float(array.min())), max(hi, float(array.max())))

    for x in INPUTS:
        run_graph(graph, [x], [observe])
    return ranges


def run_stage(graph, pipeline, ranges, plan=None):
    ctx = PassContext(verify_each=True)
    ctx.analyses["calibration"] = ranges
    if plan is not None:
        ctx.analyses["precision_plan"] = plan
    PassManager(pipeline, ctx).run(graph)
    return dict(ctx.statistics)


@pytest.mark.parametrize("precision", ["int8", "int4", "int2"])
def test_levels_l1_l2_l3_give_identical_outputs(precision):
    graph = float_graph()
    ranges = ranges_of(graph)
    want = run_graph(graph, [INPUTS[0]])[0]
    stats = run_stage(graph, f"quantize{{precision={precision}}}", ranges)
    assert stats["quantize"][precision] == 2 and stats["quantize"]["glue"] == 2
    kinds = [op.kind for op in graph.ops]
    assert "qconv2d" in kinds and "qgemm" in kinds and "qglobal_avg_pool" in kinds
    assert "conv2d" not in kinds and "gemm" not in kinds
    outputs = [run_graph(graph, [INPUTS[0]])[0]]
    run_stage(graph, "lower-quantized", ranges)
    outputs.append(run_graph(graph, [INPUTS[0]])[0])
    stats = run_stage(graph, "pack-weights", ranges)
    assert stats["pack-weights"]["packed"] == (0 if precision == "int8" else 2)
    outputs.append(run_graph(graph, [INPUTS[0]])[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])
    assert outputs[0].dtype == np.float32 and outputs[0].shape == want.shape
    if precision == "int8":  # close to float; the output scale bounds the error
        assert np.abs(outputs[0] - want).max() < 0.1 * np.abs(want).max()


def test_l3_text_round_trip_runs_identically():
    graph = float_graph()
    ranges = ranges_of(graph)
    run_stage(graph, "quantize{precision=int4},lower-quantized,pack-weights", ranges)
    text = irc.print_graph(graph, full=True)
    reparsed = irc.parse_graph(text)
    assert irc.print_graph(reparsed, full=True) == text
    np.testing.assert_array_equal(
        run_graph(reparsed, [INPUTS[1]])[0], run_graph(graph, [INPUTS[1]])[0]
    )


def test_plan_per_layer_and_fp16_storage():
    graph = float_graph()
    names = [layer_name(op) for op in layers(graph)]
    plan = PrecisionPlan("int8", {names[0]: "fp16"})
    stats = run_stage(graph, "quantize", ranges_of(graph), plan)["quantize"]
    assert stats["fp16"] == 1 and stats["int8"] == 1
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    cast = conv.operands[1].producer
    assert cast.kind == "cast" and cast.operands[0].type.dtype.short == "f16"
    assert any(op.kind == "qgemm" for op in graph.ops)
    assert any(op.kind == "quantize" for op in graph.ops)  # the float conv feeds int8 ops


def test_unknown_plan_entry_and_precision_are_named():
    graph = float_graph()
    with pytest.raises(PassFailure, match="unknown layer"):
        run_stage(graph, "quantize", {}, PrecisionPlan("int8", {"no_such_layer": "int4"}))
    with pytest.raises(PlanError, match="int3"):
        PrecisionPlan("int3")


def test_missing_calibration_is_a_clear_error():
    graph = float_graph()
    with pytest.raises(PassFailure, match="calibrat"):
        PassManager("quantize{precision=int8}").run(graph)


def test_hard_swish_layer_stays_float():
    graph = float_graph()
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    conv.attrs["activation"] = "hard_swish"
    stats = run_stage(graph, "quantize{precision=int8}", ranges_of(graph))["quantize"]
    assert stats["kept-float"] == 1 and stats["int8"] == 1


def test_nan_weight_error_names_the_layer():
    graph = float_graph()
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    weight = conv.operands[1].producer
    bad = weight.attrs["value"].copy()
    bad[0, 0, 0, 0] = np.nan
    weight.attrs["value"] = bad
    with pytest.raises(PassFailure, match=r"layer .*conv.*NaN"):
        run_stage(graph, "quantize{precision=int8}", ranges_of(graph))
