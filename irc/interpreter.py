"""The reference interpreter: runs any graph op by op through ``irc.reference``.

It validates inputs against the graph's signature (binding symbolic dimensions), calls
observers after each op (calibration and sensitivity hook in here), and frees each value
after its last use, so peak memory stays near that of the largest live set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from irc.errors import InputError, IrcError
from irc.ir import Graph, Op
from irc.reference import evaluate_op

Observer = Callable[[Op, list[np.ndarray], list[np.ndarray]], None]


class ExecutionError(IrcError):
    """An op failed while running; the message names the op."""


def check_inputs(graph: Graph, inputs) -> list[np.ndarray]:
    """``inputs`` (a sequence, or a mapping by input name) as arrays in input order.

    Raises InputError naming the input when the count, names, dtype or shape is wrong.
    """
    expected = [v.name for v in graph.inputs]
    if isinstance(inputs, Mapping):
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        if missing or extra:
            raise InputError(
                f"inputs do not match the model: missing {missing}, unknown "
                f"{extra}; the model takes {expected}"
            )
        arrays = [inputs[n] for n in expected]
    else:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        arrays = list(inputs)
        if len(arrays) != len(expected):
            raise InputError(
                f"the model takes {len(expected)} input(s) {expected}, got {len(arrays)}"
            )
    bindings: dict[str, int] = {}
    checked = []
    for value, array in zip(graph.inputs, arrays):
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"input '{value.name}' must be a numpy array, got {type(array).__name__}"
            )
        want = value.type
        if array.dtype != want.dtype.numpy:
            raise InputError(
                f"input '{value.name}' must have dtype {want.dtype.numpy} "
                f"({want.dtype.short}), got {array.dtype}"
            )
        if array.ndim != want.rank:
            raise InputError(
                f"input '{value.name}' must have shape {_shape_text(want.shape)}, "
                f"got {list(array.shape)}"
            )
        for axis, (d, n) in enumerate(zip(want.shape, array.shape)):
            if isinstance(d, str):
                if bindings.setdefault(d, n) != n:
                    raise InputError(
                        f"input '{value.name}' axis {axis} is '{d}' = "
                        f"{bindings[d]} elsewhere, got {n}"
                    )
            elif d != n:
                raise InputError(
                    f"input '{value.name}' must have shape "
                    f"{_shape_text(want.shape)}, got {list(array.shape)}"
                )
        checked.append(array)
    return checked


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def last_uses(graph: Graph) -> dict[int, list[int]]:
    """For each op index, the ids of values whose last use is that op (outputs excluded)."""
    last: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for v in op.operands:
            last[id(v)] = i
    keep = {id(v) for v in graph.outputs}
    out: dict[int, list[int]] = {}
    for vid, i in last.items():
        if vid not in keep:
            out.setdefault(i, []).append(vid)
    return out


def run_graph(graph: Graph, inputs, observers: Sequence[Observer] = ()) -> list[np.ndarray]:
    """Run ``graph`` on ``inputs`` in the reference; returns the outputs in order."""
    env: dict[int, np.ndarray] = {}
    for value, array in zip(graph.inputs, check_inputs(graph, inputs)):
        env[id(value)] = array
    frees = last_uses(graph)
    for i, op in enumerate(graph.ops):
        args = [env[id(v)] for v in op.operands]
        try:
            results = evaluate_op(op, args)
        except IrcError:
            raise
        except (ValueError, TypeError, IndexError, ArithmeticError, MemoryError) as e:
            raise ExecutionError(f"op {op.label()} failed: {e}") from e
        for value, array in zip(op.results, results):
            if value.type.is_static and tuple(array.shape) != value.type.shape:
                raise ExecutionError(
                    f"op {op.label()} produced shape {list(array.shape)}, its "
                    f"type says {value.type}"
                )
            env[id(value)] = array
        for observer in observers:
            observer(op, args, results)
        for vid in frees.get(i, ()):
            env.pop(vid, None)
    return [env[id(v)] for v in graph.outputs]
