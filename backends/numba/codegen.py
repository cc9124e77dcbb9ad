"""The generated driver: one Python function that calls the bound kernels over one arena.

``generate_program`` binds a kernel function to every op (``bind_kernel``) and writes the
driver's source text, one kernel call a line:

    def run(x0):
        _caller_threads = _get_threads()
        _caller_blas_threads = _get_blas_threads()
        _set_threads(_threads)
        try:
            x0 = _contiguous(x0)
            k0(x0, c0, c1, v2)  # %conv_1 = conv2d loc("conv_1")
            k1(v2, v3)  # %relu_1 = relu
            return (v3.copy(),)
        finally:
            _set_threads(_caller_threads)
            _set_blas_threads(_caller_blas_threads)

``k*`` are kernel functions, ``c*`` constants, ``v*`` views into the arena at offsets
fixed by the memory plan, ``x*`` the inputs. A ``Program`` holds the source and the
kernels and constants it names; ``Driver`` instantiates it with an arena of its own
(views are made once, at instantiation), so the per-call cost is the kernel calls alone.
Graph outputs are copied out of the arena, so callers may keep them across calls.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from irc.backends.numba.float_blas import blas_threads, set_blas_threads
from irc.backends.numba.kernel_table import BackendError, bind_kernel
from irc.errors import IrcError
from irc.ir import Graph, Op
from irc.passes.plan_memory import ALIGNMENT, MemoryPlan
from irc.printer import format_name
from irc.tensor import ElidedTensor


@dataclass
class Program:
    """A compiled graph: driver sources and the objects they name (kernels, constants)."""

    graph: Graph
    plan: MemoryPlan
    source: str
    profile_source: str
    range_source: str
    symbols: dict[str, object]
    views: dict[str, tuple[int, np.dtype, tuple[int, ...]]]  # name -> (offset, dtype, shape)
    calls: list[Op] = field(default_factory=list)  # the op of each kernel call, in order
    warmed: bool = False  # has run once in this process (so Numba compiled its kernels)


def _comment(op: Op) -> str:
    results = ", ".join(format_name(r.name) for r in op.results)
    loc = f" loc({json.dumps(op.name)})" if op.name else ""
    return f"  # {results} = {op.kind}{loc}"


def generate_program(graph: Graph, plan: MemoryPlan) -> Program:
    """Bind every op's kernel and write the driver; BackendError names an op that fails."""
    names: dict[str, str] = {}  # value name -> Python expression in the driver
    symbols: dict[str, object] = {}
    views: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
    params = [f"x{i}" for i in range(len(graph.inputs))]
    body: list = [f"    {p} = _contiguous({p})" for p in params]
    calls: list[Op] = []
    constants = 0

    def constant(array: np.ndarray) -> str:
        nonlocal constants
        ident, constants = f"c{constants}", constants + 1
        symbols[ident] = array
        return ident

    for p, value in zip(params, graph.inputs):
        names[value.name] = p

    def arena_view(value) -> str:
        ident = f"v{len(views)}"
        views[ident] = (plan.offsets[value.name], value.type.dtype.numpy, value.type.shape)
        return ident

    for op in graph.ops:
        if op.kind in ("constant", "qconstant"):
            names[op.result.name] = constant(_constant_array(op))
            continue
        if op.results[0].name in plan.free:
            # a view of storage that already holds the data, made once where it can be
            (result,) = op.results
            source = names[op.operands[0].name]
            where = plan.storage[result.name]
            shape = list(result.type.shape)
            if op.kind == "concat":
                names[result.name] = arena_view(result)
                body.append(f"    # {names[result.name]}: its operands wrote it{_comment(op)}")
            elif where == "arena":
                names[result.name] = arena_view(result)
                body.append(
                    f"    # {names[result.name]} = {source} viewed as {shape}{_comment(op)}"
                )
            elif where == "constant":
                names[result.name] = constant(symbols[source].reshape(result.type.shape))
            else:
                names[result.name] = ident = f"a{len(names)}"
                body.append(f"    {ident} = {source}.reshape({result.type.shape}){_comment(op)}")
            continue
        kernel = f"k{len(calls)}"
        symbols[kernel] = _bind(op)
        for r in op.results:
            names[r.name] = arena_view(r)
        args = [names[v.name] for v in op.operands] + [names[r.name] for r in op.results]
        body.append((len(calls), f"    {kernel}({', '.join(args)}){_comment(op)}"))
        calls.append(op)

    outputs = "".join(f"{names[v.name]}.copy(), " for v in graph.outputs)
    ret = f"    return ({outputs.rstrip()})"
    source = _render("run", params, body, ret, timed=False)
    profile_source = _render("run_profiled", params + ["_times"], body, ret, timed=True)
    range_source = _render("run_range", ["_start", "_stop"] + params, body, ret, ranged=True)
    return Program(graph, plan, source, profile_source, range_source, symbols, views, calls)


