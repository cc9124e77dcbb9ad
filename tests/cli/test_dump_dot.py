"""`irc dump --format dot|svg`: the DOT text parses, has a node per op and an edge per operand
(checked against the text IR `irc dump` prints), and SVG needs Graphviz's dot program."""

from __future__ import annotations

import io
import re
import sys
from collections import Counter

import pytest
from cli_runner import run_cli

# a quantized graph at the level the quantizer leaves (qconstant weight, qconv2d layer), with
# a value used twice and a constant that is a graph output
QUANTIZED_IR = """graph @q(%x: qi8<1.0:0>[1,1,2,2]) {
  %w = qconstant() {value=dense<[3]>, shape=[1,1,1,1], scales=dense<[0.5]>} : \
qi8<axis=0: 0.5:0>[1,1,1,1]
  %y = qconv2d(%x, %w) {out_scale=2.0} : qi8<2.0:0>[1,1,2,2]
  %z = add(%y, %y) : qi8<2.0:0>[1,1,2,2]
  return %z, %w
}
"""

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_NODE = re.compile(rf"^  (\w+) \[shape=(\w+), label=({_QUOTED})\];$")
_EDGE = re.compile(rf"^  (\w+) -> (\w+)(?: \[label={_QUOTED}\])?;$")
_IR_OP = re.compile(r"^  (%\S+) = (\w+)\(([^)]*)\)(?: \{.*\})? : (.+?)(?: loc\(.*\))?$")
_IR_ARG = re.compile(r"(%\w+): ([^,()]+(?:<[^>]*>)?\[[^\]]*\])")


