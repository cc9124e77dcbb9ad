"""Checks the IR's invariants and reports every violation at once.

Checked: each operand is defined before its use (inputs or earlier ops), use-lists match
operands exactly, value names are unique, every op kind is in the op table with valid
attributes and operand count, stored result types equal re-inferred ones, the constant
payloads type rules cannot see are in range (an integer layer's requantization multiplier
and shift, ``irc.ops.quant.PAYLOAD_RULES``), and the graph outputs are defined values.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from irc.errors import IrcError, VerifyError
from irc.ir import Graph
from irc.opdef import OPS, has_trait, infer_types
from irc.ops.quant import PAYLOAD_RULES


def verify_graph(graph: Graph) -> None:
    """Raise VerifyError listing every problem in ``graph``; return None when it is sound."""
    problems = collect_problems(graph)
    if problems:
        raise VerifyError(problems)


def collect_problems(graph: Graph) -> list[str]:
    """Every invariant violation in ``graph``, as human-readable lines."""
    problems: list[str] = []
    defined: set[int] = {id(v) for v in graph.inputs}
    names = Counter(v.name for v in graph.values())
    problems += [f"value name %{n} is defined {c} times" for n, c in names.items() if c > 1]
    expected_uses: Counter = Counter()

    for op in graph.ops:
        where = f"op {op.label()}"
        if op.graph is not graph:
            problems.append(f"{where} does not belong to graph {graph.name}")
        for i, operand in enumerate(op.operands):
            expected_uses[(id(operand), id(op), i)] += 1
            if id(operand) not in defined:
                problems.append(
                    f"{where}: operand {i} %{operand.name} is used before it is "
                    "defined (or not defined in this graph)"
                )
        for i, r in enumerate(op.results):
            if r.producer is not op or r.result_index != i:
                problems.append(f"{where}: result {i} %{r.name} does not point back to its op")
            defined.add(id(r))
        spec = OPS.get(op.kind)
        if spec is None:
            problems.append(f"{where}: unknown op kind '{op.kind}'")
            continue
        try:
            attrs = spec.normalize_attrs(op.attrs, where)
            if attrs != op.attrs and set(attrs) != set(op.attrs):
                problems.append(f"{where}: attributes are not normalised (missing defaults)")
            inferred = infer_types(op.kind, [o.type for o in op.operands], attrs, where)
        except IrcError as e:
            problems.append(str(e))
            continue
        stored = [r.type for r in op.results]
        if [_strip(t) for t in inferred] != [_strip(t) for t in stored]:
            problems.append(
                f"{where}: result types {[str(t) for t in stored]} differ from inferred "
                f"{[str(t) for t in inferred]}"
            )
        elif op.kind in PAYLOAD_RULES:
            problems += [f"{where}: {p}" for p in _payload_problems(op)]

    actual_uses: Counter = Counter()
    for v in graph.values():
        for use in v.uses:
            actual_uses[(id(v), id(use.op), use.index)] += 1
    if actual_uses != expected_uses:
        problems.append(
            "use-lists do not match operands "
            f"({sum((actual_uses - expected_uses).values())} stale, "
            f"{sum((expected_uses - actual_uses).values())} missing)"
        )
    for out in graph.outputs:
        if id(out) not in defined:
            problems.append(f"graph output %{out.name} is not defined in the graph")
    if not graph.outputs:
        problems.append("graph has no outputs")
    return problems


def _payload_problems(op) -> list[str]:
    """What ``PAYLOAD_RULES`` finds wrong with the constant operands of ``op`` (the payloads
    of ``constant`` / unpacked ``qconstant`` producers; other operands are not read)."""
    indices, rule = PAYLOAD_RULES[op.kind]
    payloads = {}
    for index in indices:
        if index < len(op.operands):
            producer = op.operands[index].producer
            if producer is None or not has_trait(producer.kind, "constant"):
                continue
            value = producer.attrs.get("value")
            if isinstance(value, np.ndarray) and not producer.attrs.get("packed"):
                payloads[index] = value
    return rule(payloads) if payloads else []


def _strip(t):
    """Types compare without quantization parameters (the float rules do not infer them)."""
    return (t.dtype, t.shape)
