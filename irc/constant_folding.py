"""Constant folding: evaluate every op whose operands are all constants, through the
reference (``irc.reference``, the one meaning of every op), and replace it by a constant op
whose result keeps the op's result name. The ``constant-fold`` pass runs it over a graph;
the ONNX importer folds each node's new ops as it converts them (so shape computations
vanish at import).

Not folded: constants without data (elided from a dump), ops the reference cannot run, and
ops whose computed array would not have the result's type (a quantized result type, say,
which an array alone cannot carry).
"""

from __future__ import annotations

import numpy as np

from irc.ir import Graph, Value
from irc.matching import constant_array
from irc.opdef import build
from irc.reference import REFERENCE, evaluate_op
from irc.types import type_of_array


def fold_constants(graph: Graph, start: int = 0) -> dict[int, Value]:
    """Fold the ops from index ``start`` on whose operands are all constants with data.

    Folding cascades: a folded op's constant feeds later ops in the same sweep. Returns the
    replacements, ``id(old value) -> new constant value``; the old operands are left in the
    graph (callers may still refer to them) and may now be dead.
    """
    replaced: dict[int, Value] = {}
    i = start
    while i < len(graph.ops):
        op = graph.ops[i]
        arrays = [constant_array(v) for v in op.operands]
        if not op.operands or any(a is None for a in arrays) or op.kind not in REFERENCE:
            i += 1
            continue
        outputs = [np.asarray(a, order="C") for a in evaluate_op(op, arrays)]
        if len(outputs) != len(op.results) or any(
            type_of_array(a) != r.type for a, r in zip(outputs, op.results)
        ):
            i += 1
            continue
        for k, (r, array) in enumerate(zip(list(op.results), outputs)):
            name = r.name
            # the constant takes the name, so the old result steps aside first
            graph.rename(r, graph.fresh_name(name + ".folded"))
            const = build(graph, "constant", [], {"value": array}, result_names=[name], index=i + k)
            graph.replace_all_uses_with(r, const.result)
            replaced[id(r)] = const.result
        graph.erase_op(op)
        i += len(outputs)
    return replaced
