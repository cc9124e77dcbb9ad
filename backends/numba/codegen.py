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

import numba
import numpy as np

from irc.backends.numba.float_blas import blas_threads, set_blas_threads
from irc.backends.numba.kernel_table import BackendError, bind_kernel
from irc.constant_folding import format_bytes
from irc.errors import IrcError
from irc.ir import Graph, Op
from irc.memory_plan import ALIGNMENT, MemoryPlan
from irc.opdef import has_trait
from irc.printer import format_name
from irc.tensor import ElidedTensor


@dataclass
class Program:
    """A compiled graph: driver sources and the objects they name (kernels, constants).

    ``calls`` are the ops of the kernel calls in order; ``steps`` every op the observed
    driver reports, in order (the kernel calls and the ops whose result is a view of
    storage that already holds it)."""

    graph: Graph
    plan: MemoryPlan
    sources: dict[str, str]  # driver function name -> its source
    symbols: dict[str, object]
    views: dict[str, tuple[int, np.dtype, tuple[int, ...]]]  # name -> (offset, dtype, shape)
    calls: list[Op] = field(default_factory=list)
    steps: list[Op] = field(default_factory=list)
    kernel_names: dict[int, str] = field(default_factory=dict)  # id(op) -> its kernel's name
    warmed: bool = False  # has run once in this process (so Numba compiled its kernels)

    @property
    def source(self) -> str:
        """The plain driver's source."""
        return self.sources["run"]


def _comment(op: Op) -> str:
    results = ", ".join(format_name(r.name) for r in op.results)
    loc = f" loc({json.dumps(op.name)})" if op.name else ""
    return f"  # {results} = {op.kind}{loc}"


@dataclass(frozen=True)
class _Step:
    """One line of the driver body: a kernel call (``call`` its index) or a view."""

    line: str
    call: int | None = None  # the kernel call's index, None for a view line
    step: int | None = None  # index into ``Program.steps`` (None: not reported)
    args: str = ""  # the operand and result expressions, for observers
    results: str = ""


def generate_program(graph: Graph, plan: MemoryPlan) -> Program:
    """Bind every op's kernel and write the driver; BackendError names an op that fails."""
    names: dict[str, str] = {}  # value name -> Python expression in the driver
    symbols: dict[str, object] = {}
    views: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
    params = [f"x{i}" for i in range(len(graph.inputs))]
    body: list[_Step] = [_Step(f"    {p} = _contiguous({p})") for p in params]
    calls: list[Op] = []
    steps: list[Op] = []
    kernel_names: dict[int, str] = {}
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

    def observed(op) -> tuple[int, str, str]:
        steps.append(op)
        args = "".join(f"{names[v.name]}, " for v in op.operands)
        results = "".join(f"{names[r.name]}, " for r in op.results)
        return len(steps) - 1, args, results

    for op in graph.ops:
        if has_trait(op.kind, "constant"):
            names[op.result.name] = constant(_constant_array(op))
            continue
        if op.results[0].name in plan.free:
            # a view of storage that already holds the data, made once where it can be
            (result,) = op.results
            source = names[op.operands[0].name]
            where = plan.storage[result.name]
            shape = list(result.type.shape)
            if where == "constant":  # computed from constants alone: nothing to report
                names[result.name] = constant(symbols[source].reshape(result.type.shape))
                continue
            if op.kind == "concat":
                names[result.name] = arena_view(result)
                line = f"    # {names[result.name]}: its operands wrote it{_comment(op)}"
            elif where == "arena":
                names[result.name] = arena_view(result)
                line = f"    # {names[result.name]} = {source} viewed as {shape}{_comment(op)}"
            else:
                names[result.name] = ident = f"a{len(names)}"
                line = f"    {ident} = {source}.reshape({result.type.shape}){_comment(op)}"
            body.append(_Step(line, None, *observed(op)))
            continue
        kernel = f"k{len(calls)}"
        symbols[kernel] = _bind(op)
        kernel_names[id(op)] = kernel
        for r in op.results:
            names[r.name] = arena_view(r)
        args = [names[v.name] for v in op.operands] + [names[r.name] for r in op.results]
        line = f"    {kernel}({', '.join(args)}){_comment(op)}"
        body.append(_Step(line, len(calls), *observed(op)))
        calls.append(op)

    outputs = "".join(f"{names[v.name]}.copy(), " for v in graph.outputs)
    ret = f"    return ({outputs.rstrip()})"
    sources = {
        "run": _render("run", params, body, ret),
        "run_profiled": _render("run_profiled", params + ["_times"], body, ret, "timed"),
        "run_observed": _render("run_observed", ["_observers"] + params, body, ret, "observed"),
        "run_range": _render("run_range", ["_start", "_stop"] + params, body, ret, "ranged"),
    }
    return Program(graph, plan, sources, symbols, views, calls, steps, kernel_names)


