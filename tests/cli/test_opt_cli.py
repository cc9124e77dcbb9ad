"""`irc opt`: pipelines over ONNX and text IR, the instruments' flags, and errors."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from cli_runner import run_cli

import irc
from irc.pass_manager import PASSES, Pass, register_pass
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.tools.cli import main


@dataclass(frozen=True)
class CrashOnConv(Pass):
    """Fails whenever the graph holds a conv2d (to exercise --reproducer-dir)."""

    name: ClassVar[str] = "test-crash-on-conv"

    def run(self, graph, ctx):
        if any(op.kind == "conv2d" for op in graph.ops):
            raise ValueError("found a conv2d")
        return {}


if CrashOnConv.name not in PASSES:
    register_pass(CrashOnConv)


def test_default_pipeline_folds_and_fuses(capsys, model_file):
    code, out, err = run_cli(capsys, "opt", model_file)
    assert code == 0 and err == ""
    assert (
        '%act = conv2d(%x, %w, %b) {pads=[1,1,1,1], activation="clip", act_min=0.0, '
        'act_max=6.0} : f32[N,4,8,8] loc("conv")'
    ) in out
    assert "batchnorm" not in out and "clip(" not in out
    assert irc.print_graph(irc.parse_graph(out)) == out


def test_plan_memory_prints_the_arena_plan_after_the_ir(capsys, tmp_path):
    source = tmp_path / "g.irc"
    source.write_text(
        "graph @g(%x: f32[2,16]) {\n  %a = add(%x, %x) : f32[2,16]\n"
        "  %b = relu(%a) : f32[2,16]\n  %c = reshape(%b) {shape=[32]} : f32[32]\n"
        "  return %c\n}\n"
    )
    code, out, _ = run_cli(capsys, "opt", source, "--pipeline", "plan-memory")
    assert code == 0
    ir, plan = out.split("// arena ")
    assert plan.startswith("256 bytes (unshared 256), 2 buffers")  # 128 bytes each, no reuse
    assert "// %a @0 +128 ops 0..1" in plan and "// %b @128 +128 ops 1..3 (with %c)" in plan
    assert "// no kernel (views): %c" in plan
    assert irc.print_graph(irc.parse_graph(out)) == ir  # the plan is comments: it parses


def test_full_output_runs_like_the_model(capsys, tmp_path, model_file):
    out_file = tmp_path / "opt.irc"
    code, out, _ = run_cli(capsys, "opt", model_file, "--full", "-o", out_file)
    assert code == 0 and out == ""
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    (want,) = irc.run(irc.import_onnx(model_file), [x])
    (got,) = irc.run(irc.load_graph(out_file), [x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_text_ir_in_with_a_pipeline_and_input_shape(capsys, tmp_path):
    source = tmp_path / "g.irc"
    source.write_text(
        "graph @g(%x: f32[N,4]) {\n  %a = add(%x, %x) : f32[N,4]\n"
        "  %b = relu(%a) : f32[N,4]\n  return %b\n}\n"
    )
    code, out, _ = run_cli(
        capsys, "opt", source, "--pipeline", "fuse{acts=relu}", "--input-shape", "x=2,4"
    )
    assert code == 0
    assert out == (
        'graph @g(%x: f32[2,4]) {\n  %b = add(%x, %x) {activation="relu"} : f32[2,4]\n'
        "  return %b\n}\n"
    )


def test_timing_reports_each_pass_on_stderr(capsys, model_file):
    code, out, err = run_cli(capsys, "opt", model_file, "--timing")
    assert code == 0 and out.startswith("graph @tiny_cnn")
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == DEFAULT_FLOAT_PIPELINE.split(",") + ["total"]
    assert lines[2].startswith("fold-batchnorm: 1 folded, 0 refused (")
    assert lines[3].startswith("recognize-activations: 0 hard-swish, 0 gelu (")
    assert lines[4].startswith("fuse: 0 fused-scale, 0 fused-bias, 1 fused-activation, 0 refused")
    assert all(line.endswith(" ms)") for line in lines[:-1])


def test_stop_after_and_print_ir_after_all(capsys, model_file):
    code, out, err = run_cli(
        capsys, "opt", model_file, "--stop-after", "3", "--print-ir-after-all", "--verify-each"
    )
    assert code == 0
    assert err.count("// ----- IR after ") == 3
    assert "// ----- IR after fold-batchnorm -----" in err
    assert "clip(" in out and "batchnorm" not in out  # folded, not yet fused


def test_print_ir_before_all_and_after_change(capsys, model_file):
    code, _, err = run_cli(
        capsys, "opt", model_file, "--print-ir-before-all", "--print-ir-after-change"
    )
    assert code == 0
    assert err.count("// ----- IR before ") == 6
    # the two canonicalize runs, constant-fold and recognize-activations change nothing here
    assert err.count("// ----- IR after ") == 2


def test_dump_dir(capsys, tmp_path, model_file):
    code, _, _ = run_cli(capsys, "opt", model_file, "--dump-dir", tmp_path / "d")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == [
        "00-canonicalize.irc",
        "01-constant-fold.irc",
        "02-fold-batchnorm.irc",
        "03-recognize-activations.irc",
        "04-fuse.irc",
        "05-canonicalize.irc",
    ]


def test_reproducer_is_written_and_reproduces(capsys, tmp_path, model_file):
    pipeline = "fold-batchnorm,test-crash-on-conv,fuse"
    code, _, err = run_cli(
        capsys, "opt", model_file, "--pipeline", pipeline, "--reproducer-dir", tmp_path
    )
    reproducer = tmp_path / "reproducer.irc"
    assert code == 2
    assert err == (
        "irc: error: pass 'test-crash-on-conv' (#1) failed: found a conv2d "
        f"(reproducer: {reproducer})\n"
    )
    text = reproducer.read_text()
    assert text.startswith("// pipeline: test-crash-on-conv,fuse\ngraph @tiny_cnn(")
    assert "batchnorm" not in text  # the IR the failing pass was given
    # without --pipeline, irc opt runs the pipeline the reproducer names: the same failure
    code, _, err = run_cli(capsys, "opt", reproducer)
    assert code == 2 and "pass 'test-crash-on-conv' (#0) failed: found a conv2d" in err


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--pipeline", "canonicalize,unknown-pass"], "unknown pass 'unknown-pass'; known: "),
        (["--pipeline", "fuse{acts=relu6}"], "pass 'fuse': acts ['relu6'] are not fusable"),
        (["--pipeline", "fuse{x=1}"], "pass 'fuse' has no option ['x']"),
    ],
)
def test_bad_pipeline_is_a_one_line_error(capsys, model_file, argv, fragment):
    code, out, err = run_cli(capsys, "opt", model_file, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irc: error: ") and fragment in lines[0]


def _feed_stdin(monkeypatch, data: bytes) -> None:
    """Make ``data`` the process's standard input (read through ``sys.stdin.buffer``)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


