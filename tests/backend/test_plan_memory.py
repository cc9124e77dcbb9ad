"""The memory planner: textual cases, the pass's statistics, and properties on random DAGs.

Properties: buffers live at the same op never share bytes, offsets are 64-byte aligned,
reshape results share their operand's storage, a concat that needs no kernel has its
operands laid out as its blocks, and a driver running over the planned
arena (with reference kernels, so only the plan is under test) computes what the
interpreter computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_patches import reference_kernels

import irc
from irc.ir import Graph
from irc.memory_plan import ALIGNMENT, MemoryPlanError, plan_memory
from irc.opdef import build
from irc.pass_manager import PassContext, PassManager
from irc.types import DType, TensorType

CHAIN = """graph @main(%x: f32[1,16]) {
  %a = relu(%x) : f32[1,16]
  %b = relu(%a) : f32[1,16]
  %c = relu(%b) : f32[1,16]
  %d = reshape(%c) {shape=[4,4]} : f32[4,4]
  %e = relu(%d) : f32[4,4]
  return %e
}
"""


def test_chain_reuses_buffers_and_aliases_reshape():
    plan = plan_memory(irc.parse_graph(CHAIN))
    # a [0,1] and c [2,4] never meet; b [1,2] and e [4,end] neither: two 64-byte slots
    assert plan.offsets == {"a": 0, "b": 64, "c": 0, "d": 0, "e": 64}
    assert plan.alias_of["d"] == "c" and plan.storage["x"] == "input"
    assert plan.statistics() == {
        "buffers": 4,
        "arena-bytes": 128,
        "unshared-bytes": 256,
        "bytes-saved": 128,
        "aliased": 1,
        "ops-free": 1,
    }


def test_pass_reports_statistics_and_keeps_the_graph():
    graph = irc.parse_graph(CHAIN)
    ctx = PassContext()
    PassManager("plan-memory", ctx).run(graph)
    assert ctx.statistics == [("plan-memory", plan_memory(graph).statistics())]
    assert irc.print_graph(graph) == CHAIN


def test_constants_and_reshaped_inputs_stay_outside_the_arena():
    graph = irc.parse_graph(
        """graph @main(%x: f32[2,3]) {
  %w = constant() {value=dense<[1.0,2.0,3.0,4.0,5.0,6.0]>} : f32[2,3]
  %r = reshape(%x) {shape=[3,2]} : f32[3,2]
  %t = transpose(%r) {perm=[1,0]} : f32[2,3]
  %y = add(%t, %w) : f32[2,3]
  return %y, %r
}
"""
    )
    plan = plan_memory(graph)
    assert plan.storage == {"x": "input", "w": "constant", "r": "input", "t": "arena", "y": "arena"}
    assert set(plan.offsets) == {"t", "y"} and plan.offsets["t"] != plan.offsets["y"]


CONCAT = """graph @main(%x: f32[1,16]) {
  %a = relu(%x) : f32[1,16]
  %b = relu(%x) : f32[1,16]
  %c = concat(%a, %b) {axis=1} : f32[1,32]
  %d = relu(%c) : f32[1,32]
  %e = concat(%d, %x, %d) {axis=1} : f32[1,80]
  return %e
}
"""


def test_concat_operands_are_written_in_place():
    plan = plan_memory(irc.parse_graph(CONCAT))
    # a and b are the two halves of c, which lives from a's definition to its last use
    assert plan.alias_of["a"] == plan.alias_of["b"] == "c" and "c" in plan.free
    assert plan.offsets["b"] == plan.offsets["a"] + 64 == plan.offsets["c"] + 64
    # e takes d in place, but copies x (an input) and the second d: it runs a kernel
    assert plan.alias_of["d"] == "e" and plan.offsets["d"] == plan.offsets["e"]
    assert "e" not in plan.free
    # c is live while d is written into e, so they do not overlap
    c, e = (next(b for b in plan.buffers if b.value == n) for n in "ce")
    assert c.end <= e.offset or e.end <= c.offset


def test_concat_of_batch_two_copies():
    plan = plan_memory(irc.parse_graph(CONCAT.replace("[1,", "[2,")))
    assert not plan.free and all(plan.alias_of[n] == n for n in "abcde")


def test_symbolic_shapes_are_refused():
    graph = irc.parse_graph(
        "graph @main(%x: f32[N,4]) {\n  %y = relu(%x) : f32[N,4]\n  return %y\n}\n"
    )
    with pytest.raises(MemoryPlanError, match="specialise"):
        plan_memory(graph)


@st.composite
def random_dags(draw) -> Graph:
    """Rank-2 f32 graphs of relu, add, concat, reshape, transpose and constants."""
    g = Graph()
    rows = draw(st.integers(1, 3))
    live = [g.add_input("x", TensorType(DType.F32, (rows, draw(st.integers(1, 40)))))]
    for _ in range(draw(st.integers(1, 14))):
        src = draw(st.sampled_from(live))
        kind = draw(st.sampled_from(["relu", "add", "concat", "reshape", "transpose", "const"]))
        if kind in ("add", "concat"):
            axis = draw(st.integers(0, 1))
            fits = [v for v in live if v.type.shape[1 - axis] == src.type.shape[1 - axis]]
            other = draw(st.sampled_from(fits))
            if kind == "add":
                other = src if other.type.shape != src.type.shape else other
                op = build(g, "add", [src, other])
            else:
                op = build(g, "concat", [src, other], {"axis": axis})
        elif kind == "reshape":
            op = build(g, "reshape", [src], {"shape": src.type.shape[::-1]})
        elif kind == "transpose":
            op = build(g, "transpose", [src], {"perm": (1, 0)})
        elif kind == "const":
            value = np.arange(np.prod(src.type.shape), dtype=np.float32).reshape(src.type.shape)
            op = build(g, "constant", [], {"value": value})
        else:
            op = build(g, "relu", [src])
        live.append(op.result)
    outputs = draw(st.lists(st.sampled_from(live), min_size=1, max_size=3))
    g.outputs = list(dict.fromkeys(outputs)) if draw(st.booleans()) else outputs
    g.remove_dead_ops()
    return g


def check_plan_invariants(graph: Graph) -> None:
    plan = plan_memory(graph)
    for b in plan.buffers:
        assert b.offset % ALIGNMENT == 0 and b.size >= plan.sizes[b.value]
        assert b.end <= plan.arena_bytes
    for i, a in enumerate(plan.buffers):
        for b in plan.buffers[i + 1 :]:
            if a.first <= b.last and b.first <= a.last and a.size and b.size:
                assert a.end <= b.offset or b.end <= a.offset, (a, b)
    for op in graph.ops:
        if op.kind == "reshape":
            src, dst = op.operands[0].name, op.result.name
            assert plan.storage[dst] == plan.storage[src]
            assert plan.offsets.get(dst) == plan.offsets.get(src)
        if op.result.name in plan.free and op.kind == "concat":  # operands are its blocks
            at = plan.offsets[op.result.name]
            for v in op.operands:
                assert plan.offsets[v.name] == at
                at += plan.sizes[v.name]
    assert plan.arena_bytes <= plan.unshared_bytes


@settings(max_examples=60, deadline=None)
@given(random_dags())
def test_live_buffers_never_overlap(graph):
    check_plan_invariants(graph)


@settings(max_examples=25, deadline=None)
@given(graph=random_dags(), seed=st.integers(0, 2**16))
def test_driver_over_the_plan_matches_the_interpreter(graph, seed):
    x = np.random.default_rng(seed).standard_normal(graph.inputs[0].type.shape, np.float32)
    with reference_kernels():
        model = irc.compile(graph, pipeline="", warmup=False)
        got = model(x)
    want = irc.run(graph, [x])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
