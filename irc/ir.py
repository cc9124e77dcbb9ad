"""The irc graph IR: SSA values with use-lists, ops, and graphs.

A ``Graph`` holds its ops in a list that is always a valid topological order. Each ``Value``
is produced by exactly one op (or is a graph input) and knows its uses, so rewrites such as
``replace_all_uses_with`` are O(uses). Ops are generic: what an op kind means (operands,
attributes, type inference) is declared in the op table (``irc.opdef``), and what it
computes is defined once, in the reference (``irc.reference``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from irc.types import TensorType


@dataclass(frozen=True)
class Use:
    """One use of a value: operand ``index`` of ``op``."""

    op: Op
    index: int


class Value:
    """An SSA value: a graph input or one result of an op."""

    __slots__ = ("name", "type", "producer", "result_index", "uses", "__weakref__")

    def __init__(self, name: str, type: TensorType, producer: Op | None = None, index: int = 0):
        self.name = name
        self.type = type
        self.producer = producer
        self.result_index = index
        self.uses: list[Use] = []

    @property
    def is_graph_input(self) -> bool:
        return self.producer is None

    def users(self) -> list[Op]:
        """The distinct ops that use this value, in use order."""
        seen: dict[int, Op] = {}
        for use in self.uses:
            seen.setdefault(id(use.op), use.op)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Op:
    """An operation: a kind from the op table, operand values, result values, attributes.

    ``name`` is the node name it came from (for errors and reports); it may be empty.
    """

    __slots__ = ("kind", "operands", "results", "attrs", "name", "graph", "__weakref__")

    def __init__(self, kind: str, attrs: dict[str, Any], name: str = ""):
        self.kind = kind
        self.operands: list[Value] = []
        self.results: list[Value] = []
        self.attrs = attrs
        self.name = name
        self.graph: Graph | None = None

    @property
    def result(self) -> Value:
        """The single result of a one-result op."""
        if len(self.results) != 1:
            raise ValueError(f"op {self.kind} has {len(self.results)} results, not one")
        return self.results[0]

    def label(self) -> str:
        """How errors name this op: its node name, else its first result."""
        if self.name:
            return f"'{self.name}' ({self.kind})"
        if self.results:
            return f"%{self.results[0].name} ({self.kind})"
        return self.kind

    def __repr__(self) -> str:
        res = ", ".join("%" + r.name for r in self.results)
        ops = ", ".join("%" + o.name for o in self.operands)
        return f"<Op {res} = {self.kind}({ops})>"


class Graph:
    """A function-like graph: inputs, ops in topological order, outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.ops: list[Op] = []
        self._values: dict[str, Value] = {}
        self._counter = itertools.count()

    # ----------------------------------------------------------------- names and lookup
    def value(self, name: str) -> Value:
        """The value called ``name``; KeyError if there is none."""
        return self._values[name]

    def has_value(self, name: str) -> bool:
        return name in self._values

    def values(self):
        """All values of the graph: inputs, then results in op order."""
        yield from self.inputs
        for op in self.ops:
            yield from op.results

    def fresh_name(self, hint: str = "") -> str:
        """A value name not used yet in this graph, derived from ``hint``."""
        if hint and hint not in self._values:
            return hint
        base = hint or "v"
        while True:
            candidate = f"{base}.{next(self._counter)}" if hint else str(next(self._counter))
            if candidate not in self._values:
                return candidate

    def _register(self, value: Value) -> None:
        if value.name in self._values:
            raise ValueError(f"value name %{value.name} is already defined")
        self._values[value.name] = value

    def rename(self, value: Value, new_name: str) -> None:
        """Give ``value`` a new (unused) name."""
        if new_name == value.name:
            return
        if new_name in self._values:
            raise ValueError(f"value name %{new_name} is already defined")
        del self._values[value.name]
        value.name = new_name
        self._values[new_name] = value

    # ----------------------------------------------------------------- construction
    def add_input(self, name: str, type: TensorType) -> Value:
        """Append a graph input."""
        value = Value(self.fresh_name(name), type)
        self._register(value)
        self.inputs.append(value)
        return value

    def create_op(
        self,
        kind: str,
        operands: list[Value],
        attrs: dict[str, Any],
        result_types: list[TensorType],
        *,
        name: str = "",
        result_names: list[str] | None = None,
        index: int | None = None,
    ) -> Op:
        """Insert an op whose types are already known (at ``index``, default the end).

        Most code should call ``irc.opdef.build`` instead, which checks attributes and
        infers result types from the op table.
        """
        op = Op(kind, dict(attrs), name)
        names = result_names or [""] * len(result_types)
        for i, (t, n) in enumerate(zip(result_types, names)):
            v = Value(self.fresh_name(n or (name if len(result_types) == 1 else "")), t, op, i)
            self._register(v)
            op.results.append(v)
        for i, operand in enumerate(operands):
            op.operands.append(operand)
            operand.uses.append(Use(op, i))
        op.graph = self
        if index is None:
            self.ops.append(op)
        else:
            self.ops.insert(index, op)
        return op

    def index_of(self, op: Op) -> int:
        """Position of ``op`` in the op list."""
        for i, candidate in enumerate(self.ops):
            if candidate is op:
                return i
        raise ValueError(f"{op!r} is not in graph {self.name}")

    def set_operand(self, op: Op, index: int, value: Value) -> None:
        """Make operand ``index`` of ``op`` refer to ``value``, keeping use-lists right."""
        old = op.operands[index]
        old.uses = [u for u in old.uses if not (u.op is op and u.index == index)]
        op.operands[index] = value
        value.uses.append(Use(op, index))

    def replace_all_uses_with(self, old: Value, new: Value) -> int:
        """Point every use of ``old`` (and graph outputs) at ``new``; returns the count."""
        count = 0
        for use in list(old.uses):
            self.set_operand(use.op, use.index, new)
            count += 1
        for i, out in enumerate(self.outputs):
            if out is old:
                self.outputs[i] = new
                count += 1
        return count

    def erase_op(self, op: Op) -> None:
        """Remove ``op``; its results must be unused and not graph outputs."""
        for r in op.results:
            if r.uses or any(r is o for o in self.outputs):
                raise ValueError(f"cannot erase {op.label()}: result %{r.name} is still used")
        for i, operand in enumerate(op.operands):
            operand.uses = [u for u in operand.uses if not (u.op is op and u.index == i)]
        self.ops.pop(self.index_of(op))
        for r in op.results:
            del self._values[r.name]
        op.graph = None

    def remove_dead_ops(self) -> int:
        """Erase ops whose results are all unused (iterating to a fixed point)."""
        erased = 0
        outputs = {id(v) for v in self.outputs}
        for op in reversed(list(self.ops)):
            if all(not r.uses and id(r) not in outputs for r in op.results):
                self.erase_op(op)
                erased += 1
        return erased

    # ----------------------------------------------------------------- copies
    def clone(self) -> Graph:
        """A deep copy of the structure; attribute values (numpy arrays) are shared."""
        copy = Graph(self.name)
        mapping: dict[int, Value] = {}
        for v in self.inputs:
            mapping[id(v)] = copy.add_input(v.name, v.type)
        for op in self.ops:
            new = copy.create_op(
                op.kind,
                [mapping[id(o)] for o in op.operands],
                dict(op.attrs),
                [r.type for r in op.results],
                name=op.name,
                result_names=[r.name for r in op.results],
            )
            for r, nr in zip(op.results, new.results):
                mapping[id(r)] = nr
        copy.outputs = [mapping[id(v)] for v in self.outputs]
        return copy

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.ops)} ops>"