REPRODUCER_IR = (
    "// pipeline: fuse{acts=relu}\n"
    "graph @g(%x: f32[2,4]) {\n  %a = add(%x, %x) : f32[2,4]\n"
    "  %b = relu(%a) : f32[2,4]\n  return %b\n}\n"
)


@pytest.mark.parametrize("kind", ["onnx", "text-ir-with-pipeline-line"])
def test_stdin_prints_what_the_file_path_prints(capsys, monkeypatch, tmp_path, model_file, kind):
    if kind == "onnx":
        source = model_file
    else:
        source = tmp_path / "r.irc"
        source.write_text(REPRODUCER_IR)
    code, want, err = run_cli(capsys, "opt", source)
    assert code == 0 and err == "" and want.startswith("graph @")
    if kind != "onnx":  # the '// pipeline:' line was followed: relu fused into add
        assert 'add(%x, %x) {activation="relu"}' in want
    for output in ([], ["-o", "-"]):
        _feed_stdin(monkeypatch, source.read_bytes())
        assert run_cli(capsys, "opt", "-", *output) == (0, want, "")


def test_stdin_through_a_real_pipe(capsys, model_file):
    code, want, _ = run_cli(capsys, "opt", model_file)
    pipe_run = subprocess.run(
        [sys.executable, "-m", "irc.tools.cli", "opt", "-", "-o", "-"],
        input=model_file.read_bytes(),
        capture_output=True,
    )
    assert code == pipe_run.returncode == 0 and pipe_run.stderr == b""
    assert pipe_run.stdout.decode() == want and want.startswith("graph @tiny_cnn")


