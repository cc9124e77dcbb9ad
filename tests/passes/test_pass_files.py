"""Runs the textual pass tests: every ``tests/passes/*.irc`` file, case by case.

A file holds cases separated by ``// -----`` lines. Each case is an input graph in the text
form, a ``// RUN: PIPELINE`` line (a case without one uses the file's first), and FileCheck
directives (see ``filecheck``). The driver

1. parses the graph and fills each elided constant (``dense<...>``) with seeded random
   data in [0.5, 1.5) (positive, so that batchnorm variances are valid), unless the case
   says ``// KEEP-ELIDED`` (to test what passes do with constants that have no data);
2. runs the pipeline, verifying after each pass;
3. checks the printed result followed by the statistics, one ``// pass: …`` line per pass;
4. runs the interpreter before and after on the same random inputs: the outputs must agree
   (rtol 1e-5) unless the case keeps constants elided.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from filecheck import filecheck

import irc
from irc.pass_manager import PassContext, PassManager, available_passes
from irc.tensor import ElidedTensor

HERE = Path(__file__).resolve().parent
_RUN = re.compile(r"^\s*//\s*RUN:(.*)$", re.MULTILINE)


def _cases():
    for path in sorted(HERE.glob("*.irc")):
        text = path.read_text()
        runs = _RUN.findall(text)
        default = runs[0].strip() if runs else ""
        line = 0
        for chunk in re.split(r"^[ \t]*// -----[ \t]*$", text, flags=re.MULTILINE):
            # pad with the lines before it, so errors give line numbers in the file
            chunk, line = "\n" * line + chunk, line + chunk.count("\n")
            if "graph @" not in chunk:
                continue
            run = _RUN.search(chunk)
            name = re.search(r"graph @([\w.$-]+)", chunk).group(1)
            pipeline = run.group(1).strip() if run else default
            yield pytest.param(chunk, pipeline, id=f"{path.stem}:{name}")


def materialize(graph: irc.Graph, rng: np.random.Generator) -> None:
    """Give every elided float constant random data in [0.5, 1.5)."""
    for op in graph.ops:
        value = op.attrs.get("value") if op.kind == "constant" else None
        if isinstance(value, ElidedTensor):
            t = value.type
            assert t.dtype.is_float, f"cannot invent data for %{op.result.name}: {t}"
            op.attrs["value"] = rng.uniform(0.5, 1.5, t.shape).astype(t.dtype.numpy)


def random_inputs(graph: irc.Graph, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy) for v in graph.inputs]


@pytest.mark.parametrize("case,pipeline", list(_cases()))
def test_pass_file_case(case, pipeline):
    assert pipeline, "the case has no // RUN: line"
    rng = np.random.default_rng(0)
    graph = irc.parse_graph(case)
    numeric = "// KEEP-ELIDED" not in case
    if numeric:
        materialize(graph, rng)
    irc.verify_graph(graph)
    before = graph.clone()
    for op in before.ops:  # a private copy of the data: a pass writing into an array shows
        if op.kind == "constant" and isinstance(op.attrs["value"], np.ndarray):
            op.attrs["value"] = op.attrs["value"].copy()

    ctx = PassContext(verify_each=True)
    PassManager(pipeline, ctx).run(graph)
    stats = "".join(f"// {line}\n" for line in ctx.report().splitlines())
    filecheck(irc.print_graph(graph) + stats, case)

    if numeric:
        inputs = random_inputs(graph, rng)
        expected, got = irc.run(before, inputs), irc.run(graph, inputs)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * np.abs(e).max())


def test_every_pass_has_a_file():
    passes = {"canonicalize", "constant-fold", "fold-batchnorm", "recognize-activations", "fuse"}
    assert passes <= set(available_passes())
    assert passes <= {p.stem.replace("_", "-") for p in HERE.glob("*.irc")}
