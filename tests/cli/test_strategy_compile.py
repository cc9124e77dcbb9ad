"""irc.compile(strategy=...) end to end on a small model: budgets are met by the model that
runs (its report, not a prediction), layers carry the decision's annotations, a budget that
cannot be met names itself, and the CLI writes the decision and inspects it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_cli
from image_folders import PRE, labelled_folder
from onnx_builders import small_convnet

import irc
from irc.decision import BudgetError, Budgets
from irc.decision import choose as choose_module
from irc.decision.choose import (
    LATENCY_TOLERANCE,
    RECHECK_RUNS,
    Verification,
    _missed,
    annotate,
    relax_advice,
)
from irc.precision import layer_name

DATA = np.random.default_rng(5).normal(size=(12, 3, 16, 16)).astype(np.float32)
LABELS = np.arange(12) % 10
STRATEGIES = ("uniform-int8", "quantune", "sals", "profile-score", "sigma", "auto")


def compile_with(strategy, budgets=None, **kw):
    return irc.compile(small_convnet(), calibration=DATA, strategy=strategy, budgets=budgets,
                       sensitivity_limit=8, num_threads=1, progress=False, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def auto_model():
    fp32 = irc.compile(small_convnet()).report().totals.fp32_bytes
    budget = Budgets(max_bytes=fp32 // 5)
    return compile_with("auto", budget), budget


def test_auto_meets_a_size_budget_with_the_model_that_runs(auto_model):
    model, budget = auto_model
    report = model.report()
    assert report.totals.bytes <= budget.max_bytes
    assert model.choice.verification.bytes == report.totals.bytes
    chosen = {row.name: row.precision for row in report.layers}
    assert chosen == model.choice.decision.plan  # the report shows the kernels that run
    assert any(p in ("int4", "int2") for p in chosen.values())


def test_layers_carry_the_decision(auto_model):
    model, _ = auto_model
    layers = [op for op in model.graph.ops if op.kind in ("qconv2d", "qgemm", "conv2d", "gemm")]
    assert len(layers) == 4
    for op in layers:
        assert op.attrs["note_precision"] == model.choice.decision.plan[layer_name(op)]
        assert op.attrs["note_measured_us"] > 0 and op.attrs["note_predicted_us"] > 0
        assert op.attrs["note_reason"]
    text = irc.print_graph(model.graph)
    assert "note_reason=" in text and irc.print_graph(irc.parse_graph(text)) == text


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_compiles_the_plan_it_reports(strategy):
    model = compile_with(strategy, labels=LABELS[:8])
    chosen = {row.name: row.precision for row in model.report().layers}
    assert chosen == model.choice.decision.plan
    if strategy == "uniform-int8":
        assert set(chosen.values()) == {"int8"}


def test_an_infeasible_size_budget_names_the_constraint():
    with pytest.raises(BudgetError, match="size"):
        compile_with("auto", Budgets(max_bytes=100))


def test_a_top1_budget_needs_labels():
    with pytest.raises(BudgetError, match="labelled data"):
        compile_with("auto", Budgets(max_drop=1.0))


def test_min_sqnr_is_verified_on_the_compiled_model():
    model = compile_with("auto", Budgets(min_sqnr=25.0))
    assert model.choice.verification.output_sqnr >= 25.0


def test_annotate_is_idempotent(auto_model):
    model, _ = auto_model
    before = irc.print_graph(model.graph)
    annotate(model.choice)
    after = irc.print_graph(model.graph)
    strip = [line.split(" {")[0] for line in before.splitlines()]
    assert strip == [line.split(" {")[0] for line in after.splitlines()]


def test_cli_compile_with_strategy_report_and_inspect(capsys, tmp_path):
    model_file = tmp_path / "small.onnx"
    model_file.write_bytes(small_convnet().SerializeToString())
    calib = tmp_path / "calib.npy"
    np.save(calib, DATA)
    out, report, table = tmp_path / "m.ircm", tmp_path / "r.json", tmp_path / "s.csv"
    code, stdout, stderr = run_cli(
        capsys, "compile", model_file, "--calib", calib, "--strategy", "auto", "--max-size",
        "1.6kB", "--sample", "8", "-o", out, "--report", report, "--sensitivity", table,
        "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    assert "strategy auto under size ≤ 1.6 kB" in stdout
    decision = json.loads(report.read_text())
    assert set(decision["plan"]) == {"stem", "depthwise", "pointwise", "fc"}
    assert decision["verification"]["bytes"] <= 1600
    assert table.read_text().startswith("layer,kind,params,macs,precision,")
    code, stdout, _ = run_cli(capsys, "inspect", out)
    assert code == 0
    header, _, *rows = stdout.splitlines()
    assert header.split()[:3] == ["layer", "precision", "out"]
    assert {r.split()[0] for r in rows[:4]} == {"stem", "depthwise", "pointwise", "fc"}
    code, _, stderr = run_cli(capsys, "compile", model_file, "--calib", calib, "--max-size",
                              "1kB", "-o", out)  # fmt: skip
    assert code == 2 and "--max-size needs --strategy" in stderr


def test_a_top1_budget_is_verified_on_labelled_samples():
    model = compile_with("auto", Budgets(max_drop=0.0), labels=LABELS[:8])
    v = model.choice.verification
    assert v.float_top1 is not None and v.drop <= 0.0
    assert any(p != "fp32" for p in model.choice.decision.plan.values())


@pytest.mark.parametrize("rounding", ["gptq", "best"])
def test_auto_with_gptq_rounding(capsys, tmp_path, rounding):
    model_file = tmp_path / "small.onnx"
    model_file.write_bytes(small_convnet().SerializeToString())
    calib = tmp_path / "calib.npy"
    np.save(calib, np.concatenate([DATA, DATA[::-1] * 0.5]))
    out = tmp_path / "m.ircm"
    code, stdout, stderr = run_cli(
        capsys, "compile", model_file, "--calib", calib, "--strategy", "auto", "--max-size",
        "1.6kB", "--sample", "8", "--rounding", rounding, "-o", out, "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    model = irc.load(out)
    assert model.report().totals.bytes <= 1600
    x = DATA[:1]
    assert np.array_equal(model(x)[0], irc.run(model.graph, [x])[0])


def test_a_strategy_compiles_with_the_weight_clipping_asked():
    fp32 = irc.compile(small_convnet()).report().totals.fp32_bytes
    budget = Budgets(max_bytes=fp32 // 5)  # needs 4-bit layers, where clipping matters
    x = DATA[:1]
    outputs = {}
    for clipping in ("mse", "minmax"):
        chosen = compile_with("sals", budget, weight_clipping=clipping, rounding="nearest")
        plan = {"default": "fp32", **chosen.choice.decision.plan}
        assert "int4" in plan.values() or "int2" in plan.values()
        direct = irc.compile(small_convnet(), precision=plan, calibration=DATA,
                             weight_clipping=clipping, progress=False)  # fmt: skip
        assert np.array_equal(chosen(x)[0], direct(x)[0])  # the same integer model
        outputs[clipping] = chosen(x)[0]
    assert not np.array_equal(outputs["mse"], outputs["minmax"])  # the option took effect


def test_a_latency_budget_is_predicted_in_context_and_verified():
    """With a latency ratio budget the cost model is scaled to the uniform builds measured
    whole, so it predicts uniform INT8 at the latency verification then measures for it."""
    model = compile_with("auto", Budgets(max_latency_ratio=3.0))
    choice = model.choice
    scale = choice.cost.extra["context_scale"]
    assert {"int8", "fp32"} <= set(scale) and all(k > 0 for k in scale.values())
    every = dict.fromkeys(choice.cost.layers, "int8")
    v = choice.verification
    assert v.int8_latency > 0 and v.latency <= 3.0 * v.int8_latency
    # the same build, measured twice by process CPU time: the prediction lands near it
    assert choice.cost.plan_latency(every) == pytest.approx(v.int8_latency, rel=0.5)


@pytest.mark.parametrize("over, missed", [(0.0, False), (0.015, False), (0.03, True)])
def test_a_latency_within_the_tolerance_meets_its_budget(over, missed):
    """A verified latency up to LATENCY_TOLERANCE above its limit counts as met (the
    run-to-run spread of the measurement), more than that is a miss naming the budget."""
    int8 = 0.004
    v = Verification(bytes=1000, latency=int8 * (1.0 + over), output_sqnr=30.0,
                     int8_latency=int8)  # fmt: skip
    assert LATENCY_TOLERANCE == 0.02
    phrases = _missed(Budgets(max_latency_ratio=1.0), v)
    assert bool(phrases) is missed
    assert all("latency" in p for p in phrases)


def test_a_budget_error_says_how_far_to_relax_each_missed_budget():
    """The advice names each budget the closest verified plan missed, at what it measured
    rounded up, and leaves out the budgets it met."""
    budgets = Budgets(max_bytes=2_000_000, max_latency_ratio=1.0, max_drop=0.5)
    far = Verification(bytes=3_000_000, latency=0.004, output_sqnr=20.0, top1=70.0,
                       float_top1=72.0, int8_latency=0.004)  # fmt: skip
    close = Verification(bytes=2_123_401, latency=0.0041, output_sqnr=20.0, top1=71.0,
                         float_top1=72.0, int8_latency=0.004)  # fmt: skip
    advice = relax_advice(budgets, [(None, far, ["size"]), (None, close, ["size"])])
    assert advice == (
        "relax size to 2.13 MB and latency to 1.03x INT8 and top-1 drop to 1 "
        "(what the closest verified plan measured)"
    )
    met = Verification(bytes=1, latency=0.001, output_sqnr=50.0, int8_latency=0.004)
    assert relax_advice(budgets, [(None, met, [])]) == "loosen that budget"


@pytest.mark.parametrize("near", [True, False])
def test_a_latency_near_its_budget_is_measured_again(monkeypatch, near):
    """A plan measured within NEAR_LIMIT of a latency budget is timed again over
    RECHECK_RUNS rounds, and the second measurement decides; one far from it is not."""
    calls = []

    def fake_latency(models, x, threads, runs=15):
        calls.append(runs)
        ratio = 1.03 if near and runs == 15 else 1.0 if near else 0.5
        return [0.004 * ratio if i == 0 else 0.004 for i in range(len(models))]

    monkeypatch.setattr(choose_module, "_interleaved_latency", fake_latency)
    model = compile_with("auto", Budgets(max_latency_ratio=1.0), stage_cache=False)
    verified = [runs for runs in calls if runs == RECHECK_RUNS]
    assert len(verified) == (1 if near else 0)
    assert model.choice.verification.latency == pytest.approx(0.004 if near else 0.002)


def test_the_cli_searches_on_held_out_images(tmp_path, capsys):
    folder = labelled_folder(tmp_path / "imgs", 16)
    model_file, out = tmp_path / "m.onnx", tmp_path / "m.ircm"
    model_file.write_bytes(small_convnet().SerializeToString())
    code, stdout, stderr = run_cli(
        capsys, "compile", model_file, "--calib", folder, "--preprocess", "torchvision",
        "--resize", PRE.resize, "--crop", PRE.crop, "--strategy", "search", "--max-size",
        "1.6kB", "--max-drop", "100", "--evaluations", "3", "--workers", "1", "--sample", "4",
        "--no-cache", "--no-progress", "-o", out,
    )  # fmt: skip
    assert code == 0, stderr
    assert "strategy search under" in stdout
    assert "(95%, 8 held-out images)" in stdout
    assert irc.load(out).report().totals.bytes <= 1600


def test_search_options_need_the_search_strategy(tmp_path, capsys):
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(small_convnet().SerializeToString())
    code, _, stderr = run_cli(capsys, "compile", model_file, "--calib", tmp_path,
                              "--strategy", "auto", "--evaluations", "5",
                              "-o", tmp_path / "m.ircm")  # fmt: skip
    assert code == 2 and "--evaluations needs --strategy search" in stderr
