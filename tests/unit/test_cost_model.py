"""The cost model on a small model. Bytes are checked against the reports of the whole
model compiled at one precision for every layer (the layers' bytes plus ``other_bytes``
must be its stored bytes); latencies are checked for sanity, the disk cache for reuse
and robustness, and the roofline path for what it computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_builders import tiny_cnn

import irc
from irc.build import kernel_isa
from irc.decision import costs_measure
from irc.decision.choose import scaled_to
from irc.decision.costs_measure import (
    DEFAULT_BANDWIDTH,
    DEFAULT_RATES,
    build_cost_model,
    layer_signature,
    roofline,
)
from irc.errors import InputError
from irc.pass_manager import PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import PRECISIONS, layer_name, layers
from irc.report import model_report
from irc.support import allowed_precisions, quantizable_layers

DATA = np.random.default_rng(3).normal(size=(10, 3, 8, 8)).astype(np.float32)
FAST = {"runs": 3, "progress": False}


def _float_graph():
    graph = irc.import_onnx(tiny_cnn())
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    return graph


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    graph = _float_graph()
    calibration = irc.calibrate(graph, DATA, progress=False)
    cache = tmp_path_factory.mktemp("costs")
    return graph, calibration, cache, build_cost_model(graph, calibration, cache_dir=cache, **FAST)


def _boom(*args, **kwargs):
    raise AssertionError("measured although the cache holds the entry")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int4", "int2"])
def test_bytes_add_up_to_the_whole_model_report(setup, precision):
    _, _, _, costs = setup
    model = irc.compile(tiny_cnn(), precision=precision, calibration=DATA, progress=False)
    report = model.report()
    plan = {name: precision for name in costs.layers}
    assert costs.plan_bytes(plan) == report.totals.bytes
    assert costs.other_bytes == report.totals.other_bytes
    j = costs.column(precision)
    for i, row in enumerate(report.layers):
        assert row.name == costs.layers[i] and row.precision == precision
        assert costs.bytes[i, j] == row.bytes
        assert costs.bytes[i, costs.column("fp32")] == row.fp32_bytes
    assert (
        report.kernels
        == model.kernel_isa
        in ("avx512-vnni", "avx512", "avx-vnni", "avx2", "portable")
    )
    assert f"integer kernels: {model.kernel_isa}" in str(report)
    assert report.to_dict()["kernels"] == model.kernel_isa
    # output shapes in the model's order whatever layout the integer layers run in
    fp32 = irc.compile(tiny_cnn(), precision="fp32", progress=False).report()
    assert [row.shape for row in report.layers] == [row.shape for row in fp32.layers]


def test_fp32_bytes_are_params_and_bias_at_four_bytes(setup):
    graph, _, _, costs = setup
    for i, op in enumerate(quantizable_layers(graph)):
        elements = sum(int(np.prod(v.type.shape)) for v in op.operands[1:])
        assert costs.bytes[i, costs.column("fp32")] == 4 * elements
    assert (np.diff(costs.bytes[:, costs.column("int8") :], axis=1) < 0).all()


def test_every_precision_allowed_and_measured(setup):
    graph, _, cache, costs = setup
    assert costs.layers == ["conv", "fc"]
    assert costs.precisions == ("fp32", "fp16", "int8", "int4", "int2")
    assert costs.allowed.all() and costs.measured.all()
    assert np.isfinite(costs.latency).all() and (costs.latency > 0).all()
    assert np.isfinite(costs.transition).all() and (costs.transition > 0).all()
    assert 0 < costs.other_latency < 1.0
    assert "thread" in costs.machine
    (path,) = cache.glob("costs-*.json")
    data = json.loads(path.read_text())
    assert data["machine"]["threads"] == 1
    assert data["machine"]["kernels"] == kernel_isa()  # costs of one path are not another's
    assert len(data["layers"]) == 2 * 5 and len(data["models"]) == 1
    op = quantizable_layers(graph)[0]
    entry = data["layers"][layer_signature(op, "int8")]
    assert entry["allowed"] and entry["seconds"] > 0 and entry["quantize"] > 0


def test_second_build_reuses_the_cache(setup, monkeypatch):
    graph, calibration, cache, costs = setup
    monkeypatch.setattr(costs_measure, "_measure_layer", _boom)
    monkeypatch.setattr(costs_measure, "_measure_other", _boom)
    again = build_cost_model(graph, calibration, cache_dir=cache, **FAST)
    for name in ("latency", "bytes", "allowed", "measured", "transition"):
        assert np.array_equal(getattr(again, name), getattr(costs, name)), name
    assert again.other_latency == costs.other_latency


def test_signature_depends_on_shape_and_precision(setup):
    graph, _, _, _ = setup
    conv, fc = quantizable_layers(graph)
    assert layer_signature(conv, "int8") != layer_signature(conv, "int4")
    assert layer_signature(conv, "int8") != layer_signature(fc, "int8")
    assert json.loads(layer_signature(conv, "int8"))["input"] == [1, 3, 8, 8]


def test_corrupt_cache_is_ignored_with_a_warning(setup, tmp_path):
    graph, calibration, _, _ = setup
    build_cost_model(graph, calibration, precisions=("fp32",), cache_dir=tmp_path, **FAST)
    (path,) = tmp_path.glob("costs-*.json")
    path.write_text('{"version": 1, "layers": [')
    with pytest.warns(UserWarning, match="unreadable cost cache"):
        costs = build_cost_model(graph, calibration, precisions=("fp32",),
                                 cache_dir=tmp_path, **FAST)  # fmt: skip
    assert costs.measured.all()
    assert len(json.loads(path.read_text())["layers"]) == 2  # rewritten whole


def test_invalid_cache_entries_are_dropped_and_measured_again(setup, tmp_path):
    graph, calibration, _, _ = setup
    build_cost_model(graph, calibration, precisions=("fp32",), cache_dir=tmp_path, **FAST)
    (path,) = tmp_path.glob("costs-*.json")
    data = json.loads(path.read_text())
    conv_key = layer_signature(quantizable_layers(graph)[0], "fp32")
    data["layers"][conv_key]["seconds"] = "fast"
    path.write_text(json.dumps(data))
    costs = build_cost_model(graph, calibration, precisions=("fp32",), cache_dir=tmp_path, **FAST)
    assert costs.measured.all() and costs.extra["measured_now"] == 1
    assert json.loads(path.read_text())["layers"][conv_key]["seconds"] > 0


def test_missing_calibration_is_named(setup, tmp_path):
    graph, calibration, _, _ = setup
    partial = {k: v for k, v in calibration.items() if k != "act"}
    with pytest.raises(InputError, match="act"):
        build_cost_model(graph, partial, cache_dir=tmp_path, **FAST)
    costs = build_cost_model(graph, partial, precisions=("fp32", "fp16"), measure=False,
                             cache_dir=tmp_path, **FAST)  # fmt: skip
    assert costs.allowed.all()


def test_measure_false_gives_the_roofline(setup, tmp_path, monkeypatch):
    graph, calibration, _, _ = setup
    monkeypatch.setattr(costs_measure, "_measure_layer", _boom)
    monkeypatch.setattr(costs_measure, "_measure_other", _boom)
    costs = build_cost_model(graph, calibration, measure=False, cache_dir=tmp_path, **FAST)
    assert not costs.measured.any() and costs.allowed.all()
    conv = quantizable_layers(graph)[0]  # 4 outputs × 8 × 8 positions × 27 products
    j = costs.column("int8")
    touched = (3 * 8 * 8 + 4 * 8 * 8) + costs.bytes[0, j]
    want = roofline(4 * 8 * 8 * 27, touched, DEFAULT_RATES["int8", "conv"], DEFAULT_BANDWIDTH)
    assert costs.latency[0, j] == pytest.approx(want)
    assert conv.kind == "conv2d" and costs.other_latency > 0
    assert (costs.latency > 0).all() and (costs.transition > 0).all()
    assert not list(tmp_path.glob("costs-*.json"))  # nothing measured, nothing written


def test_layer_without_integer_form_is_not_allowed(setup, tmp_path):
    graph, calibration, _, _ = setup
    graph = graph.clone()
    conv = layers(graph)[0]
    conv.attrs["activation"] = "hard_swish"
    costs = build_cost_model(graph, calibration, measure=False, cache_dir=tmp_path,
                             layer_ops=layers(graph), **FAST)  # fmt: skip
    assert costs.allowed[0].tolist() == [True, True, False, False, False]
    assert costs.allowed[1].all()
    fp32 = costs.column("fp32")
    assert (costs.bytes[0, 2:] == costs.bytes[0, fp32]).all()
    assert (costs.latency[0, 2:] == costs.latency[0, fp32]).all()


def test_a_precision_the_support_table_refuses_is_never_compiled(setup, tmp_path, monkeypatch):
    graph, calibration, _, _ = setup
    measure, compiled = costs_measure._measure_layer, []

    def recorded(cut, *args):
        compiled.append({v.type.dtype.short for op in cut.ops for v in op.results})
        return measure(cut, *args)

    def no_int2(op, precision):
        return "no int2 here" if precision == "int2" else None

    monkeypatch.setattr(costs_measure, "_measure_layer", recorded)
    monkeypatch.setattr(costs_measure, "precision_problem", no_int2)
    kinds = ("fp32", "int2")
    costs = build_cost_model(graph, calibration, precisions=kinds, cache_dir=tmp_path, **FAST)
    assert costs.allowed[:, 1].tolist() == [False, False]
    assert compiled and not any("i2" in dtypes for dtypes in compiled)
    assert (costs.latency[:, 1] == costs.latency[:, 0]).all()


def test_the_support_table_admits_what_the_quantize_pass_makes():
    """Every layer of a model at every precision the table allows compiles at it: the
    report shows that precision (the cost model's other tests run those kernels)."""
    graph = _float_graph()
    calibration = irc.calibrate(graph, DATA, progress=False)
    for op in layers(graph):
        assert allowed_precisions(op) == PRECISIONS
        for p in PRECISIONS:
            cut = costs_measure.quantized_layer_graph(graph, op, p, calibration, 1, "minmax")
            (row,) = [r for r in model_report(cut).layers if r.name == layer_name(op)]
            assert row.precision == p


def test_plan_latency_and_plan_bytes(setup):
    _, _, _, costs = setup
    lat, tr, col = costs.latency, costs.transition, costs.column
    assert costs.plan_latency({}) == pytest.approx(costs.other_latency + lat[:, 0].sum())
    assert costs.plan_bytes({}) == costs.other_bytes + costs.bytes[:, 0].sum()
    mixed = {"conv": "int8"}  # an integer layer between float input and float fc
    want = costs.other_latency + lat[0, col("int8")] + lat[1, 0] + tr[0, 0] + tr[0, 1]
    assert costs.plan_latency(mixed) == pytest.approx(want)
    both = {"conv": "int8", "fc": "int4"}  # one run of integers: quantize once, dequantize once
    want = costs.other_latency + lat[0, col("int8")] + lat[1, col("int4")] + tr[0, 0] + tr[1, 1]
    assert costs.plan_latency(both) == pytest.approx(want)
    assert costs.plan_bytes(both) == (costs.other_bytes + costs.bytes[0, col("int8")]
                                      + costs.bytes[1, col("int4")])  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"runs": 0}, "runs"),
        ({"precisions": ("int8",)}, "fp32"),
        ({"precisions": ("fp32", "int3")}, "int3"),
        ({"weights": "max"}, "weights"),
        ({"num_threads": 0}, "num_threads"),
        ({"layer_ops": []}, "no layer"),
    ],
)
def test_bad_arguments_are_named(setup, tmp_path, kwargs, match):
    graph, calibration, _, _ = setup
    with pytest.raises(InputError, match=match):
        build_cost_model(graph, calibration, cache_dir=tmp_path, progress=False, **kwargs)


