"""``CompiledModel``: a compiled program, callable, with its report and its public
instrumentation API.

    >>> (logits,) = model(x)                               # or model({"input": x})
    >>> model.run_observed([lambda op, args, results: ...], x)
    >>> op = model.op_named("conv_1"); model.replace_kernel(op, fn); model.restore_kernel(op)
    >>> snap = model.snapshot(op, x); (y,) = model.run_from(snap, x)

The instrumentation is the backend's (``irc.backends.numba.codegen.Driver``): observers
see every op's operand and result arrays as the kernels read and wrote them, a kernel can
be replaced by any function of the same arrays, and a run can resume at an op from a
snapshot of the arena. Analyses (calibration, sensitivity, rounding statistics) use only
this API; nothing outside ``irc.backends`` reads the generated driver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numba
import numpy as np
from numba.core.errors import NumbaError

from irc.backends.numba.codegen import Driver, Program, Snapshot
from irc.backends.numba.isa import kernel_isa
from irc.backends.numba.kernel_table import BackendError
from irc.backends.numba.numba_cache import compile_lock
from irc.errors import InputError
from irc.export_onnx import export_onnx
from irc.interpreter import ExecutionError, check_inputs
from irc.ir import Graph, Op
from irc.memory_plan import print_memory_plan
from irc.precision import layer_name
from irc.report import model_report
from irc.serialize import save_model
from irc.thread_choice import IdleCores, ThreadChooser


@dataclass(frozen=True)
class OpTiming:
    """One kernel call's median time in a ``CompiledModel.profile`` run."""

    op: str
    kind: str
    shape: tuple
    seconds: float


