"""IR core: use-lists under rewrites, the verifier's checks, and parser error messages."""

from __future__ import annotations

import numpy as np
import pytest

from irc.errors import CycleError, ParseError, VerifyError
from irc.ir import Graph
from irc.opdef import build
from irc.parser import parse_graph
from irc.printer import print_graph
from irc.types import DType, TensorType
from irc.verifier import collect_problems, verify_graph

F32_2x3 = TensorType(DType.F32, (2, 3))


def small_graph():
    g = Graph("g")
    x = g.add_input("x", F32_2x3)
    r = build(g, "relu", [x]).result
    s = build(g, "sigmoid", [r]).result
    y = build(g, "add", [r, s]).result
    g.outputs = [y]
    return g, x, r, s, y


def test_use_lists_follow_rewrites():
    g, x, r, s, y = small_graph()
    assert [(u.op.kind, u.index) for u in r.uses] == [("sigmoid", 0), ("add", 0)]
    t = build(g, "tanh", [x], index=1).result  # right after relu
    assert g.replace_all_uses_with(r, t) == 2
    assert r.uses == [] and len(t.uses) == 2
    g.erase_op(r.producer)
    verify_graph(g)
    assert "relu" not in print_graph(g)


def test_erase_refuses_used_op():
    g, x, r, s, y = small_graph()
    with pytest.raises(ValueError, match="still used"):
        g.erase_op(r.producer)


def test_clone_is_independent():
    g, *_ = small_graph()
    c = g.clone()
    assert print_graph(c) == print_graph(g)
    c.outputs = [c.inputs[0]]
    c.remove_dead_ops()
    assert len(g.ops) == 3 and len(c.ops) == 0


def test_verifier_reports_every_problem():
    g, x, r, s, y = small_graph()
    r.type = TensorType(DType.F32, (2, 4))  # stale type
    g.ops[1], g.ops[2] = g.ops[2], g.ops[1]  # add now uses sigmoid before its def
    s.uses.clear()  # broken use-list
    problems = collect_problems(g)
    text = "\n".join(problems)
    assert "differ from inferred" in text
    assert "used before it is defined" in text
    assert "use-lists do not match operands" in text
    with pytest.raises(VerifyError, match="problem"):
        verify_graph(g)


def test_verifier_rejects_bad_attributes():
    g, x, r, s, y = small_graph()
    r.producer.attrs["alpha"] = 1.0
    assert any("unknown attribute" in p for p in collect_problems(g))


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "empty input"),
        ("hello", "expected 'graph'"),
        ("graph @g(%x: f32[2]) {\n  %y = nosuch(%x) : f32[2]\n  return %y\n}", "unknown op kind"),
        ("graph @g(%x: f32[2]) {\n  %y = relu(%z) : f32[2]\n  return %y\n}", "undefined value %z"),
        (
            "graph @g(%x: f32[2]) {\n  %y = relu(%x) : f32[3]\n  return %y\n}",
            "differ from inferred",
        ),
        (
            "graph @g(%x: f32[2]) {\n  %y = relu(%x) {alpha=1.0} : f32[2]\n  return %y\n}",
            "unknown attribute",
        ),
        (
            "graph @g(%x: f32[2]) {\n  %y = relu(%x) : g99[2]\n  return %y\n}",
            "unknown element type",
        ),
        ("graph @g(%x: f32[2]) {\n  %y = relu(%x) : f32[2]\n  return %q\n}", "%q is not defined"),
        (
            "graph @g(%x: f32[2]) {\n  %y = relu(%x) : f32[2]\n  %y = relu(%x) : f32[2]\n"
            "  return %y\n}",
            "defined twice",
        ),
        (
            "graph @g(%x: f32[2]) {\n  %c = constant() {value=dense<[1.0]>} : f32[2]\n"
            "  return %c\n}",
            "has 1 items",
        ),
    ],
)
def test_parse_errors_are_precise(text, fragment):
    with pytest.raises((ParseError, VerifyError), match=fragment):
        parse_graph(text)


def test_forward_use_that_is_not_a_cycle():
    text = (
        "graph @g(%x: f32[2]) {\n  %b = relu(%a) : f32[2]\n  %a = relu(%x) : f32[2]\n"
        "  return %b\n}\n"
    )
    with pytest.raises(ParseError, match="used before its definition on line 3"):
        parse_graph(text)


def test_cycle_is_reported_as_one():
    text = (
        "graph @g(%x: f32[2]) {\n  %a = add(%x, %b) : f32[2]\n  %b = relu(%a) : f32[2]\n"
        "  return %b\n}\n"
    )
    with pytest.raises(CycleError, match="%a -> %b -> %a"):
        parse_graph(text)


def test_elided_constant_refuses_to_run():
    from irc.errors import ElidedConstantError
    from irc.interpreter import run_graph

    g = Graph("g")
    c = build(g, "constant", [], {"value": np.zeros(100, np.float32)}).result
    g.outputs = [c]
    parsed = parse_graph(print_graph(g))
    with pytest.raises(ElidedConstantError, match="--full"):
        run_graph(parsed, [])
