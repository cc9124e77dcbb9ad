"""The pass manager: pipeline strings, errors, and every instrument of the PassContext."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import irc
from irc.pass_manager import (
    PASSES,
    Pass,
    PassContext,
    PassFailure,
    PassManager,
    PipelineError,
    format_pipeline,
    parse_pipeline,
    register_pass,
)
from irc.types import TensorType


@dataclass(frozen=True)
class Options(Pass):
    """A pass with one option of every kind a pipeline string can carry."""

    name: ClassVar[str] = "test-options"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    label: str = "x"
    names: tuple[str, ...] = ("a", "b")

    def run(self, graph, ctx):
        return {"seen": 0}


if Options.name not in PASSES:
    register_pass(Options)


@dataclass(frozen=True)
class BreakTypes(Pass):
    """Leaves the graph invalid: a result type that its op does not infer."""

    name: ClassVar[str] = "break-types"

    def run(self, graph, ctx):
        value = graph.ops[-1].result
        value.type = TensorType(value.type.dtype, (99,))
        return {"broken": 1}


@dataclass(frozen=True)
class Crash(Pass):
    """Changes the graph, then raises, as a buggy pass would."""

    name: ClassVar[str] = "crash"

    def run(self, graph, ctx):
        graph.ops[-1].attrs["alpha"] = 123.0
        raise RuntimeError("boom")


TEXT = """graph @g(%x: f32[2,16]) {
  %w = constant() {value=dense<0xHEX>} : f32[16]
  %a = add(%x, %w) : f32[2,16]
  %b = relu(%a) : f32[2,16]
  %c = relu(%a) : f32[2,16]
  %y = leaky_relu(%c) : f32[2,16]
  return %b, %y
}
""".replace("HEX", np.arange(16, dtype="<f4").tobytes().hex().upper())


@pytest.fixture
def graph():
    return irc.parse_graph(TEXT)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "canonicalize",
        "canonicalize,constant-fold,fold-batchnorm,fuse,canonicalize",
        "fuse{acts=relu,clip}",
        "fuse{acts=}",
        "test-options{count=3,ratio=0.25,flag=true,label=hello,names=p,q,r},fuse",
        "test-options{names=a}",
    ],
)
def test_canonical_pipelines_print_back_identically(text):
    assert format_pipeline(parse_pipeline(text)) == text


@pytest.mark.parametrize(
    "text,canonical",
    [
        (" canonicalize , fuse{ acts = relu } ", "canonicalize,fuse{acts=relu}"),
        ("fuse{acts=relu,clip,hard_swish}", "fuse"),  # the default is not printed
        ("fuse{}", "fuse"),
        ("test-options{flag=false,count=1}", "test-options"),
    ],
)
def test_pipelines_normalise(text, canonical):
    assert format_pipeline(parse_pipeline(text)) == canonical


def test_options_are_typed():
    (p,) = parse_pipeline("test-options{count=3,ratio=2,flag=true,names=u,v}")
    assert (p.count, p.ratio, p.flag, p.names) == (3, 2.0, True, ("u", "v"))


@pytest.mark.parametrize(
    "text,fragments",
    [
        ("canonicalize,fusee", ["unknown pass 'fusee'", "known: ", "canonicalize", "fuse"]),
        ("fuse{act=relu}", ["pass 'fuse' has no option ['act']", "options: ['acts']"]),
        ("fuse{acts=gelu}", ["pass 'fuse'", "gelu"]),
        ("test-options{count=many}", ["option 'count'", "bad value 'many'"]),
        ("test-options{flag=yes}", ["expected true or false"]),
        ("test-options{count=1,2}", ["expected one value"]),
        ("fuse{acts=relu", ["unbalanced '{'"]),
        ("fuse}", ["unbalanced '}'"]),
        ("fuse{relu}", ["expected key=value"]),
        ("fuse{acts=relu}x", ["options must end with '}'"]),
    ],
)
def test_pipeline_errors_say_what_is_wrong(text, fragments):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_verify_each_catches_a_broken_pass(graph):
    ctx = PassContext(verify_each=True)
    with pytest.raises(PassFailure, match=r"pass 'break-types' \(#1\) left an invalid graph"):
        PassManager([Options(), BreakTypes()], ctx).run(graph)


def test_without_verify_each_a_broken_graph_goes_unnoticed(graph):
    PassManager([BreakTypes()], PassContext()).run(graph)
    with pytest.raises(irc.VerifyError):
        irc.verify_graph(graph)


def test_stop_after_runs_a_prefix(graph):
    ctx = PassContext(stop_after=1)
    PassManager("canonicalize,fuse", ctx).run(graph)
    assert [name for name, _ in ctx.statistics] == ["canonicalize"]
    assert [op.kind for op in graph.ops] == ["constant", "add", "relu", "leaky_relu"]
    ctx = PassContext(stop_after=0)
    PassManager("canonicalize", ctx).run(graph)
    assert ctx.statistics == []


def test_dump_dir_holds_the_ir_after_each_pass(graph, tmp_path):
    ctx = PassContext(dump_dir=str(tmp_path / "dumps"))
    PassManager("canonicalize,fuse", ctx).run(graph)
    files = sorted(os.listdir(tmp_path / "dumps"))
    assert files == ["00-canonicalize.irc", "01-fuse.irc"]
    after_fuse = (tmp_path / "dumps" / files[1]).read_text()
    assert after_fuse == irc.print_graph(graph)
    assert '%b = add(%x, %w) {activation="relu"}' in after_fuse
    after_canonicalize = (tmp_path / "dumps" / files[0]).read_text()
    assert "%b = relu(%a)" in after_canonicalize and "%c" not in after_canonicalize


def test_print_ir_after_change_skips_passes_that_changed_nothing(graph):
    out = io.StringIO()
    ctx = PassContext(print_ir_after_change=True, out=out)
    PassManager("constant-fold,canonicalize,fold-batchnorm", ctx).run(graph)
    headers = re.findall(r"// ----- IR after (\S+) -----", out.getvalue())
    assert headers == ["canonicalize"]
    assert "%c = relu" not in out.getvalue()  # printed after CSE merged %c into %b


def test_print_ir_before_and_after_all(graph):
    out = io.StringIO()
    ctx = PassContext(print_ir_before_all=True, print_ir_after_all=True, out=out)
    PassManager("constant-fold,fuse", ctx).run(graph)
    headers = re.findall(r"// ----- IR (\w+ \S+) -----", out.getvalue())
    assert headers == [
        "before constant-fold",
        "after constant-fold",
        "before fuse",
        "after fuse",
    ]


def test_reproducer_holds_the_ir_before_the_failing_pass(graph, tmp_path):
    ctx = PassContext(reproducer_dir=str(tmp_path))
    with pytest.raises(PassFailure) as info:
        PassManager([Options(count=2), Crash(), Options()], ctx).run(graph)
    path = tmp_path / "reproducer.irc"
    assert f"pass 'crash' (#1) failed: boom (reproducer: {path})" == str(info.value)
    text = path.read_text()
    first, rest = text.split("\n", 1)
    assert first == "// pipeline: crash,test-options"
    assert rest == irc.print_graph(irc.parse_graph(TEXT), full=True)  # not the crash's edit
    reproduced = irc.parse_graph(text)
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(irc.run(reproduced, [x])[1], x + np.arange(16.0))


def test_no_reproducer_unless_asked(graph, tmp_path):
    with pytest.raises(PassFailure) as info:
        PassManager([Crash()], PassContext()).run(graph)
    assert "reproducer" not in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_timing_report_has_a_line_per_pass(graph):
    ctx = PassContext(timing=True)
    PassManager("canonicalize,test-options", ctx).run(graph)
    lines = ctx.report().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"canonicalize: 0 identities-removed, 0 chains-merged, 1 duplicates-merged, "
        r"0 dead-erased \(\d+\.\d ms\)",
        lines[0],
    )
    assert re.fullmatch(r"test-options: 0 seen \(\d+\.\d ms\)", lines[1])
    assert [name for name, _ in ctx.timings] == ["canonicalize", "test-options"]
    assert "ms" not in PassContext(statistics=ctx.statistics).report()