def _render(
    name: str, params: list[str], body: list, ret: str, timed: bool = False, ranged: bool = False
) -> str:
    """Driver source from body lines; a call is a (index, line) pair, timed if asked, or
    made only when its index is in ``range(_start, _stop)`` if ``ranged`` (the arena then
    holds whatever earlier calls left: the sensitivity analysis resumes runs this way).

    The model's thread count holds during the call only: the caller's Numba and OpenBLAS
    counts are restored after (numpy shares that OpenBLAS, and kernels set its count).
    """
    lines = [
        f"def {name}({', '.join(params)}):",
        "    _caller_threads = _get_threads()",
        "    _caller_blas_threads = _get_blas_threads()",
        "    _set_threads(_threads)",
        "    try:",
    ]
    for item in body:
        if isinstance(item, str):
            lines.append("    " + item)
        elif timed:  # _times[i] stays nan until call i returns
            lines += ["        _t = _clock()", "    " + item[1]]
            lines.append(f"        _times[{item[0]}] = _clock() - _t")
        elif ranged:
            lines += [f"        if _start <= {item[0]} < _stop:", "        " + item[1]]
        else:
            lines.append("    " + item[1])
    lines += [
        "    " + ret,
        "    finally:",
        "        _set_threads(_caller_threads)",
        "        _set_blas_threads(_caller_blas_threads)",
    ]
    return "\n".join(lines) + "\n"


def _constant_array(op: Op) -> np.ndarray:
    """A constant's payload as the kernels see it: a qconstant's stored levels, and packed
    bytes for a packed one (kernels read the bits in place)."""
    value = op.attrs["value"]
    if isinstance(value, ElidedTensor):
        raise BackendError(
            f"op {op.label()}: the constant was dumped without its data; compile a graph "
            "printed with full constants"
        )
    # Read-only, always: kernels must not write constants, and Numba compiles a kernel once
    # per operand type, where read-only and writable arrays are different types.
    array = np.ascontiguousarray(value).view()
    array.flags.writeable = False
    return array


def _bind(op: Op):
    try:
        return bind_kernel(op)
    except IrcError:
        raise
    except Exception as e:  # a builder bug still names the op for the user
        raise BackendError(f"op {op.label()}: the Numba kernel could not be bound: {e}") from e


class Driver:
    """One instance of a Program: its own arena, the exec'd ``run`` and ``run_profiled``."""

    def __init__(self, program: Program, num_threads: int):
        import numba

        self.program = program
        self.num_threads = num_threads
        size = program.plan.arena_bytes
        raw = np.empty(size + ALIGNMENT, np.uint8)
        start = (-raw.ctypes.data) % ALIGNMENT
        self.arena = raw[start : start + size]
        namespace: dict[str, object] = dict(program.symbols)
        for ident, (offset, dtype, shape) in program.views.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            namespace[ident] = self.arena[offset : offset + nbytes].view(dtype).reshape(shape)
        namespace.update(
            _set_threads=numba.set_num_threads,
            _get_threads=numba.get_num_threads,
            _get_blas_threads=blas_threads,
            _set_blas_threads=set_blas_threads,
            _threads=num_threads,
            _contiguous=np.ascontiguousarray,
            _clock=time.perf_counter,
        )
        exec(compile(program.source, "<irc driver>", "exec"), namespace)
        exec(compile(program.profile_source, "<irc profiled driver>", "exec"), namespace)
        exec(compile(program.range_source, "<irc ranged driver>", "exec"), namespace)
        self.run = namespace["run"]
        self.run_profiled = namespace["run_profiled"]
        self.run_range = namespace["run_range"]
        self.namespace = namespace  # the drivers' globals: kernels k<i>, constants c<i>

    def failing_op(self, arrays) -> tuple[Op | None, BaseException | None]:
        """Re-run step by step to find the op that raises on ``arrays`` (for error messages)."""
        times = np.full(len(self.program.calls), np.nan)
        try:
            self.run_profiled(*arrays, times)
        except Exception as e:  # noqa: BLE001 - the caller reports it, naming the op
            done = int(np.sum(~np.isnan(times)))
            return self.program.calls[min(done, len(times) - 1)], e
        return None, None
