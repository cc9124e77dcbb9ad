"""The stage cache of a strategy compile (``irc.decision.stage_cache``): a second compile
with the same inputs reuses every stage and gives the same model, any change of model, data
or option misses, corrupt files are ignored with a warning, no file holds a pickle; the
sensitivity table given as a file; a missed budget's partial results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_builders import small_convnet

import irc
import irc.decision.api as api
import irc.decision.choose as choose_module
from irc.calibration import calibrate
from irc.decision import BudgetError, Budgets
from irc.decision.stage_cache import (
    FORMAT,
    calibration_from_state,
    calibration_state,
    data_digest,
    statistics_from_state,
    statistics_state,
)
from irc.errors import InputError
from irc.gptq import InputMoments, InputStatistics
from irc.stages import float_graph

DATA = np.random.default_rng(5).normal(size=(12, 3, 16, 16)).astype(np.float32)
FP32_BYTES = irc.compile(small_convnet(), progress=False).report().totals.fp32_bytes


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder for the test (``$IRC_CACHE_DIR``), returned as its stages/."""
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stages"


@pytest.fixture
def calls(monkeypatch):
    """How often each long stage ran: calibrate, rounding statistics, sensitivity, choose."""
    counts = dict.fromkeys(("calibrate", "rounding_statistics", "analyze", "analyze_best",
                            "choose"), 0)  # fmt: skip
    for name in counts:
        original = getattr(api, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(api, name, counted)
    return counts


def compile_auto(model=None, data=DATA, **kw):
    settings = dict(strategy="auto", budgets=Budgets(max_bytes=FP32_BYTES // 5),
                    sensitivity_limit=8, num_threads=1, progress=True)  # fmt: skip
    settings.update(kw)
    return irc.compile(model or small_convnet(), calibration=data, **settings)


def test_the_second_compile_reuses_every_stage_and_gives_the_same_model(cache, calls, capsys):
    first = compile_auto(rounding="best")
    assert calls == {"calibrate": 1, "rounding_statistics": 1, "analyze": 0,
                     "analyze_best": 1, "choose": 1}  # fmt: skip
    assert not first.choice.reused
    capsys.readouterr()
    second = compile_auto(rounding="best")
    err = capsys.readouterr().err
    assert calls == {"calibrate": 1, "rounding_statistics": 1, "analyze": 0,
                     "analyze_best": 1, "choose": 1}  # fmt: skip
    for label in ("calibrate", "gptq statistics", "sensitivity", "plan"):
        assert f"{label}: reused from {cache}" in err
    assert "calibrate: reused" in err and "(12 img)" in err
    assert second.choice.reused and second.choice.summary()["reused"] is True
    assert second.choice.decision.plan == first.choice.decision.plan
    assert second.choice.verification == first.choice.verification
    for x in (DATA[:1], DATA[5:6]):
        assert np.array_equal(second(x)[0], first(x)[0])  # bit-identical
    assert second.report().totals.bytes == first.report().totals.bytes
    ops = [op for op in second.graph.ops if "note_precision" in op.attrs]
    assert len(ops) == 4  # the reused choice annotates its layers too


@pytest.mark.parametrize(
    "change",
    ["data", "method", "clipping", "model", "budget", "sample"],
)
def test_a_change_of_input_misses(cache, calls, change):
    compile_auto()
    changed = {
        "data": dict(data=DATA * 1.01),
        "method": dict(calibration_method="percentile"),
        "clipping": dict(weight_clipping="minmax"),
        "model": dict(model=small_convnet(seed=1)),
        "budget": dict(budgets=Budgets(max_bytes=FP32_BYTES // 4)),
        "sample": dict(sensitivity_limit=6),
    }[change]
    compile_auto(**changed)
    recalibrated = change in ("data", "method", "model")
    assert calls["calibrate"] == (2 if recalibrated else 1)
    assert calls["analyze_best"] == (1 if change == "budget" else 2)  # the default rounding
    assert calls["choose"] == 2


def test_stage_cache_off_writes_and_reads_nothing(cache, calls):
    compile_auto(stage_cache=False)
    compile_auto(stage_cache=False)
    assert calls["calibrate"] == 2 and calls["choose"] == 2
    assert not cache.exists()


def test_a_folder_given_as_the_stage_cache(tmp_path, cache, calls):
    folder = tmp_path / "elsewhere"
    compile_auto(stage_cache=folder)
    compile_auto(stage_cache=folder)
    assert calls["calibrate"] == 1 and calls["choose"] == 1
    assert any(folder.glob("choice-*.json")) and not cache.exists()


@pytest.mark.parametrize("stage", ["calibration", "sensitivity", "choice"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "other key"])
def test_a_corrupt_cache_file_is_ignored_with_a_warning(cache, calls, capsys, stage, damage):
    first = compile_auto()
    (path,) = cache.glob(f"{stage}-*.json")
    if damage == "garbage":
        for p in cache.glob(f"{stage}-*"):
            p.write_bytes(b"\x00\x01 not a cache file")
    elif damage == "truncated":
        npz = path.with_suffix(".npz")
        target = npz if npz.exists() else path
        target.write_bytes(target.read_bytes()[:40])
    else:
        entry = json.loads(path.read_text())
        entry["key"] = "0" * 24
        path.write_text(json.dumps(entry))
    capsys.readouterr()
    second = compile_auto()
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning: stage cache" in line]
    assert len(warnings) == 1 and f"corrupt {stage} cache" in warnings[0]
    assert "Traceback" not in err
    assert calls["calibrate"] == (2 if stage == "calibration" else 1)
    assert calls["choose"] == (1 if stage == "calibration" else 2)  # a plan on equal ranges
    assert second.choice.decision.plan == first.choice.decision.plan
    assert np.array_equal(second(DATA[:1])[0], first(DATA[:1])[0])
    third = compile_auto()  # the stage was written again
    assert third.choice.reused


def test_cache_files_hold_no_pickle(cache):
    compile_auto(rounding="gptq")
    files = sorted(cache.iterdir())
    npz = [p for p in files if p.suffix == ".npz"]
    assert {p.name.split("-")[0] for p in npz} == {"calibration", "statistics", "choice"}
    for path in npz:
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                assert data[name].dtype != object
    for path in files:
        if path.suffix == ".json":
            assert json.loads(path.read_text())["format"] == FORMAT
    assert all(p.suffix in (".json", ".npz") for p in files)


def test_calibration_state_round_trips_ranges_means_and_histograms():
    graph = float_graph(small_convnet())
    original = calibrate(graph, DATA, "percentile", progress=False)
    facts, arrays = calibration_state(original)
    json.dumps(facts)
    back = calibration_from_state(json.loads(json.dumps(facts)), arrays)
    assert dict(back.ranges) == dict(original.ranges)
    assert back.count == 12 and back.method == "percentile"
    for name in original.ranges:
        a, b = original.channel_mean(name), back.channel_mean(name)
        assert (a is None and b is None) or np.array_equal(a, b)
    assert dict(back.recompute("mse").ranges) == dict(original.recompute("mse").ranges)


def test_statistics_state_round_trips_every_field():
    rng = np.random.default_rng(0)

    def m():
        return InputMoments(rng.normal(size=(1, 4)), 7, rng.normal(size=(1, 4)))

    def h():
        return rng.normal(size=(1, 4, 4))

    full = InputStatistics(h(), (h(), h()), h(), (h(), h()), m(), (m(), m()))
    bare = InputStatistics(h())
    facts, arrays = statistics_state({"a": full, "b": bare})
    back = statistics_from_state(json.loads(json.dumps(facts)), arrays)
    assert back["b"].halves is None and back["b"].moments is None
    a = back["a"]
    assert np.array_equal(a.hessian, full.hessian) and np.array_equal(a.spatial, full.spatial)
    assert all(np.array_equal(x, y) for x, y in zip(a.spatial_halves, full.spatial_halves))
    assert a.half_moments[1].positions == 7
    assert np.array_equal(a.centered().hessian, full.centered().hessian)


def test_a_folder_is_keyed_by_the_files_used(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"x" * (i + 1))
    key = data_digest(str(folder), "torchvision", None)
    assert key == data_digest(str(folder), "torchvision", None)
    assert key != data_digest(str(folder), "imagenet", None)
    assert key != data_digest(str(folder), "torchvision", 2)
    limited = data_digest(str(folder), "torchvision", 2)
    (folder / "2.png").write_bytes(b"changed")  # not among the first two
    assert data_digest(str(folder), "torchvision", 2) == limited
    assert data_digest(str(folder), "torchvision", None) != key
    assert data_digest(iter([DATA]), None, None) is None


def test_a_sensitivity_table_file_is_reused_or_written(tmp_path, cache, calls, capsys):
    path = tmp_path / "table.json"
    first = compile_auto(stage_cache=False, sensitivity_table=str(path))
    assert path.is_file() and calls["analyze_best"] == 1
    capsys.readouterr()
    second = compile_auto(stage_cache=False, sensitivity_table=str(path))
    assert calls["analyze_best"] == 1
    assert f"sensitivity: reused from {path}" in capsys.readouterr().err
    assert second.choice.decision.plan == first.choice.decision.plan


def test_a_csv_sensitivity_table_is_reused(tmp_path, cache, calls):
    path = tmp_path / "table.csv"
    first = compile_auto(stage_cache=False, sensitivity_table=str(path))
    second = compile_auto(stage_cache=False, sensitivity_table=str(path))
    assert calls["analyze_best"] == 1
    assert second.choice.decision.plan == first.choice.decision.plan
    a, b = first.choice.table, second.choice.table
    assert np.array_equal(a.metrics["output_nsr"], b.metrics["output_nsr"])


def test_a_table_of_another_model_is_an_input_error(tmp_path, cache):
    path = tmp_path / "table.json"
    compile_auto(stage_cache=False, sensitivity_table=str(path))
    table = json.loads(path.read_text())
    table["layers"][2]["weight_shape"] = [16, 8, 1, 1]
    path.write_text(json.dumps(table))
    with pytest.raises(InputError, match="table.json' is the table of another model") as e:
        compile_auto(sensitivity_table=str(path))
    assert "'pointwise'" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_a_missed_budget_carries_what_was_reached(cache, monkeypatch):
    monkeypatch.setattr(choose_module, "_missed", lambda budgets, v: ["size ≤ 0 MB (forced)"])
    with pytest.raises(BudgetError, match="not met after 4 verified tries") as e:
        compile_auto()
    partial = e.value.partial
    assert len(partial.attempts) == 4 and partial.calibration is not None
    decision, verification, _ = partial.best
    assert verification.bytes == min(v.bytes for _, v, _ in partial.attempts)
    plan = partial.best_plan()
    assert plan == {"default": "fp32", **decision.plan}
    report = partial.to_dict()
    assert report["met"] is False and report["best"]["met"] is False
    assert len(report["attempts"]) == 4 and report["sensitivity"]["layers"]
    json.dumps(report)
    assert any(cache.glob("sensitivity-*.json"))  # the table was kept
    model = irc.compile(small_convnet(), precision=plan, calibration=partial.calibration,
                        progress=False)  # fmt: skip
    assert model.report().totals.bytes == verification.bytes
