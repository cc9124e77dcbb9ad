"""Specialise a graph's symbolic input dimensions to concrete ones, re-inferring every type.

A given shape may hold ``None`` for a dim to keep as the graph has it (``open_batch``
makes such shapes: every dim but the batch).
"""

from __future__ import annotations

from collections.abc import Mapping

from irc.errors import InputError
from irc.ir import Graph
from irc.opdef import infer_types
from irc.types import TensorType


def specialize(graph: Graph, input_shapes: Mapping[str, tuple]) -> Graph:
    """A copy of ``graph`` whose named inputs have the given shapes (``None``: the dim as
    it is); InputError naming the input when a shape does not fit its type."""
    known = {v.name for v in graph.inputs}
    unknown = set(input_shapes) - known
    if unknown:
        raise InputError(f"no input is called {sorted(unknown)}; inputs are {sorted(known)}")
    g = graph.clone()
    for v in g.inputs:
        if v.name in input_shapes:
            v.type = TensorType(v.type.dtype, _fitted(v, input_shapes[v.name]), v.type.quant)
    for op in g.ops:
        types = infer_types(op.kind, [o.type for o in op.operands], op.attrs, f"op {op.label()}")
        for r, t in zip(op.results, types):
            r.type = TensorType(t.dtype, t.shape, r.type.quant)
    return g


def _fitted(value, given) -> tuple:
    """Input ``value``'s shape specialised to ``given``; InputError if it cannot take it."""
    shape = tuple(None if d is None else int(d) for d in given)
    shown = ["?" if d is None else d for d in shape]
    if len(shape) != value.type.rank or any(
        s is not None and (s < 0 or isinstance(d, int) and d != s)
        for d, s in zip(value.type.shape, shape)
    ):
        raise InputError(f"input '{value.name}' of type {value.type} cannot take shape {shown}")
    return tuple(d if s is None else s for d, s in zip(value.type.shape, shape))


def open_batch(input_shapes: Mapping[str, tuple]) -> dict[str, tuple]:
    """``input_shapes`` with each leading (batch) dim ``None``: specialise the rest, keep
    the batch as the model declares it."""
    return {name: (None, *tuple(shape)[1:]) if len(shape) else () for name, shape in
            input_shapes.items()}  # fmt: skip
