"""Static memory planning: every intermediate value gets an offset in one arena.

The ``plan-memory`` pass (``irc.passes.plan_memory``) computes the plan for the backend,
which lays its driver out over it; ``print_memory_plan`` shows it beside the L3 text.

A value lives from the op that produces it to the last op that reads it (to the end of the
program for graph outputs). Values that are live at the same op never share bytes; values
whose lives do not meet may. Placement is TFLite's and tinygrad's greedy-by-size: the
largest buffers are placed first, each into the smallest gap between already placed
buffers it overlaps in time that fits it (best fit), else above them all. Offsets are
64-byte aligned, a cache line and one AVX-512 register.

A ``reshape`` result does not get storage of its own: it aliases its operand, and their
shared buffer lives as long as either is used. Where a concat's operands are contiguous
blocks of its result (batch 1, channel axis), the ops producing them write straight into
those blocks and the concat costs nothing. Constants and graph inputs live outside the
arena (the caller owns them), and so do reshapes of them.

Intervals are inclusive at both ends, so an op's results never share bytes with its
operands (the in-place concat apart): kernels may read an operand after writing part of a
result.

Planning takes O(n log n + n·k log k) for n buffers of which at most k are live together:
an interval index over op positions hands each buffer the placed buffers whose lives meet
its own (never scanning the others), and aliases resolve to their roots once each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from irc.errors import IrcError
from irc.ir import Graph, Value
from irc.opdef import has_trait, kinds_with
from irc.printer import format_name

ALIGNMENT = 64
# Op kinds whose result is its operand's bytes under another shape (so it needs no copy).
ALIAS_KINDS = kinds_with("view")


class MemoryPlanError(IrcError):
    """The graph cannot be planned (a value has a symbolic shape)."""


@dataclass(frozen=True)
class Buffer:
    """One arena allocation: its root value, bytes, live op interval, and offset."""

    value: str
    size: int
    first: int
    last: int
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass
class MemoryPlan:
    """Where every value of a graph lives.

    ``storage[name]`` is ``"arena"``, ``"input"`` or ``"constant"``; ``alias_of[name]`` is
    the value whose storage a value shares (itself when it has its own); arena values have
    ``offsets[name]``. ``arena_bytes`` is the arena's size, ``unshared_bytes`` what the
    buffers would take with no reuse. ``free`` names the results of ops that need no
    kernel: reshapes, and concats whose operands were all computed in place.
    """

    storage: dict[str, str]
    alias_of: dict[str, str]
    offsets: dict[str, int]
    sizes: dict[str, int]
    buffers: list[Buffer]
    arena_bytes: int
    unshared_bytes: int
    free: set[str] = field(default_factory=set)

    def statistics(self) -> dict[str, int]:
        """The figures the ``plan-memory`` pass reports."""
        return {
            "buffers": len(self.buffers),
            "arena-bytes": self.arena_bytes,
            "unshared-bytes": self.unshared_bytes,
            "bytes-saved": self.unshared_bytes - self.arena_bytes,
            "aliased": sum(1 for k, v in self.alias_of.items() if k != v),
            "ops-free": len(self.free),
        }


def value_bytes(value: Value) -> int:
    """Bytes of a value's storage; MemoryPlanError if its shape is symbolic."""
    if not value.type.is_static:
        raise MemoryPlanError(
            f"value %{value.name} has symbolic type {value.type}; specialise the graph's "
            "input shapes before planning memory"
        )
    return value.type.num_elements * value.type.dtype.numpy.itemsize


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def plan_memory(graph: Graph) -> MemoryPlan:
    """Liveness intervals over the op order, then greedy-by-size best-fit placement."""
    storage: dict[str, str] = {v.name: "input" for v in graph.inputs}
    sizes: dict[str, int] = {v.name: value_bytes(v) for v in graph.inputs}
    parent: dict[str, tuple[str, int]] = {}  # value -> (value whose bytes hold it, offset)
    free: set[str] = set()
    for op in graph.ops:
        for result in op.results:
            sizes[result.name] = value_bytes(result)
            storage[result.name] = "constant" if has_trait(op.kind, "constant") else "arena"
        if op.kind in ALIAS_KINDS:
            source = op.operands[0].name
            parent[op.result.name] = (source, 0)
            # the root's storage: a view's is its root's by induction, and a root that a
            # concat adopts later is an arena value, as that concat is
            storage[op.result.name] = storage[source]
            free.add(op.result.name)
        elif op.kind == "concat":
            if _place_concat_operands(op, storage, parent):
                free.add(op.result.name)

    alias_of, offsets_in_root = _resolve_all(storage, parent)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, op in enumerate(graph.ops):
        for operand in op.operands:
            last[alias_of[operand.name]] = index
        for result in op.results:
            root = alias_of[result.name]
            first.setdefault(root, index)
            last[root] = max(last.get(root, index), index)
    for value in graph.outputs:
        last[alias_of[value.name]] = len(graph.ops)  # outputs are copied out after the last op

    roots = [name for name in first if storage[name] == "arena" and alias_of[name] == name]
    # largest first; among equals, the earlier one first (a deterministic plan)
    roots.sort(key=lambda name: (-sizes[name], first[name]))
    placed: list[Buffer] = []
    lives = _IntervalIndex(len(graph.ops) + 1)  # op positions, and the end of the program
    for name in roots:
        size, start, end = _align(sizes[name]), first[name], last[name]
        # the placed buffers live with this one, by offset (equal offsets in placement
        # order, as a stable sort of the placement order gives them)
        busy = sorted(lives.meeting(start, end), key=lambda i: (placed[i].offset, i))
        offset = _best_fit(size, [placed[i] for i in busy])
        lives.add(len(placed), start, end)
        placed.append(Buffer(name, size, start, end, offset))
    placed.sort(key=lambda b: (b.first, b.offset))
    root_offset = {b.value: b.offset for b in placed}
    offsets = {
        name: root_offset[alias_of[name]] + offsets_in_root[name]
        for name, where in storage.items()
        if where == "arena"
    }
    return MemoryPlan(
        storage=storage,
        alias_of=alias_of,
        offsets=offsets,
        sizes=sizes,
        buffers=placed,
        arena_bytes=max((b.end for b in placed), default=0),
        unshared_bytes=sum(b.size for b in placed),
        free=free,
    )