class CompiledModel:
    """A compiled model: call it with arrays (positionally, or a dict by input name).

    ``graph`` is the compiled graph (after the pipeline; shared with the compile cache, so
    treat it as read-only), ``driver_source`` the generated driver, ``stats`` the statistics
    of every pass including ``plan-memory``, ``num_threads`` the most threads a call uses.
    With ``adaptive_threads`` each call runs on 1 or ``num_threads`` threads, whichever its
    recent calls found faster (``irc.thread_choice``): on a busy machine all threads can be
    slower than one; ``calls_by_threads`` counts the runs per count. One model runs one call
    at a time (calls from threads queue on a lock).
    """

    def __init__(self, program: Program, stats, num_threads: int, cache_hit: bool = False,
                 adaptive_threads: bool = False):  # fmt: skip
        self.program = program
        self.stats: list[tuple[str, dict[str, int]]] = list(stats)
        self.cache_hit = cache_hit
        self.compile_seconds: dict[str, float] = {}
        self.calibration = None  # the calibration used (value name -> range), if any
        self.choice = None  # irc.decision.choose.Choice when a strategy chose the precisions
        self._driver = Driver(program, num_threads)
        self._lock = threading.Lock()
        self.num_threads = num_threads
        # one chooser per kind of run: observers add the same cost to both counts
        kinds = ("run", "observed") if adaptive_threads and num_threads > 1 else ()
        self._choosers = {kind: ThreadChooser(num_threads, idle=IdleCores()) for kind in kinds}
        self.calls_by_threads: dict[int, int] = {}  # thread count -> runs made with it

    def with_threads(self, num_threads: int | None) -> CompiledModel:
        """The same compiled program as another model (its own arena) whose calls run on
        ``num_threads`` threads; None: each call chooses between 1 and all of Numba's."""
        most = numba.config.NUMBA_NUM_THREADS if num_threads is None else num_threads
        twin = CompiledModel(self.program, self.stats, most, cache_hit=True,
                             adaptive_threads=num_threads is None)  # fmt: skip
        twin.compile_seconds, twin.calibration, twin.choice = {}, self.calibration, self.choice
        return twin

    @property
    def adaptive_threads(self) -> bool:
        """Whether each call chooses between 1 and ``num_threads`` threads."""
        return bool(self._choosers)

    @property
    def threads_now(self) -> int:
        """The thread count plain calls run with at present."""
        chooser = self._choosers.get("run")
        return chooser.current if chooser is not None else self.num_threads

    @contextmanager
    def _threads_for(self, kind: str | None):
        """Set the driver's thread count for one run of ``kind`` ("run", "observed"; None:
        the present count, not timed) and, when adaptive, record the run's wall time."""
        chooser = self._choosers.get(kind) if kind else None
        threads = chooser.next() if chooser is not None else self.threads_now
        self._driver.set_num_threads(threads)
        self.calls_by_threads[threads] = self.calls_by_threads.get(threads, 0) + 1
        start = time.perf_counter()
        yield
        if chooser is not None:
            chooser.record(threads, time.perf_counter() - start)

    @property
    def graph(self) -> Graph:
        """The graph as compiled: specialised, after the pipeline."""
        return self.program.graph

    @property
    def driver_source(self) -> str:
        """The generated driver's Python source."""
        return self.program.source

    @property
    def arena_bytes(self) -> int:
        """Bytes of the arena holding every intermediate value."""
        return self.program.plan.arena_bytes

    @property
    def calls(self) -> list[Op]:
        """The op of each kernel call, in the order the driver makes them (ops of ``graph``)."""
        return list(self.program.calls)

    def memory_plan(self) -> str:
        """The arena plan as text (``irc.memory_plan.print_memory_plan``)."""
        return print_memory_plan(self.graph, self.program.plan)

    def op_named(self, name: str) -> Op:
        """The kernel call's op named ``name`` (its node name, else its result's name: a
        plan's layer name); InputError when there is none."""
        for op in self.program.calls:
            if layer_name(op) == name:
                return op
        raise InputError(f"the compiled model has no kernel call named {name!r}")

    # ---------------------------------------------------------------- instrumentation
    def run_observed(self, observers, *inputs) -> tuple[np.ndarray, ...]:
        """Run, calling each ``observer(op, args, results)`` after every op that computes a
        value: ``args`` / ``results`` are the arrays its kernel read and wrote (views that
        later ops overwrite: copy what you keep). Returns the outputs."""
        arrays = self._check(inputs)
        with self._lock, self._threads_for("observed"):
            return self._driver.run_observed(observers, *arrays)

    def kernel(self, op: Op):
        """The kernel function ``op`` runs now: ``fn(*operand arrays, *result arrays)``."""
        return self._driver.kernel(op)

    def replace_kernel(self, op: Op, fn) -> None:
        """Run ``fn(*operand arrays, *result arrays)`` (writing the results in place) for
        ``op``, an op of ``calls``, until ``restore_kernel``."""
        with self._lock:
            self._driver.replace_kernel(op, fn)

    def restore_kernel(self, op: Op) -> None:
        """Run ``op``'s own kernel again."""
        with self._lock:
            self._driver.restore_kernel(op)

    def snapshot(self, op: Op, *inputs, start: Snapshot | None = None) -> Snapshot:
        """Run the kernel calls before ``op`` (from ``start``, an earlier snapshot of the
        same inputs, when given) and keep the arena as they leave it."""
        arrays = self._check(inputs)
        with self._lock, self._threads_for(None):
            return self._driver.snapshot(op, *arrays, start=start)

    def run_from(self, snapshot: Snapshot, *inputs) -> tuple[np.ndarray, ...]:
        """The outputs of a run that resumes at ``snapshot`` (taken on the same inputs)."""
        arrays = self._check(inputs)
        with self._lock, self._threads_for(None):
            return self._driver.run_from(snapshot, *arrays)

    def __repr__(self) -> str:
        return (
            f"<CompiledModel @{self.graph.name}: {len(self.program.calls)} kernel calls, "
            f"arena {self.arena_bytes / 1e6:.2f} MB, {self._thread_text()}>"
        )

    def _thread_text(self) -> str:
        if self.adaptive_threads:
            return f"1 or {self.num_threads} threads (now {self.threads_now})"
        return f"{self.num_threads} thread(s)"

    def __call__(self, *inputs) -> tuple[np.ndarray, ...]:
        """Run the model; returns a tuple of the graph's outputs (fresh arrays)."""
        arrays = self._check(inputs)
        with self._lock:
            try:
                with self._threads_for("run"):
                    return self._driver.run(*arrays)
            except Exception as e:  # noqa: BLE001 - re-raised below naming the op
                raise self._failure(arrays, e) from e

    def _check(self, inputs) -> list[np.ndarray]:
        given = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], Mapping) else inputs
        try:
            return check_inputs(self.graph, given)
        except InputError as e:
            if "shape" not in str(e):
                raise
            raise InputError(
                f"{e} (the model was compiled for these shapes; compile with input_shapes "
                "for others)"
            ) from None

    def _failure(self, arrays, error: Exception) -> Exception:
        op, again = self._driver.failing_op(arrays)
        where = f"op {op.label()}" if op is not None else "the driver"
        return ExecutionError(f"{where} failed in the compiled model: {again or error}")

    def warm_up(self) -> None:
        """Run once on zeros so every kernel is compiled (or loaded from Numba's cache; one
        process at a time per cache, so a second one loads what the first compiled).

        BackendError names an op whose kernel Numba cannot compile; other failures are
        left to the first real call (zeros may be invalid data: an index, a divisor).
        """
        zeros = [np.zeros(v.type.shape, v.type.dtype.numpy) for v in self.graph.inputs]
        # an adaptive model runs serial kernels on one thread, parallel ones on more
        counts = (1, self.num_threads) if self.adaptive_threads else (self.num_threads,)
        with self._lock, compile_lock():  # another process warming the same kernels waits
            try:
                for threads in counts:
                    self._driver.set_num_threads(threads)
                    self._driver.run(*zeros)
            except NumbaError:
                op, error = self._driver.failing_op(zeros)
                where = f"op {op.label()}" if op is not None else "the driver"
                summary = str(error).strip().splitlines()[0] if error else ""
                raise BackendError(f"{where}: Numba cannot compile its kernel: {summary}") from None
            except Exception:  # noqa: BLE001 - data-dependent; the real call reports it
                pass
            finally:
                self._driver.set_num_threads(self.threads_now)

    @property
    def kernel_isa(self) -> str:
        """The instruction set the integer kernels run on this machine ('avx512-vnni',
        'avx512', 'avx-vnni', 'avx2' or 'portable'); every one gives the same results."""
        return kernel_isa()

    def report(self):
        """Per layer: op, shape, precision, weight bytes; totals against FP32; and the
        kernels' instruction set."""
        return replace(model_report(self.graph), kernels=self.kernel_isa)

    def save(self, path, *, timestamp: bool = False, measurements: bool = False) -> None:
        """Write the compiled model to one file (``irc.load`` reads it back); the same model
        gives the same bytes unless ``timestamp`` (a creation time) or ``measurements``
        (measured latencies) are asked for (``irc.serialize.save_model``)."""
        save_model(self, path, timestamp=timestamp, measurements=measurements)

    def export_onnx(self, path=None, **options):
        """The model as standard ONNX in QDQ form (an ``onnx.ModelProto``), also written to
        ``path`` when given; ``options`` as for ``irc.export_onnx.export_onnx``."""
        return export_onnx(self, path, **options)

    def profile(self, *inputs, runs: int = 20) -> list[OpTiming]:
        """Median time of every kernel call over ``runs`` runs, in op order."""
        arrays = self._check(inputs)
        calls = self.program.calls
        samples = np.empty((runs, len(calls)))
        with self._lock, self._threads_for(None):
            self._driver.run_profiled(*arrays, samples[0])  # warm-up, overwritten below
            for i in range(runs):
                self._driver.run_profiled(*arrays, samples[i])
        medians = np.median(samples, axis=0)
        return [
            OpTiming(op.name or op.results[0].name, op.kind, op.results[0].type.shape, float(t))
            for op, t in zip(calls, medians)
        ]


def format_profile(rows: list[OpTiming], top: int | None = None) -> str:
    """A per-kind summary, then the ``top`` slowest calls, as text."""
    total = sum(r.seconds for r in rows) or 1.0
    by_kind: dict[str, list[float]] = {}
    for r in rows:
        by_kind.setdefault(r.kind, []).append(r.seconds)
    lines = [f"total {total * 1e3:.3f} ms over {len(rows)} kernel calls"]
    for kind, ts in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        share = 100 * sum(ts) / total
        lines.append(f"  {kind:<16} {len(ts):4d} calls {sum(ts) * 1e3:9.3f} ms {share:5.1f}%")
    if top:
        lines.append(f"slowest {top}:")
        for r in sorted(rows, key=lambda r: -r.seconds)[:top]:
            shape = "[" + ",".join(map(str, r.shape)) + "]"
            lines.append(f"  {r.seconds * 1e3:8.3f} ms  {r.kind:<12} {r.op} {shape}")
    return "\n".join(lines)


__all__ = ["CompiledModel", "OpTiming", "Snapshot", "format_profile"]