def test_scaled_to_predicts_the_uniform_models_as_measured(setup):
    """The in-context cost model predicts each measured uniform model at its measured
    seconds, and a mixed plan from the same per-precision factors (transitions and the rest
    by INT8's, each layer by its precision's)."""
    *_, cost = setup
    every = cost.layers
    uniform = {p: dict.fromkeys(every, p) for p in ("int8", "int4", "fp32")}
    factors = {"int8": 2.0, "int4": 2.5, "fp32": 3.0}
    measured = {p: factors[p] * cost.plan_latency(uniform[p]) for p in uniform}
    scaled = scaled_to(cost, measured)
    for p in uniform:
        assert scaled.plan_latency(uniform[p]) == pytest.approx(measured[p])
    k = scaled.extra["context_scale"]
    assert k["int8"] == pytest.approx(2.0)
    mixed = {every[0]: "fp32", **{name: "int4" for name in every[1:]}}
    want = (
        k["int8"] * cost.other_latency
        + k["fp32"] * cost.latency[0, cost.column("fp32")]
        + k["int4"] * sum(cost.latency[i, cost.column("int4")] for i in range(1, len(every)))
        + k["int8"] * cost.transition[1, 0]  # the int4 layer after the float one
        + k["int8"] * cost.transition[-1, 1]  # the last layer's output
    )
    assert scaled.plan_latency(mixed) == pytest.approx(want)
    int2 = dict.fromkeys(every, "int2")  # not measured: scaled as INT8
    assert scaled.plan_latency(int2) == pytest.approx(2.0 * cost.plan_latency(int2))
    assert cost.extra.get("context_scale") is None  # the measured model is left as it was
