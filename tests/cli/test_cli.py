"""The `irc` command: dump, stats, run, --help, and one-line errors with exit code 2."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import onnx
import pytest
from cli_runner import run_cli
from model_paths import LIGHT_DIR
from onnx_builders import cyclic_model, single_node_model

from irc.cli_io import COMPILED_MAGIC
from irc.serialize import MAGIC


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irc: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_dump_prints_ir_that_parses(capsys, model_file):
    import irc

    code, out, _ = run_cli(capsys, "dump", model_file)
    assert code == 0
    assert out.startswith("graph @tiny_cnn(%x: f32[N,3,8,8])")
    assert "conv2d(%x, %w, %b) {pads=[1,1,1,1]} : f32[N,4,8,8]" in out
    assert irc.print_graph(irc.parse_graph(out)) == out


def test_dump_stats_totals(capsys):
    code, out, _ = run_cli(capsys, "dump", LIGHT_DIR / "light_resnet50.onnx", "--stats")
    assert code == 0
    total = out.strip().splitlines()[-1]
    # ResNet-50: 25.5 M parameters and about 4.1 G multiply-accumulates at 224x224
    params = int(total.split(" params")[0].split(", ")[-1].replace(",", ""))
    macs = int(total.split(" MACs")[0].split(", ")[-1].replace(",", ""))
    assert 25_400_000 < params < 25_700_000
    assert 3.8e9 < macs < 4.2e9


def test_full_dump_runs_like_the_onnx_model(capsys, tmp_path, model_file):
    ir_file = tmp_path / "tiny.irc"
    assert run_cli(capsys, "dump", model_file, "--full", "-o", ir_file)[0] == 0
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for source, out in ((model_file, "a.npy"), (ir_file, "b.npy")):
        assert (
            run_cli(capsys, "run", source, "--input", tmp_path / "x.npy", "-o", tmp_path / out)[0]
            == 0
        )
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (2, 5)
    np.testing.assert_array_equal(a, b)


def test_run_matches_onnxruntime(capsys, tmp_path, model_file):
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert (
        run_cli(
            capsys,
            "run",
            model_file,
            "--input",
            f"x={tmp_path / 'x.npy'}",
            "-o",
            tmp_path / "y.npy",
        )[0]
        == 0
    )
    (expected,) = ort.InferenceSession(str(model_file)).run(None, {"x": x})
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_truncated_onnx_file(capsys, tmp_path, model_file):
    data = model_file.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "dump", bad)
    assert_one_line_error(code, err, "truncated.onnx", "not a valid ONNX model")


def test_text_file_that_is_not_a_model(capsys, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a model\n")
    code, _, err = run_cli(capsys, "dump", bad)
    assert_one_line_error(code, err, "notes.txt", "neither an ONNX model nor irc text IR")


def test_malformed_text_ir_names_line(capsys, tmp_path):
    bad = tmp_path / "bad.irc"
    bad.write_text("graph @g(%x: f32[2]) {\n  %y = relu(%x) : f32[2\n  return %y\n}\n")
    code, _, err = run_cli(capsys, "dump", bad)
    assert_one_line_error(code, err, "line 3")


def test_unsupported_op_names_node_and_lists_supported(capsys, tmp_path):
    model = single_node_model("GridSample", [("x", [1, 1, 2, 2]), ("grid", [1, 2, 2, 2])],
                              [("y", [1, 1, 2, 2])], opset=16)  # fmt: skip
    model.graph.node[0].name = "grid_7"
    onnx.save(model, tmp_path / "grid.onnx")
    code, _, err = run_cli(capsys, "dump", tmp_path / "grid.onnx")
    assert_one_line_error(
        code,
        err,
        "node 'grid_7' (GridSample, opset 16) is not supported",
        "supported: ",
        "Conv",
        "Gemm",
    )


@pytest.mark.parametrize(
    "shape,dtype,fragment",
    [
        ((1, 3, 9, 9), np.float32, "must have shape [N,3,8,8], got [1, 3, 9, 9]"),
        ((1, 3, 8), np.float32, "must have shape [N,3,8,8]"),
        ((1, 3, 8, 8), np.float64, "must have dtype float32 (f32), got float64"),
    ],
)
def test_run_with_wrong_input(capsys, tmp_path, model_file, shape, dtype, fragment):
    np.save(tmp_path / "x.npy", np.zeros(shape, dtype))
    code, _, err = run_cli(capsys, "run", model_file, "--input", tmp_path / "x.npy")
    assert_one_line_error(code, err, "input 'x'", fragment)


def test_onnx_graph_with_a_cycle(capsys, tmp_path):
    onnx.save(cyclic_model(), tmp_path / "cycle.onnx")
    code, _, err = run_cli(capsys, "dump", tmp_path / "cycle.onnx")
    assert_one_line_error(code, err, "cycle", "node_a", "node_b")


def test_text_ir_with_a_cycle(capsys, tmp_path):
    bad = tmp_path / "cycle.irc"
    bad.write_text(
        "graph @g(%x: f32[2]) {\n  %a = add(%x, %b) : f32[2]\n"
        "  %b = relu(%a) : f32[2]\n  return %b\n}\n"
    )
    code, _, err = run_cli(capsys, "dump", bad)
    assert_one_line_error(code, err, "cycle through %a -> %b -> %a")


def _feed_stdin(monkeypatch, data: bytes) -> None:
    """Make ``data`` the process's standard input (read through ``sys.stdin.buffer``)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_dump_and_run_read_the_model_from_stdin(capsys, monkeypatch, tmp_path, model_file):
    ir_file = tmp_path / "tiny.irc"
    assert run_cli(capsys, "dump", model_file, "--full", "-o", ir_file)[0] == 0
    for source in (model_file, ir_file):
        want = run_cli(capsys, "dump", source, "--input-shape", "x=2,3,8,8")
        assert want[0] == 0 and "f32[2,3,8,8]" in want[1]
        _feed_stdin(monkeypatch, source.read_bytes())
        assert run_cli(capsys, "dump", "-", "--input-shape", "x=2,3,8,8", "-o", "-") == want
    np.save(tmp_path / "x.npy", np.ones((1, 3, 8, 8), np.float32))
    want = run_cli(capsys, "run", model_file, "--input", tmp_path / "x.npy")
    assert want[0] == 0 and want[1].startswith("y: float32[1, 5]")
    _feed_stdin(monkeypatch, model_file.read_bytes())
    assert run_cli(capsys, "run", "-", "--input", tmp_path / "x.npy") == want