def _resolve_all(names, parent: dict[str, tuple[str, int]]):
    """For every name, the value owning its bytes and its byte offset within that value:
    (alias_of, offsets_in_root), in the order of ``names``. Each link of a chain of parents
    is followed once (linear in all, where walking each chain to its root is quadratic)."""
    alias_of: dict[str, str] = {}
    offsets_in_root: dict[str, int] = {}
    for name in names:
        path = []
        while name not in alias_of and name in parent:
            path.append(name)
            name = parent[name][0]
        if name not in alias_of:  # a root
            alias_of[name], offsets_in_root[name] = name, 0
        root, offset = alias_of[name], offsets_in_root[name]
        for child in reversed(path):
            offset += parent[child][1]
            alias_of[child], offsets_in_root[child] = root, offset
    # in the order of ``names`` (the plan prints the values sharing a buffer in this order)
    return {n: alias_of[n] for n in names}, {n: offsets_in_root[n] for n in names}


def _place_concat_operands(op, storage, parent) -> bool:
    """Let a concat's operands live in its result; True if every one does (no copy left).

    Only where each operand is one contiguous block of the result (every axis before the
    concat axis has length 1, as a batch-1 channel concat) and the operand is an arena
    value with storage of its own: not an input, constant, reshape view, or a block of
    another concat already, and not an earlier operand of this concat too.
    """
    result = op.result
    shape = result.type.shape
    axis = op.attrs["axis"] % len(shape)
    if storage[result.name] != "arena" or math.prod(shape[:axis]) != 1:
        return False
    inner = math.prod(shape[axis + 1 :]) * result.type.dtype.numpy.itemsize
    offset, placed_all, seen = 0, True, set()
    for operand in op.operands:
        name = operand.name
        if storage[name] == "arena" and name not in parent and name not in seen:
            parent[name] = (result.name, offset)
        else:
            placed_all = False
        seen.add(name)
        offset += operand.type.shape[axis] * inner
    return placed_all


