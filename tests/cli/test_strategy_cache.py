"""``irc compile --strategy`` keeps its results: a second run reuses the stage cache (and
``--no-cache`` turns it off), ``--sensitivity FILE`` is reused when it holds this model's
table, and a budget that cannot be met still writes the report and the best plan, which
``--precision`` then compiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_cli
from onnx_builders import small_convnet

import irc
import irc.decision.api as api
import irc.decision.choose as choose_module

DATA = np.random.default_rng(5).normal(size=(12, 3, 16, 16)).astype(np.float32)


@pytest.fixture
def files(tmp_path, monkeypatch):
    """The model and calibration files, and a fresh ``$IRC_CACHE_DIR``."""
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "small.onnx"
    model.write_bytes(small_convnet().SerializeToString())
    calib = tmp_path / "calib.npy"
    np.save(calib, DATA)
    return tmp_path, model, calib


@pytest.fixture
def measured(monkeypatch):
    """How many sensitivity tables were measured."""
    count = {"tables": 0}
    original = api.measure_table

    def counted(*args, **kwargs):
        count["tables"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "measure_table", counted)
    return count


def compile_cli(capsys, files, *extra, out="m.ircm"):
    tmp, model, calib = files
    return run_cli(capsys, "compile", model, "--calib", calib, "--strategy", "auto",
                   "--max-size", "1.6kB", "--sample", "8", "--threads", "1",
                   "-o", tmp / out, *extra)  # fmt: skip


def test_a_second_run_reuses_the_stages_and_writes_the_same_model(capsys, files, measured):
    tmp = files[0]
    code, _, err = compile_cli(capsys, files, "--report", tmp / "r1.json", out="m1.ircm")
    assert code == 0, err
    assert "reused" not in err and measured["tables"] == 1
    code, stdout, err = compile_cli(capsys, files, "--report", tmp / "r2.json", out="m2.ircm")
    assert code == 0, err
    assert measured["tables"] == 1
    for label in ("calibrate", "sensitivity", "plan"):
        assert f"{label}: reused from {tmp / 'cache' / 'stages'}" in err
    first, second = (json.loads((tmp / f"r{i}.json").read_text()) for i in (1, 2))
    assert first["plan"] == second["plan"] and second["reused"] and not first["reused"]
    assert first["verification"] == second["verification"]
    a, b = irc.load(tmp / "m1.ircm"), irc.load(tmp / "m2.ircm")
    assert np.array_equal(a(DATA[:1])[0], b(DATA[:1])[0])
    assert irc.load(tmp / "m2.ircm").metadata["decision"]["reused"] is True


def test_no_cache_neither_reads_nor_writes(capsys, files, measured):
    for _ in range(2):
        code, _, err = compile_cli(capsys, files, "--no-cache")
        assert code == 0, err
        assert "reused" not in err
    assert measured["tables"] == 2
    assert not (files[0] / "cache" / "stages").exists()


def test_no_progress_hides_the_reused_lines(capsys, files):
    compile_cli(capsys, files, "--no-progress")
    code, _, err = compile_cli(capsys, files, "--no-progress")
    assert code == 0 and err == ""


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_sensitivity_file_is_written_then_reused(capsys, files, measured, suffix):
    table = files[0] / f"s{suffix}"
    code, _, err = compile_cli(capsys, files, "--no-cache", "--sensitivity", table)
    assert code == 0, err
    assert table.is_file() and measured["tables"] == 1
    code, stdout, err = compile_cli(capsys, files, "--no-cache", "--sensitivity", table)
    assert code == 0, err
    assert measured["tables"] == 1
    assert f"sensitivity: reused from {table} (4 layers)" in err


def test_a_sensitivity_file_of_another_model_is_a_one_line_error(capsys, files):
    table = files[0] / "s.json"
    compile_cli(capsys, files, "--no-cache", "--sensitivity", table)
    data = json.loads(table.read_text())
    data["layers"][0]["name"] = "other_stem"
    table.write_text(json.dumps(data))
    code, _, err = compile_cli(capsys, files, "--sensitivity", table, "--no-progress")
    assert code == 2
    (line,) = err.splitlines()
    assert f"'{table}' is the table of another model" in line
    assert "'other_stem'" in line and "'stem'" in line


def test_a_missed_budget_writes_the_report_and_the_best_plan(capsys, files, monkeypatch):
    tmp, model, calib = files
    monkeypatch.setattr(choose_module, "_missed", lambda budgets, v: ["size ≤ 0 MB (forced)"])
    report, table = tmp / "r.json", tmp / "s.json"
    code, stdout, err = compile_cli(capsys, files, "--report", report, "--sensitivity", table,
                                    "--no-progress")  # fmt: skip
    assert code == 2
    (line,) = err.splitlines()
    best = tmp / "m.best-plan.json"
    assert "not met after 4 verified tries" in line
    assert f"the best plan reached is in {best} (measured " in line
    assert f"the report in {report}" in line
    assert not (tmp / "m.ircm").exists()
    written = json.loads(report.read_text())
    assert written["met"] is False and len(written["attempts"]) == 4
    assert written["best"]["met"] is False and written["best"]["missed"]
    assert written["sensitivity"]["layers"] and table.is_file()
    plan = json.loads(best.read_text())
    assert plan == {"default": "fp32", **written["best"]["plan"]}
    monkeypatch.undo()
    code, stdout, err = run_cli(capsys, "compile", model, "--calib", calib, "--precision", best,
                                "-o", tmp / "best.ircm", "--no-progress")  # fmt: skip
    assert code == 0, err
    compiled = irc.load(tmp / "best.ircm")
    assert compiled.report().totals.bytes == written["best"]["verification"]["bytes"]


def test_an_infeasible_budget_still_writes_the_report(capsys, files):
    report = files[0] / "r.json"
    tmp, model, calib = files
    code, _, err = run_cli(capsys, "compile", model, "--calib", calib, "--strategy", "auto",
                           "--max-size", "100", "--sample", "8", "-o", tmp / "m.ircm",
                           "--report", report, "--no-progress")  # fmt: skip
    assert code == 2
    (line,) = err.splitlines()
    assert "size" in line and f"no plan was verified, the report in {report}" in line
    written = json.loads(report.read_text())
    assert written["attempts"] == [] and written["best"] is None


def test_a_cached_table_is_still_written_to_the_sensitivity_file(capsys, files, measured):
    compile_cli(capsys, files, "--no-progress")
    table = files[0] / "s.csv"
    code, _, err = compile_cli(capsys, files, "--sensitivity", table)
    assert code == 0, err
    assert "sensitivity: reused from" in err and measured["tables"] == 1
    assert table.read_text().startswith("layer,kind,params,macs,precision,")