@pytest.mark.parametrize(
    "data,fragment",
    [
        (b"", "<stdin> is empty"),
        (b"hello, this is not a model\n", "<stdin> is neither an ONNX model nor irc text IR"),
        (b"graph @g(%x: f32[2]) {\n  %y = relu(%x) : f32[2\n", "<stdin>: line 3"),
    ],
)
def test_bad_model_on_stdin_is_a_one_line_error(capsys, monkeypatch, data, fragment):
    _feed_stdin(monkeypatch, data)
    code, _, err = run_cli(capsys, "dump", "-")
    assert_one_line_error(code, err, fragment)


def test_a_compiled_model_on_stdin_is_named_as_one(capsys, monkeypatch, model_file):
    """The stdin reader knows a compiled model file by the magic irc.serialize writes."""
    assert COMPILED_MAGIC == MAGIC
    _feed_stdin(monkeypatch, MAGIC + b"\x00" * 32)
    code, _, err = run_cli(capsys, "dump", "-")
    assert_one_line_error(code, err, "<stdin> holds a compiled model file")


def test_truncated_onnx_on_stdin(capsys, monkeypatch, model_file):
    data = model_file.read_bytes()
    _feed_stdin(monkeypatch, data[: len(data) // 2])
    code, _, err = run_cli(capsys, "dump", "-")
    assert_one_line_error(code, err, "<stdin> is not a valid ONNX model")


def test_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "dump", tmp_path / "nope.onnx")
    assert_one_line_error(code, err, "does not exist")


def test_user_model_file_is_not_modified(capsys, model_file):
    before = model_file.read_bytes()
    run_cli(capsys, "dump", model_file, "--input-shape", "x=2,3,8,8")
    assert model_file.read_bytes() == before


def test_entry_point_help_and_exit_codes(tmp_path):
    for argv in (["--help"], ["dump", "--help"], ["run", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "irc.tools.cli", *argv], capture_output=True, text=True
        )
        assert done.returncode == 0 and "usage: irc" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "irc.tools.cli", "dump", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("irc: error: ")