def _best_fit(size: int, busy: list[Buffer]) -> int:
    """The offset of the smallest gap among ``busy`` (the placed buffers live with the new
    one, by offset) that fits ``size`` bytes; the lowest of equal gaps; else above them."""
    best, best_gap, top = None, math.inf, 0
    for b in busy:
        gap = b.offset - top
        if size <= gap < best_gap:
            best, best_gap = top, gap
        top = max(top, b.end)
    return top if best is None else best


class _IntervalIndex:
    """Closed intervals of positions in [0, n), each under an id: ``meeting(a, b)`` lists
    the ids of those that meet [a, b] in O(log n + answers), ``add`` takes O(log n).

    Two segment trees over the positions (iterative, leaves at ``base + position``): one
    stores an interval at the O(log n) nodes that tile it, so the nodes on the path from
    a's leaf to the root hold exactly the intervals containing a; the other stores it at
    every ancestor of its start's leaf, so the nodes tiling [a + 1, b] hold exactly those
    that start inside. Together: every interval meeting [a, b], each once.
    """

    def __init__(self, n: int):
        self.base = 1 << max(n - 1, 1).bit_length()
        self.tiles: dict[int, list[int]] = {}
        self.starts: dict[int, list[int]] = {}

    def add(self, ident: int, a: int, b: int) -> None:
        """Index interval [a, b] (positions in [0, n)) under ``ident``."""
        node = a + self.base
        while node:
            self.starts.setdefault(node, []).append(ident)
            node >>= 1
        for node in self._tiling(a, b):
            self.tiles.setdefault(node, []).append(ident)

    def meeting(self, a: int, b: int) -> list[int]:
        """The ids of the indexed intervals that share a position with [a, b]."""
        found: list[int] = []
        tiles, starts = self.tiles, self.starts
        node = a + self.base
        while node:
            if node in tiles:
                found += tiles[node]
            node >>= 1
        for node in self._tiling(a + 1, b):
            if node in starts:
                found += starts[node]
        return found

    def _tiling(self, a: int, b: int) -> list[int]:
        """The segment tree nodes that tile [a, b] exactly (none when a > b)."""
        nodes = []
        lo, hi = a + self.base, b + self.base + 1
        while lo < hi:
            if lo & 1:
                nodes.append(lo)
                lo += 1
            if hi & 1:
                hi -= 1
                nodes.append(hi)
            lo >>= 1
            hi >>= 1
        return nodes


def print_memory_plan(graph: Graph, plan: MemoryPlan) -> str:
    """The plan as text, one arena buffer a line in op order, then the free ops:

    // arena 802816 bytes (unshared 4816896), 12 buffers
    // %conv_1 @0 +401408 ops 3..5 (with %flat_1)
    """
    sharing: dict[str, list[str]] = {}
    for name, root in plan.alias_of.items():
        if name != root and plan.storage.get(name) == "arena":
            sharing.setdefault(root, []).append(name)
    lines = [
        f"// arena {plan.arena_bytes} bytes (unshared {plan.unshared_bytes}), "
        f"{len(plan.buffers)} buffers"
    ]
    for b in plan.buffers:
        with_ = sharing.get(b.value, [])
        also = f" (with {', '.join(format_name(n) for n in with_)})" if with_ else ""
        where = f"@{b.offset} +{b.size} ops {b.first}..{b.last}"
        lines.append(f"// {format_name(b.value)} {where}{also}")
    order = {r.name: i for i, op in enumerate(graph.ops) for r in op.results}
    free = sorted(plan.free, key=lambda n: order.get(n, 0))
    if free:
        lines.append("// no kernel (views): " + ", ".join(format_name(n) for n in free))
    return "\n".join(lines) + "\n"