def _render(name: str, params: list[str], body: list[_Step], ret: str, mode: str = "") -> str:
    """Driver source from body steps. ``mode``: "" plain; "timed" (``_times[i]`` holds
    call i's seconds, nan until it returns); "observed" (after each reported step, every
    observer gets its op, operand arrays and result arrays); "ranged" (only calls with
    index in ``range(_start, _stop)`` run: the arena holds whatever earlier calls left).

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
    for step in body:
        if step.call is None:
            lines.append("    " + step.line)
        elif mode == "timed":
            lines += ["        _t = _clock()", "    " + step.line]
            lines.append(f"        _times[{step.call}] = _clock() - _t")
        elif mode == "ranged":
            lines += [f"        if _start <= {step.call} < _stop:", "        " + step.line]
        else:
            lines.append("    " + step.line)
        if mode == "observed" and step.step is not None:
            lines += [
                "        for _observe in _observers:",
                f"            _observe(_steps[{step.step}], ({step.args}), ({step.results}))",
            ]
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


def _allocate_arena(plan: MemoryPlan) -> np.ndarray:
    """The arena's bytes plus room to align them; BackendError (naming the largest buffer)
    when the host cannot allocate them, instead of numpy's raw MemoryError."""
    try:
        return np.empty(plan.arena_bytes + ALIGNMENT, np.uint8)
    except MemoryError:
        largest = max(plan.buffers, key=lambda b: b.size)
        raise BackendError(
            f"the model's arena of {format_bytes(plan.arena_bytes)} cannot be allocated "
            f"(its largest buffer, {format_name(largest.value)}, takes "
            f"{format_bytes(largest.size)}); "
            "compile it for smaller input shapes"
        ) from None


@dataclass(frozen=True)
class Snapshot:
    """The arena as it was just before kernel call ``call`` of a run (``Driver.snapshot``):
    the bytes of the buffers live there (``ranges``: (start, end) in the arena), one after
    the other in ``arena``; what the calls from ``call`` on read and nothing else."""

    call: int
    arena: np.ndarray
    ranges: tuple[tuple[int, int], ...] = ()


