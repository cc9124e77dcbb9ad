"""canonicalize: local clean-ups that leave one simplest form of the same computation.

In one sweep in op order (so an op's operands are already canonical when it is visited):

- reshape ∘ reshape becomes one reshape, transpose ∘ transpose one transpose;
- a reshape to its input's shape and a transpose by the identity permutation are removed;
- common subexpressions merge: ops of one kind with the same operands and equal
  attributes, and constants with the same element type, shape and bytes (a constant
  without data, elided from a dump, is never merged: its bytes are unknown);

then dead ops are erased. Sweeps repeat until nothing changes.

Graph inputs and outputs keep their names and types: an op whose result is a graph output
is removed only when the value replacing it can take over the output's name (it is neither
a graph input nor another output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from irc.errors import IrcError
from irc.ir import Graph, Op, Value
from irc.matching import is_output
from irc.opdef import infer_types
from irc.pass_manager import Pass, PassContext, register_pass

MAX_SWEEPS = 8  # each sweep reaches a fixed point on chains; the cap guards against a bug


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Fold reshape/transpose chains and identities, merge duplicates, erase dead ops."""

    name: ClassVar[str] = "canonicalize"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        stats = {"identities-removed": 0, "chains-merged": 0, "duplicates-merged": 0}
        for _ in range(MAX_SWEEPS):
            before = dict(stats)
            _sweep(graph, stats)
            if stats == before:
                break
        stats["dead-erased"] = graph.remove_dead_ops()
        return stats


def _sweep(graph: Graph, stats: dict[str, int]) -> None:
    seen: dict[tuple, list[Op]] = {}
    for op in list(graph.ops):
        if op.graph is not graph:
            continue
        if op.kind in ("reshape", "transpose") and _merge_chain(graph, op):
            stats["chains-merged"] += 1
        if _is_identity(op) and _forward(graph, op, [op.operands[0]]):
            stats["identities-removed"] += 1
            continue
        key = _cse_key(op)
        if key is None:
            continue
        candidates = seen.setdefault(key, [])
        original = next((c for c in candidates if _same_payload(c, op)), None)
        if original is None:
            candidates.append(op)
        elif _forward(graph, op, original.results):
            stats["duplicates-merged"] += 1


def _merge_chain(graph: Graph, op: Op) -> bool:
    """Make ``op`` read the input of a producer of its own kind, skipping that producer."""
    inner = op.operands[0].producer
    if inner is None or inner.kind != op.kind:
        return False
    source = inner.operands[0]
    if op.kind == "transpose":
        # y[i] = t[p2[i]] = x[p1[p2[i]]]
        p1, p2 = inner.attrs["perm"], op.attrs["perm"]
        attrs = {"perm": tuple(p1[i] for i in p2)}
    else:
        target = op.result.type.shape
        if all(isinstance(d, int) for d in target):
            attrs = {"shape": target}
        elif 0 not in op.attrs["shape"]:
            attrs = {"shape": op.attrs["shape"]}  # -1 still infers the same dimension
        else:
            return False  # a 0 copies a dimension of the skipped reshape's result
    if not _retypes_to(op, source, attrs):
        return False
    op.attrs.update(attrs)
    graph.set_operand(op, 0, source)
    return True


def _retypes_to(op: Op, source: Value, attrs: dict) -> bool:
    """True when ``op`` reading ``source`` with ``attrs`` still has its result type."""
    try:
        types = infer_types(op.kind, [source.type], {**op.attrs, **attrs}, op.label())
    except IrcError:
        return False
    return types == [op.result.type]


def _is_identity(op: Op) -> bool:
    if op.kind == "reshape":
        return op.result.type == op.operands[0].type
    if op.kind == "transpose":
        return tuple(op.attrs["perm"]) == tuple(range(len(op.attrs["perm"])))
    return False


def _forward(graph: Graph, op: Op, replacements: list[Value]) -> bool:
    """Replace ``op``'s results by ``replacements`` and erase it, keeping outputs named.

    A result that is a graph output hands its name to its replacement, which must then
    be neither a graph input nor a graph output (whose names are fixed).
    """
    for old, new in zip(op.results, replacements):
        if old.type != new.type:
            return False
        if is_output(graph, old) and (new.is_graph_input or is_output(graph, new)):
            return False
    renames = []
    for old, new in zip(op.results, replacements):
        if is_output(graph, old):
            renames.append((new, old.name))
        graph.replace_all_uses_with(old, new)
    graph.erase_op(op)
    for value, name in renames:
        graph.rename(value, name)
    return True


def _cse_key(op: Op) -> tuple | None:
    """A hashable key equal for ops that compute the same thing (payloads aside)."""
    if op.kind == "constant":
        value = op.attrs["value"]
        if not isinstance(value, np.ndarray):
            return None
        return ("constant", value.dtype.str, value.shape, _fingerprint(value))
    try:
        attrs = tuple(sorted((k, _hashable(v)) for k, v in op.attrs.items()))
    except TypeError:
        return None
    return (op.kind, tuple(id(v) for v in op.operands), attrs)


def _hashable(value):
    if isinstance(value, np.ndarray):
        raise TypeError("array attributes are compared by _same_payload only")
    hash(value)
    return value


def _fingerprint(array: np.ndarray) -> bytes:
    """A few sampled bytes: cheap to compute for a 100 MB weight, rarely equal by chance."""
    flat = array.reshape(-1)
    step = max(1, flat.size // 64)
    return flat[::step].tobytes() + flat[-1:].tobytes()


def _same_payload(a: Op, b: Op) -> bool:
    """Constants with equal keys are equal only if all their bytes are."""
    if a.kind != "constant":
        return True
    x, y = a.attrs["value"], b.attrs["value"]
    return np.array_equal(_bytes_view(x), _bytes_view(y))


def _bytes_view(array: np.ndarray) -> np.ndarray:
    # comparing bytes, not values: NaN equals NaN, and -0.0 differs from 0.0
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
