"""What the rewriting passes ask of a graph, and the one way they replace an op.

Queries: the array a constant holds, the sole user of a value, a constant seen as one number
per output channel. Edits: ``absorb`` removes an op whose result another value now computes,
keeping the removed result's name (the naming rule every pass follows, so graph outputs and
the names people grep for survive a rewrite), and ``erase_dead_producers`` drops operands
that a rewrite left unused.
"""

from __future__ import annotations

import numpy as np

from irc.ir import Graph, Op, Value
from irc.opdef import build
from irc.types import TensorType


def constant_array(value: Value) -> np.ndarray | None:
    """The array ``value`` holds when a constant op with real data produces it, else None.

    Constants read from an elided dump (``irc.tensor.ElidedTensor``) have no data: None.
    """
    op = value.producer
    if op is not None and op.kind == "constant" and isinstance(op.attrs["value"], np.ndarray):
        return op.attrs["value"]
    return None


def is_output(graph: Graph, value: Value) -> bool:
    """True when ``value`` is one of the graph's outputs."""
    return any(v is value for v in graph.outputs)


def sole_user(graph: Graph, value: Value) -> Op | None:
    """The op that is the only use of ``value`` (which is not a graph output), else None."""
    if len(value.uses) != 1 or is_output(graph, value):
        return None
    return value.uses[0].op


def per_channel(array: np.ndarray, target: TensorType, axis: int = 1) -> np.ndarray | None:
    """``array`` as a vector of one entry per channel of ``target`` (along ``axis``).

    It qualifies when, broadcast against a tensor of type ``target``, it varies only along
    ``axis`` and does not grow the result: a scalar, [C], [C,1,1], [1,C,1,1] for NCHW.
    Returns None otherwise (or when the channel count is symbolic).
    """
    channels = target.shape[axis] if axis < target.rank else None
    if not isinstance(channels, int) or array.ndim > target.rank:
        return None
    padded = (1,) * (target.rank - array.ndim) + array.shape
    for i, d in enumerate(padded):
        if d != 1 and (i != axis or d != channels):
            return None
    return np.broadcast_to(array.reshape(-1), (channels,)).copy()


def absorb(graph: Graph, removed: Op, survivor: Value) -> None:
    """Erase the one-result op ``removed``, whose result ``survivor`` now computes.

    Every use of the removed result (and the graph output slot) moves to ``survivor``,
    which then takes the removed result's name; the caller makes sure that
    ``survivor`` has no other use left, as it would be renamed under them.
    """
    old = removed.result
    name = old.name
    graph.replace_all_uses_with(old, survivor)
    graph.erase_op(removed)
    graph.rename(survivor, name)


def erase_dead_producers(graph: Graph, values: list[Value]) -> int:
    """Erase the producers of ``values`` that nothing uses any more; returns the count."""
    erased = 0
    for v in values:
        op = v.producer
        if op is None or op.graph is not graph:
            continue
        if all(not r.uses and not is_output(graph, r) for r in op.results):
            graph.erase_op(op)
            erased += 1
    return erased


def set_constant(graph: Graph, value: Value, array: np.ndarray) -> None:
    """Give the constant op producing ``value`` new data of the same type (not in place:
    the old array may be shared with a clone of the graph)."""
    op = value.producer
    array = np.asarray(array, dtype=value.type.dtype.numpy, order="C")
    if op is None or op.kind != "constant" or array.shape != value.type.shape:
        raise ValueError(f"%{value.name} is not a constant of shape {list(array.shape)}")
    op.attrs["value"] = array


def new_constant(graph: Graph, array: np.ndarray, name: str, before: Op) -> Value:
    """A constant holding ``array``, inserted just before ``before``, named from ``name``."""
    op = build(
        graph,
        "constant",
        [],
        {"value": np.asarray(array, order="C")},
        result_names=[graph.fresh_name(name)],
        index=graph.index_of(before),
    )
    return op.result


def rebuild(graph: Graph, op: Op, operands: list[Value], attrs: dict) -> Op:
    """Replace the one-result ``op`` by a new op of its kind with ``operands`` and ``attrs``
    (types re-inferred), at its position, under its node name and result name."""
    name = op.result.name
    new = build(
        graph,
        op.kind,
        operands,
        {**op.attrs, **attrs},
        name=op.name,
        result_names=[graph.fresh_name(name + ".new")],
        index=graph.index_of(op),
    )
    graph.replace_all_uses_with(op.result, new.result)
    graph.erase_op(op)
    graph.rename(new.result, name)
    return new
