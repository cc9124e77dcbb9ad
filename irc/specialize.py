"""Specialise a graph's symbolic input dimensions to concrete ones, re-inferring every type."""

from __future__ import annotations

from collections.abc import Mapping

from irc.errors import InputError
from irc.ir import Graph
from irc.opdef import infer_types
from irc.types import TensorType


def specialize(graph: Graph, input_shapes: Mapping[str, tuple]) -> Graph:
    """A copy of ``graph`` whose named inputs have the given static shapes."""
    known = {v.name for v in graph.inputs}
    unknown = set(input_shapes) - known
    if unknown:
        raise InputError(f"no input is called {sorted(unknown)}; inputs are {sorted(known)}")
    g = graph.clone()
    for v in g.inputs:
        if v.name not in input_shapes:
            continue
        shape = tuple(int(d) for d in input_shapes[v.name])
        if len(shape) != v.type.rank or any(
            isinstance(d, int) and d != s for d, s in zip(v.type.shape, shape)
        ):
            raise InputError(f"input '{v.name}' of type {v.type} cannot take shape {list(shape)}")
        v.type = TensorType(v.type.dtype, shape, v.type.quant)
    for op in g.ops:
        types = infer_types(op.kind, [o.type for o in op.operands], op.attrs, f"op {op.label()}")
        for r, t in zip(op.results, types):
            r.type = TensorType(t.dtype, t.shape, r.type.quant)
    return g
