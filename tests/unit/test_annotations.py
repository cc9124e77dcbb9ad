"""Annotations (``note_*`` attributes): analysis results carried by ops, printed and parsed
back exactly, kept by the verifier, and refused when their value has no text form."""

from __future__ import annotations

import pytest
from onnx_builders import tiny_cnn

import irc
from irc.errors import IrcError
from irc.opdef import build


def test_notes_print_parse_and_verify():
    graph = irc.import_onnx(tiny_cnn())
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    conv.attrs.update(note_reason='kept "fp32"', note_sqnr=31.25, note_latency_us=(1.5, 2.0))
    irc.verify_graph(graph)
    text = irc.print_graph(graph)
    assert 'note_reason="kept \\"fp32\\"", note_sqnr=31.25, note_latency_us=[1.5,2.0]' in text
    again = irc.parse_graph(text)
    assert irc.print_graph(again) == text
    parsed = next(op for op in again.ops if op.kind == "conv2d")
    assert parsed.attrs["note_sqnr"] == 31.25 and parsed.attrs["note_reason"] == 'kept "fp32"'


def test_a_note_must_have_a_text_form():
    graph = irc.import_onnx(tiny_cnn())
    x = graph.inputs[0]
    with pytest.raises(IrcError, match="annotation 'note_bad'"):
        build(graph, "relu", [x], {"note_bad": [1, 2]})
    with pytest.raises(IrcError, match="unknown attribute"):
        build(graph, "relu", [x], {"notes": 1})