class Driver:
    """One instance of a Program, with its own arena: the backend's run and instrumentation
    API. Observers, kernel replacement and snapshots address ops of ``program.graph``.

    - ``run(*inputs)``: the outputs (fresh arrays).
    - ``run_observed(observers, *inputs)``: the same, calling each ``observer(op, args,
      results)`` after every op that computes a value (the interpreter's hook signature;
      ``args`` and ``results`` are the arrays the kernel read and wrote, views of the arena
      that later ops overwrite: copy what you keep).
    - ``replace_kernel(op, fn)`` / ``restore_kernel(op)`` / ``kernel(op)``: run ``fn(*operand
      arrays, *result arrays)`` (writing the results in place) instead of ``op``'s kernel.
    - ``snapshot(op, *inputs, start=None)`` and ``run_from(snapshot, *inputs)``: run up to
      ``op`` once, then from ``op`` to the end as often as wanted (each time from the same
      arena state).
    """

    def __init__(self, program: Program, num_threads: int):
        self.program = program
        self.num_threads = num_threads
        size = program.plan.arena_bytes
        raw = _allocate_arena(program.plan)
        start = (-raw.ctypes.data) % ALIGNMENT
        self._arena = raw[start : start + size]
        namespace: dict[str, object] = dict(program.symbols)
        for ident, (offset, dtype, shape) in program.views.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            namespace[ident] = self._arena[offset : offset + nbytes].view(dtype).reshape(shape)
        namespace.update(
            _set_threads=numba.set_num_threads,
            _get_threads=numba.get_num_threads,
            _get_blas_threads=blas_threads,
            _set_blas_threads=set_blas_threads,
            _threads=num_threads,
            _contiguous=np.ascontiguousarray,
            _clock=time.perf_counter,
            _steps=program.steps,
        )
        self._namespace = namespace  # the drivers' globals: kernels, constants, views
        self.run = self._function("run")
        self._call_of = {id(op): i for i, op in enumerate(program.calls)}
        self._position = {id(op): i for i, op in enumerate(program.graph.ops)}

    def _function(self, name: str):
        """The driver function ``name``, compiled on first use: the instrumented variants
        cost Python's compiler most of a long graph's compile time (a 100k-op chain: about
        9 s of 11), and most models never call them."""
        function = self._namespace.get(name)
        if function is None:
            source = self.program.sources[name]
            exec(compile(source, f"<irc driver {name}>", "exec"), self._namespace)
            function = self._namespace[name]
        return function

    @property
    def run_profiled(self):
        """The driver that times every kernel call (``_times[i]``: call i's seconds)."""
        return self._function("run_profiled")

    @property
    def _run_observed(self):
        return self._function("run_observed")

    @property
    def _run_range(self):
        return self._function("run_range")

    def set_num_threads(self, num_threads: int) -> None:
        """Run the following calls on ``num_threads`` Numba (and BLAS) threads."""
        self.num_threads = num_threads
        self._namespace["_threads"] = num_threads

    @property
    def arena_bytes(self) -> int:
        """Bytes of this instance's arena."""
        return self._arena.nbytes

    def run_observed(self, observers, *inputs) -> tuple[np.ndarray, ...]:
        """Run, calling every ``observer(op, args, results)`` after each op (see the class)."""
        return self._run_observed(tuple(observers), *inputs)

    def _kernel_name(self, op: Op) -> str:
        self._call_index(op)  # BackendError for an op of another graph
        return self.program.kernel_names[id(op)]

    def _call_index(self, op: Op) -> int:
        """The index of ``op``'s kernel call; BackendError if it has none in this program."""
        try:
            return self._call_of[id(op)]
        except KeyError:
            raise BackendError(
                f"op {op.label()} is not a kernel call of this program (give an op of its graph)"
            ) from None

    def kernel(self, op: Op):
        """The kernel function ``op`` runs now (its own, or the one that replaced it)."""
        return self._namespace[self._kernel_name(op)]

    def replace_kernel(self, op: Op, fn) -> None:
        """Run ``fn(*operands, *results)`` for ``op`` from now on (results written in place)."""
        self._namespace[self._kernel_name(op)] = fn

    def restore_kernel(self, op: Op) -> None:
        """Run ``op``'s own kernel again."""
        name = self._kernel_name(op)
        self._namespace[name] = self.program.symbols[name]

    def snapshot(self, op: Op, *inputs, start: Snapshot | None = None) -> Snapshot:
        """Run the calls before ``op`` (from ``start`` when given, else from the first) and
        keep the arena as they leave it."""
        at = self._call_index(op)
        first = 0
        if start is not None:
            if start.call > at:
                raise ValueError(f"snapshot at call {start.call} is past op {op.label()}")
            self._restore(start)
            first = start.call
        self._run_range(first, at, *inputs)
        ranges = self._live_ranges(op)
        kept = [self._arena[a:b] for a, b in ranges]
        return Snapshot(at, np.concatenate(kept) if kept else self._arena[:0].copy(), ranges)

    def run_from(self, snapshot: Snapshot, *inputs) -> tuple[np.ndarray, ...]:
        """The outputs of a run resumed at ``snapshot`` (the calls before it are skipped:
        their results are the snapshot's)."""
        self._restore(snapshot)
        return self._run_range(snapshot.call, len(self.program.calls), *inputs)

    def _live_ranges(self, op: Op) -> tuple[tuple[int, int], ...]:
        """The arena's byte ranges of the buffers live when ``op`` is about to run (made
        before it, read by it or after it), merged where they touch."""
        position = self._position[id(op)]
        spans = sorted((b.offset, b.end) for b in self.program.plan.buffers
                       if b.first < position <= b.last)  # fmt: skip
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return tuple((a, b) for a, b in merged)

    def _restore(self, snapshot: Snapshot) -> None:
        """Put ``snapshot``'s live bytes back where they were in the arena."""
        at = 0
        for a, b in snapshot.ranges:
            self._arena[a:b] = snapshot.arena[at : at + b - a]
            at += b - a

    def failing_op(self, arrays) -> tuple[Op | None, BaseException | None]:
        """Re-run step by step to find the op that raises on ``arrays`` (for error messages)."""
        times = np.full(len(self.program.calls), np.nan)
        try:
            self.run_profiled(*arrays, times)
        except Exception as e:  # noqa: BLE001 - the caller reports it, naming the op
            done = int(np.sum(~np.isnan(times)))
            return self.program.calls[min(done, len(times) - 1)], e
        return None, None