def test_stdin_errors_name_stdin(capsys, monkeypatch):
    _feed_stdin(monkeypatch, b"")
    code, out, err = run_cli(capsys, "opt", "-")
    assert (code, out, err) == (2, "", "irc: error: <stdin> is empty\n")
    _feed_stdin(monkeypatch, b"graph @g(%x: f32[2]) {\n  %y = nonsense(%x) : f32[2]\n")
    code, out, err = run_cli(capsys, "opt", "-")
    assert code == 2 and out == "" and err.startswith("irc: error: <stdin>: ")
    assert len(err.splitlines()) == 1


def test_stop_after_pass_name_equals_the_truncated_pipeline(capsys, model_file):
    passes = DEFAULT_FLOAT_PIPELINE.split(",")
    assert "fold-batchnorm" in passes
    truncated = ",".join(passes[: passes.index("fold-batchnorm") + 1])
    code, want, _ = run_cli(capsys, "opt", model_file, "--pipeline", truncated)
    assert code == 0 and "batchnorm" not in want and "clip(" in want  # folded, not fused
    for argv in (["--stop-after=fold-batchnorm"], ["--stop-after", "fold-batchnorm"]):
        assert run_cli(capsys, "opt", model_file, *argv) == (0, want, "")
    # the numeric form counts passes: fold-batchnorm is the third
    assert run_cli(capsys, "opt", model_file, "--stop-after", "3") == (0, want, "")


def test_stop_after_stops_at_the_first_run_of_a_repeated_pass(capsys, model_file):
    _, want, _ = run_cli(capsys, "opt", model_file, "--pipeline", "canonicalize")
    code, out, err = run_cli(
        capsys, "opt", model_file, "--pipeline", "canonicalize,fold-batchnorm,canonicalize",
        "--stop-after", "canonicalize", "--timing",
    )  # fmt: skip
    assert code == 0 and out == want
    assert [line.split(":")[0] for line in err.splitlines()] == ["canonicalize", "total"]


@pytest.mark.parametrize(
    "pipeline,name,valid",
    [
        (
            None,
            "fold-bn",
            "canonicalize, constant-fold, fold-batchnorm, recognize-activations, fuse",
        ),
        ("canonicalize,fuse,canonicalize", "fold-batchnorm", "canonicalize, fuse"),
    ],
)
def test_stop_after_a_pass_not_in_the_pipeline_names_it(capsys, model_file, pipeline, name, valid):
    argv = ["--pipeline", pipeline] if pipeline else []
    code, out, err = run_cli(capsys, "opt", model_file, *argv, f"--stop-after={name}")
    assert (code, out) == (2, "")
    assert err == (
        f"irc: error: --stop-after: pass '{name}' is not in the pipeline; its passes: {valid}\n"
    )


@pytest.mark.parametrize(
    "flag", ["--print-ir-before-all", "--print-ir-after-all", "--print-ir-after-change"]
)
def test_mlir_prefixed_flags_are_aliases(capsys, model_file, flag):
    want = run_cli(capsys, "opt", model_file, flag)
    assert want[0] == 0 and "// ----- IR " in want[2]
    assert run_cli(capsys, "opt", model_file, "--mlir-" + flag[2:]) == want


def test_mlir_timing_is_an_alias_of_timing(capsys, model_file):
    code, _, err = run_cli(capsys, "opt", model_file, "--mlir-timing")
    lines = err.strip().splitlines()
    assert code == 0
    assert [line.split(":")[0] for line in lines] == DEFAULT_FLOAT_PIPELINE.split(",") + ["total"]


def test_bad_stop_after_is_a_usage_error(capsys, model_file):
    with pytest.raises(SystemExit) as info:
        main(["opt", str(model_file), "--stop-after", "-1"])
    assert info.value.code == 2
    assert "expected a count >= 0, got '-1'" in capsys.readouterr().err


def test_help_documents_pipelines_and_lists_passes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["opt", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "PASS[{OPTION=VALUE,...}],PASS..." in out
    assert "--reproducer-dir DIR" in out and "'// pipeline:'" in out
    for line in ("  canonicalize\n", "  fold-batchnorm\n", "  fuse{acts=relu,clip,hard_swish}\n"):
        assert line in out
    assert "Fold every batchnorm that follows a conv2d or gemm" in out
    assert "--stop-after PASS|N" in out and "--print-ir-after-all, --mlir-print-ir-after-all" in out
    flat = " ".join(out.split())  # help lines wrap
    assert "'-' reads it from standard input" in flat and "('-': stdout)" in flat
