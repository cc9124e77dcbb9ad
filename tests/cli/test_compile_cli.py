"""`irc compile`, `irc run` on a compiled model file, and `irc report`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_cli
from test_cli import assert_one_line_error

import irc
from irc.serialize import FORMAT_VERSION, is_model_file


@pytest.fixture
def x_file(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32))
    return path


def _compile(capsys, model_file, out, *options):
    code, stdout, err = run_cli(capsys, "compile", model_file, *options, "-o", out)
    assert code == 0, err
    assert is_model_file(out)
    return stdout


def _run(capsys, source, x_file, out, *options):
    code, _, err = run_cli(capsys, "run", source, "--input", x_file, "-o", out, *options)
    assert code == 0, err
    return np.load(out)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_compile_then_run_the_saved_file(capsys, tmp_path, model_file, x_file, precision):
    out = tmp_path / f"tiny_{precision}.ircm"
    stdout = _compile(capsys, model_file, out, "--precision", precision)
    lines = stdout.splitlines()
    assert lines[0].split()[:4] == ["layer", "op", "output", "precision"]
    assert lines[2].split()[:4] == ["conv", "conv2d", "[1,4,8,8]", precision]
    assert any(line.startswith("size ") and "vs FP32 548 B" in line for line in lines)
    assert lines[-2].startswith("compiled in ") and lines[-1].startswith(f"wrote {out} (")
    got = _run(capsys, out, x_file, tmp_path / "got.npy", "--threads", "1")
    want = _run(capsys, model_file, x_file, tmp_path / "want.npy")  # the reference interpreter
    np.testing.assert_array_equal(got, irc.load(out, warmup=False)(np.load(x_file))[0])
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    code, summary, _ = run_cli(capsys, "run", out, "--input", x_file)
    assert code == 0 and summary.startswith("y: float32[1, 5] min=")


def test_precision_plan_file_and_report(capsys, tmp_path, model_file):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"default": "fp32", "conv": "fp16"}))
    out = tmp_path / "mixed.ircm"
    _compile(capsys, model_file, out, "--precision", plan)
    code, stdout, _ = run_cli(capsys, "report", out)
    assert code == 0
    head, table = stdout.split("\n\n", 1)
    version = f"(format {FORMAT_VERSION}, irc {irc.__version__}"
    assert head.startswith(f"{out}: irc compiled model {version}")
    assert "inputs  x: f32[1,3,8,8]" in head and "outputs y: f32[1,5]" in head
    rows = {line.split()[0]: line.split()[3] for line in table.splitlines()[2:4]}
    assert rows == {"conv": "fp16", "fc": "fp32"}
    code, stdout, _ = run_cli(capsys, "inspect", out, "--json")
    data = json.loads(stdout)
    assert code == 0 and data["metadata"]["precision"] == {"conv": "fp16", "fc": "fp32"}
    assert data["totals"]["counts"] == {"fp32": 1, "fp16": 1}
    code, stdout, _ = run_cli(capsys, "report", model_file)  # an ONNX model: no metadata
    assert code == 0 and stdout.startswith("layer ")
    code, stdout, _ = run_cli(capsys, "dump", out)  # the saved (final) graph
    assert code == 0 and stdout.startswith("graph @tiny_cnn(%x: f32[1,3,8,8])")
    assert "%w.f16 = constant() {value=dense<...>} : f16[4,3,3,3]" in stdout


def test_compile_int8_with_calibration(capsys, tmp_path, model_file, x_file):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "int8.ircm"
    options = ["--calib", calib, "--calib-method", "percentile", "--calib-limit", "6"]
    stdout = _compile(capsys, model_file, out, "--precision", "int8", *options, "--no-progress")
    assert "2 layer(s): 2 int8" in stdout and "calibrate " in stdout
    got = _run(capsys, out, x_file, tmp_path / "got.npy")
    graph, meta = irc.serialize.read_graph_file(out)
    np.testing.assert_array_equal(got, irc.run(graph, [np.load(x_file)])[0])
    assert meta["calibration"] == {"method": "percentile", "samples": 6}
    want = _run(capsys, model_file, x_file, tmp_path / "want.npy")
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_warnings_print_as_irc_warnings(capsys, tmp_path, model_file):
    """A warning (here: too few calibration samples) is one ``irc: warning:`` line on
    stderr, not Python's file:line form."""
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    code, _, err = run_cli(capsys, "compile", model_file, "--precision", "int8", "--calib",
                           calib, "--no-progress", "-o", tmp_path / "m.ircm")  # fmt: skip
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "warning" in x.lower()]
    assert line.startswith("irc: warning: calibration: degenerate statistics")
    assert "UserWarning" not in err


def test_compile_errors_are_one_line(capsys, tmp_path, model_file):
    out = tmp_path / "m.ircm"
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text(json.dumps({"nope": "fp16"}))
    cases = [
        (["--precision", "int3"], "unknown precision 'int3'"),
        (["--precision", "int8"], "give calibration data"),
        (["--precision", bad_plan], "unknown layer"),
        (["--precision", tmp_path / "missing.json"], "cannot read the plan file"),
        (["--precision", "int8", "--calib", tmp_path / "none.npy"], "does not exist"),
        (["--precision", "int8", "--calib", bad_plan], "not a .npy/.npz file"),
    ]
    for options, fragment in cases:  # progress lines (stage started, failed) are not the error
        code, _, err = run_cli(capsys, "compile", model_file, *options, "-o", out, "--no-progress")
        assert_one_line_error(code, err, fragment)
    assert not out.exists()
    _compile(capsys, model_file, out)
    code, _, err = run_cli(capsys, "compile", out, "-o", tmp_path / "again.ircm")
    assert_one_line_error(code, err, "already a compiled model")


def test_run_and_report_errors(capsys, tmp_path, model_file, x_file):
    out = tmp_path / "m.ircm"
    _compile(capsys, model_file, out)
    code, _, err = run_cli(capsys, "run", out, "--input", x_file, "--input-shape", "x=2,3,8,8")
    assert_one_line_error(code, err, "fixed input shapes")
    code, _, err = run_cli(capsys, "run", model_file, "--input", x_file, "--threads", "1")
    assert_one_line_error(code, err, "--threads applies to compiled model files")
    data = bytearray(out.read_bytes())
    data[-40] ^= 1  # in the last payload (fc_b), just before the 32-byte trailer
    out.write_bytes(bytes(data))
    for command in (["run", out, "--input", x_file], ["report", out]):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err, "is corrupt", "fails its SHA-256 checksum")
    out.write_bytes(bytes(data[:50]))
    code, _, err = run_cli(capsys, "report", out)
    assert_one_line_error(code, err, "is truncated")


def test_help_texts(capsys):
    for command, fragments in {
        "compile": ["--calib-method", "--precision PRECISION|PLAN.json", "plan.json maps"],
        "report": ["--json", "compiled model file"],
        "run": ["compiled model file", "--threads"],
    }.items():
        with pytest.raises(SystemExit) as info:
            run_cli(capsys, command, "--help")
        assert info.value.code == 0
        out = capsys.readouterr().out
        for fragment in fragments:
            assert fragment in out, (command, fragment)
