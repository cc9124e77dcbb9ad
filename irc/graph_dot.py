"""A graph as Graphviz DOT text (``irc dump --format dot``), and SVG through ``dot``.

Each graph input is an ellipse node ``in<i>``; each op is a box node ``op<i>`` (``i`` its
index in the op list) whose label gives its kind, its node name, its results with their
types as the IR prints them (``qi8<0.5:0>[1,2,4,4]``), its attributes but tensors and, for a
layer, the precision it runs at (as ``irc report`` names it: ``int8`` for a ``qconv2d`` with
8-bit weights, ``fp32`` for a ``conv2d`` with f32 weights). Constants are folded into the
label of each op that uses them (a line ``#i %w = constant : f32[4,3,3,3]`` for operand
``i``) rather than drawn, unless one is a graph output. An edge runs from each operand's
producer to its user, one per operand; a ``return`` node takes the graph outputs.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from irc.errors import InputError
from irc.ir import Graph, Op, Value
from irc.opdef import OPS, has_trait
from irc.printer import DEFAULT_ELIDE_ABOVE, format_attr, format_name, format_type
from irc.report import FLOAT_PRECISION, INT_PRECISION
from irc.tensor import ElidedTensor, tensor_value_type

MAX_ATTR_CHARS = 80  # a longer attribute line is cut with '…'


def layer_precision(op: Op) -> str | None:
    """The precision a layer runs at (``int8``, ``int4``, ``fp16``, ``fp32``, …), or None
    for an op that is no layer or whose weight precision is not known."""
    if len(op.operands) < 2:
        return None
    weight = op.operands[1]
    if has_trait(op.kind, "integer-layer"):
        short = weight.type.dtype.short
        return INT_PRECISION.get(short, short)
    if not has_trait(op.kind, "layer"):
        return None
    source = weight.producer
    if source is not None and source.kind == "cast":  # fp16 weights widened for the layer
        source = source.operands[0].producer
    if source is not None and source.kind == "constant":
        short = tensor_value_type(source.attrs["value"]).dtype.short
    else:
        short = weight.type.dtype.short
    return FLOAT_PRECISION.get(short, short)


def graph_to_dot(graph: Graph, full: bool = False) -> str:
    """The DOT text of ``graph``; ``full`` prints every per-axis scale of quantized types."""
    elide = None if full else DEFAULT_ELIDE_ABOVE
    outputs = {id(v) for v in graph.outputs}
    drawn = [(i, op) for i, op in enumerate(graph.ops) if not _is_folded(op, outputs)]
    node_of: dict[int, str] = {}  # id(value) -> the node producing it
    lines = [f"digraph {_quote(graph.name or 'main')} {{", "  node [fontname=monospace];"]
    for i, value in enumerate(graph.inputs):
        node_of[id(value)] = f"in{i}"
        label = f"{format_name(value.name)} : {format_type(value.type, elide)}"
        lines.append(f"  in{i} [shape=ellipse, label={_quote(label)}];")
    for i, op in drawn:
        for value in op.results:
            node_of[id(value)] = f"op{i}"
        label = _op_label(op, elide, outputs)
        lines.append(f"  op{i} [shape=box, label={_label(label)}];")
    for i, op in drawn:
        for value in op.operands:
            source = node_of.get(id(value))
            if source is not None:  # None: a folded constant, named in the label
                lines.append(f"  {source} -> op{i}{_edge_label(value)};")
    lines.append('  return [shape=plaintext, label="return"];')
    for value in graph.outputs:
        lines.append(f"  {node_of[id(value)]} -> return{_edge_label(value)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_to_svg(dot_text: str) -> str:
    """SVG of DOT text, drawn by Graphviz's ``dot`` program; InputError without it."""
    program = shutil.which("dot")
    if program is None:
        raise InputError(
            "--format svg needs Graphviz's 'dot' program on PATH: install Graphviz, "
            "or use --format dot"
        )
    done = subprocess.run(
        [program, "-Tsvg"], input=dot_text, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise InputError(f"'dot -Tsvg' failed (exit code {done.returncode}): {first}")
    return done.stdout


def _is_folded(op: Op, outputs: set[int]) -> bool:
    """Whether ``op`` is a constant shown in its users' labels instead of as a node."""
    return has_trait(op.kind, "constant") and not any(id(r) in outputs for r in op.results)


def _op_label(op: Op, elide: int | None, outputs: set[int]) -> list[str]:
    """The lines of an op node's label."""
    lines = [op.kind + (f"  loc({op.name})" if op.name else "")]
    for value in op.results:
        lines.append(f"{format_name(value.name)} : {format_type(value.type, elide)}")
    attrs = _attr_text(op)
    if attrs:
        lines.append(attrs)
    precision = layer_precision(op)
    if precision is not None:
        lines.append(f"precision {precision}")
    for index, value in enumerate(op.operands):
        producer = value.producer
        if producer is not None and _is_folded(producer, outputs):
            what = f"{format_name(value.name)} = {producer.kind}"
            lines.append(f"#{index} {what} : {format_type(value.type, elide)}")
    return lines


def _attr_text(op: Op) -> str:
    """The attributes ``irc dump`` prints for ``op``, but tensors, on one (cut) line."""
    spec = OPS.get(op.kind)
    shown = []
    for key, value in op.attrs.items():
        if isinstance(value, (np.ndarray, ElidedTensor)):
            continue
        if spec is not None and key in spec.attrs and _same(value, spec.attrs[key].default):
            continue
        shown.append(f"{key}={format_attr(value, False, DEFAULT_ELIDE_ABOVE)}")
    text = "{" + ", ".join(shown) + "}" if shown else ""
    return text if len(text) <= MAX_ATTR_CHARS else text[: MAX_ATTR_CHARS - 1] + "…"


def _same(value, default) -> bool:
    """Whether an attribute holds its default (so the IR leaves it out)."""
    if isinstance(default, np.ndarray):
        return False
    return type(value) is type(default) and value == default


def _edge_label(value: Value) -> str:
    """An edge's attributes: the value's name when its producer has several results."""
    producer = value.producer
    if producer is None or len(producer.results) < 2:
        return ""
    return f" [label={_quote(format_name(value.name))}]"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _quote(text: str) -> str:
    """A DOT quoted string holding ``text`` on one line."""
    return '"' + _escape(text) + '"'


def _label(lines: list[str]) -> str:
    """A DOT quoted label of left-justified lines."""
    return '"' + "".join(_escape(line) + "\\l" for line in lines) + '"'