def parse_dot(text: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """(label lines by node, edges) of the DOT text ``graph_to_dot`` writes; asserts that every
    line is a header, a node, an edge or the closing brace, and that braces balance."""
    unquoted = re.sub(_QUOTED, '""', text)
    assert unquoted.count("{") == unquoted.count("}") == 1
    lines = text.splitlines()
    assert re.fullmatch(rf"digraph {_QUOTED} \{{", lines[0]) and lines[-1] == "}"
    assert lines[1] == "  node [fontname=monospace];"
    nodes, edges = {}, []
    for line in lines[2:-1]:
        if node := _NODE.match(line):
            assert node[1] not in nodes, f"node {node[1]} defined twice"
            label = node[3][1:-1].replace('\\"', '"')
            nodes[node[1]] = label.split("\\l")[:-1] if label.endswith("\\l") else [label]
        else:
            edge = _EDGE.match(line)
            assert edge, f"not a node or an edge: {line!r}"
            edges.append((edge[1], edge[2]))
    assert all(a in nodes and b in nodes for a, b in edges)
    return nodes, edges


def ir_ops(ir_text: str) -> tuple[dict[str, str], list[tuple[str, str, list[str], str]]]:
    """(input types by name, ops as (result, kind, operands, result type)) of `irc dump`
    text, for single-result ops."""
    head = ir_text.splitlines()[0]
    inputs = dict(_IR_ARG.findall(head[head.index("(") :]))
    ops = []
    for line in ir_text.splitlines()[1:]:
        if op := _IR_OP.match(line):
            operands = [o.strip() for o in op[3].split(",") if o.strip()]
            ops.append((op[1], op[2], operands, op[4]))
    return inputs, ops


def check_dot_against_ir(dot_text: str, ir_text: str) -> dict[str, list[str]]:
    """Assert that the DOT graph draws the IR: one node per input and per non-constant op
    (its kind first, then '%result : type' as the IR prints it), constants named in their
    users' labels, and one edge per non-constant operand plus one per graph output. Returns
    the label lines by result name."""
    nodes, edges = parse_dot(dot_text)
    inputs, ops = ir_ops(ir_text)
    outputs = [o.strip() for o in ir_text.split("  return ")[1].split("\n")[0].split(",")]
    constants = {r for r, kind, _, _ in ops if kind in ("constant", "qconstant")}
    folded = constants - set(outputs)
    node_of = {}
    for node, label in nodes.items():
        for line in label:
            if m := re.match(r"^(%\S+) : ", line):
                assert m[1] not in node_of, f"{m[1]} drawn twice"
                node_of[m[1]] = node
    assert set(node_of) == set(inputs) | {r for r, *_ in ops if r not in folded}
    for name, type_text in inputs.items():
        assert nodes[node_of[name]] == [f"{name} : {type_text}"]
    want_edges = []
    for result, kind, operands, type_text in ops:
        if result in folded:
            assert result not in node_of
            continue
        label = nodes[node_of[result]]
        assert label[0].split()[0] == kind and f"{result} : {type_text}" in label
        for index, operand in enumerate(operands):
            if operand in folded:
                assert any(line.startswith(f"#{index} {operand} = ") for line in label)
            else:
                want_edges.append((node_of[operand], node_of[result]))
    assert "return" in nodes
    want_edges += [(node_of[v], "return") for v in outputs]
    assert Counter(edges) == Counter(want_edges)
    return {r: nodes[n] for r, n in node_of.items()}


def test_dot_of_an_onnx_model_draws_its_ir(capsys, model_file):
    code, ir_text, _ = run_cli(capsys, "dump", model_file)
    assert code == 0
    code, dot_text, err = run_cli(capsys, "dump", model_file, "--format", "dot")
    assert code == 0 and err == ""
    labels = check_dot_against_ir(dot_text, ir_text)
    assert labels["%c"][:2] == ["conv2d  loc(conv)", "%c : f32[N,4,8,8]"]
    assert "precision fp32" in labels["%c"] and "precision fp32" in labels["%y"]
    assert "#1 %w = constant : f32[4,3,3,3]" in labels["%c"]
    assert not any(line.startswith("precision") for line in labels["%act"])  # clip: no layer


def test_dot_after_the_pipeline(capsys, tmp_path, model_file):
    ir_file = tmp_path / "opt.irc"
    assert run_cli(capsys, "opt", model_file, "-o", ir_file)[0] == 0
    code, dot_text, _ = run_cli(capsys, "dump", ir_file, "--format", "dot")
    assert code == 0
    labels = check_dot_against_ir(dot_text, ir_file.read_text())
    assert '{pads=[1,1,1,1], activation="clip", act_min=0.0, act_max=6.0}' in labels["%act"]


def test_dot_of_quantized_ir_shows_quantized_types_and_precision(capsys, tmp_path):
    source = tmp_path / "q.irc"
    source.write_text(QUANTIZED_IR)
    code, dot_text, _ = run_cli(capsys, "dump", source, "--format", "dot")
    assert code == 0
    labels = check_dot_against_ir(dot_text, QUANTIZED_IR)
    assert labels["%y"] == [
        "qconv2d",
        "%y : qi8<2.0:0>[1,1,2,2]",
        "{out_scale=2.0}",
        "precision int8",
    ]
    assert labels["%x"] == ["%x : qi8<1.0:0>[1,1,2,2]"]
    assert "%w : qi8<axis=0: 0.5:0>[1,1,1,1]" in labels["%w"]  # a graph output: drawn


def test_dot_from_stdin_and_to_a_file(capsys, monkeypatch, tmp_path, model_file):
    code, want, _ = run_cli(capsys, "dump", model_file, "--format", "dot")
    assert code == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(model_file.read_bytes())))
    assert run_cli(capsys, "dump", "-", "--format", "dot", "-o", "-") == (0, want, "")
    out_file = tmp_path / "g.dot"
    assert run_cli(capsys, "dump", model_file, "--format", "dot", "-o", out_file) == (0, "", "")
    assert out_file.read_text() == want


def test_svg_without_graphviz_is_a_one_line_error(capsys, monkeypatch, tmp_path, model_file):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program here
    code, out, err = run_cli(capsys, "dump", model_file, "--format", "svg")
    assert (code, out) == (2, "")
    assert err == (
        "irc: error: --format svg needs Graphviz's 'dot' program on PATH: install Graphviz, "
        "or use --format dot\n"
    )


def test_svg_runs_dot_on_the_dot_text(capsys, monkeypatch, tmp_path, model_file):
    fake = tmp_path / "dot"  # stands in for Graphviz: echoes its arguments and its input
    fake.write_text('#!/bin/sh\necho "<svg args=$*>"\ncat\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    _, dot_text, _ = run_cli(capsys, "dump", model_file, "--format", "dot")
    code, out, err = run_cli(capsys, "dump", model_file, "--format", "svg")
    assert (code, err) == (0, "")
    assert out == "<svg args=-Tsvg>\n" + dot_text


def test_stats_with_a_graph_format_is_a_one_line_error(capsys, model_file):
    code, out, err = run_cli(capsys, "dump", model_file, "--stats", "--format", "dot")
    assert (code, out) == (2, "")
    assert err == "irc: error: --stats prints a table, not a graph: drop --format dot\n"


def test_dump_help_describes_the_formats(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, "dump", "--help")
    assert info.value.code == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "--format {ir,dot,svg}" in flat and "Graphviz DOT text" in flat
    assert "constants are listed in the label of the op using them rather than drawn" in flat
