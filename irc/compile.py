"""``irc.compile``: a model in, a callable compiled by the Numba backend out.

    >>> import irc
    >>> model = irc.compile("mobilenetv2.onnx")             # batch specialised to 1
    >>> (logits,) = model(x)                                 # or model({"input": x})
    >>> print(model.driver_source)                           # the generated driver

The steps: load (ONNX import or text IR), specialise shapes, run the pass pipeline, plan
memory (``plan-memory``), bind a kernel per op and generate the driver (see
``irc.backends.numba.codegen``). Programs are cached in the process by a hash of the
specialised graph's text, its constant bytes and the pipeline, so compiling the same model
again skips everything but loading; Numba's ``cache=True`` keeps the kernels' machine code
on disk, so a second process does not compile them again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from irc.errors import InputError, IrcError
from irc.interpreter import ExecutionError, check_inputs
from irc.ir import Graph
from irc.pipelines import DEFAULT_FLOAT_PIPELINE

CACHE_SIZE = 8  # programs kept alive by the cache (each holds its model's constants)
_CACHE: OrderedDict[str, tuple] = OrderedDict()


@dataclass(frozen=True)
class OpTiming:
    """One kernel call's median time in a ``CompiledModel.profile`` run."""

    op: str
    kind: str
    shape: tuple
    seconds: float


def compile(  # noqa: A001 - the public name irc.compile
    model,
    input_shapes: Mapping[str, tuple] | None = None,
    pipeline: str = DEFAULT_FLOAT_PIPELINE,
    num_threads: int | None = None,
    warmup: bool = True,
    *,
    precision="fp32",
    calibration=None,
    calibration_method: str = "minmax",
    weight_clipping: str = "mse",
    preprocess=None,
    calibration_limit: int | None = None,
    progress: bool = True,
    cache: bool = True,
    strategy: str | None = None,
    budgets=None,
    labels=None,
    evaluate=None,
    sensitivity_limit: int = 16,
    strategy_options: dict | None = None,
    rounding: str = "nearest",
) -> CompiledModel:
    """Compile ``model`` (an ONNX path, ModelProto or bytes, a text IR path, or a Graph).

    ``input_shapes`` (input name → shape) specialises symbolic dimensions. The backend
    needs static shapes: a symbolic leading (batch) dimension left unspecified becomes 1;
    any other symbolic dimension must be given. ``pipeline`` is the float pass pipeline
    (``""`` runs none). ``num_threads`` is the Numba thread count used at each call
    (default: all of Numba's threads). ``warmup`` runs the model once on zeros, so Numba
    compiles (or loads from its cache) every kernel here rather than on the first call.
    A Graph is never modified. BackendError names an op that cannot be compiled.

    Quantization: ``precision`` is a precision name for every layer (``"fp32"``,
    ``"fp16"``, ``"int8"``, ``"int4"``, ``"int2"``), a mapping of layer names to precisions
    (key ``"default"`` for the rest), or an ``irc.precision.PrecisionPlan``. Integer
    precisions need ``calibration``: a numpy array of inputs, an iterable of batches, or a
    folder of images (with ``preprocess``, an ``irc.calibration.Preprocess`` or preset
    name), of which at most ``calibration_limit`` are used (or an
    ``irc.calibration.Calibration`` already made on this model); ``calibration_method`` is
    ``minmax``, ``percentile``, ``entropy`` or ``mse``; ``weight_clipping`` is ``mse`` or
    ``minmax``. The calibrated graph is quantized (``quantize``), lowered to integer ops
    (``lower-quantized``) and its 4/2-bit weights packed (``pack-weights``).

    ``rounding``: ``nearest`` (each weight to its nearest level), ``gptq`` (GPTQ's
    error-compensating rounding, ``irc.gptq``), or, with a strategy, ``best``: per layer
    and precision whichever of the two the sensitivity table measured better
    (``irc.decision.rounding``).
    """
    import numba

    from irc.backends.numba.codegen import generate_program
    from irc.backends.numba.kernel_table import BackendError
    from irc.pass_manager import PassContext, PassManager
    from irc.passes.plan_memory import plan_memory

    limit = numba.config.NUMBA_NUM_THREADS
    threads = limit if num_threads is None else int(num_threads)
    if not 1 <= threads <= limit:
        raise BackendError(f"num_threads must be between 1 and {limit}, got {num_threads}")
    from irc.precision import as_plan
    from irc.specialize import specialize

    if strategy is not None:
        from irc.decision.api import compile_with_strategy

        return compile_with_strategy(
            model, input_shapes, pipeline, threads, strategy=strategy, budgets=budgets,
            calibration=calibration, calibration_method=calibration_method,
            weight_clipping=weight_clipping, preprocess=preprocess,
            calibration_limit=calibration_limit, progress=progress,
            labels=labels, evaluate=evaluate, sensitivity_limit=sensitivity_limit,
            strategy_options=strategy_options, rounding=rounding,
        )  # fmt: skip
    plan_of_precision = as_plan(precision)
    times = {}
    start = time.perf_counter()
    ctx = PassContext()
    calibrated = None
    if plan_of_precision != as_plan("fp32"):
        # calibrate before shapes are fixed, so that batches of any size run
        graph = _load(model, None)
        times["load"] = time.perf_counter() - start
        PassManager(pipeline, ctx).run(graph)
        options = (calibration_method, weight_clipping, preprocess, calibration_limit, progress,
                   rounding)  # fmt: skip
        calibrated = _quantize(graph, ctx, plan_of_precision, calibration, options, times)
        graph = _static_graph(specialize(graph, input_shapes) if input_shapes else graph)
        key = graph_key(graph, "") if cache else ""  # data now in the constants
    else:
        graph = _static_graph(_load(model, input_shapes))
        times["load"] = time.perf_counter() - start
        key = graph_key(graph, pipeline) if cache else ""
    cached = cache and key in _CACHE
    if cached:
        _CACHE.move_to_end(key)
    else:
        if calibrated is None:
            PassManager(pipeline, ctx).run(graph)
        plan = plan_memory(graph)
        stats = ctx.statistics + [("plan-memory", plan.statistics())]
        entry = (generate_program(graph, plan), stats)
        if not cache:
            program, stats = entry
        else:
            _CACHE[key] = entry
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    if cache:
        program, stats = _CACHE[key]
    times["build"] = time.perf_counter() - start - times["load"] - times.get("calibrate", 0.0)
    compiled = CompiledModel(program, stats, threads, cache_hit=cached)
    compiled.calibration = calibrated
    if warmup and not program.warmed:  # kernels compiled once are compiled in the process
        compiled.warm_up()
        program.warmed = True
    times["total"] = time.perf_counter() - start
    compiled.compile_seconds = times
    return compiled


QUANTIZE_PIPELINE = "quantize{{weights={weights}}},lower-quantized,pack-weights"


def _quantize(graph, ctx, plan, calibration, options, times):
    """Calibrate (when a layer is integer) and run the quantization pipeline in place."""
    from irc.pass_manager import PassManager

    method, weight_clipping, preprocess, limit, progress, rounding = options
    calibrated = {}
    if not plan.is_float:
        if calibration is None:
            raise InputError(
                "the precision plan has integer layers: give calibration data "
                "(calibration=array, iterable of batches, or image folder)"
            )
        from irc.calibration import Calibration, calibrate

        if rounding == "best":
            raise InputError(
                "rounding='best' chooses per layer from the sensitivity table: give a "
                "strategy, or use rounding='nearest' or 'gptq'"
            )
        t = time.perf_counter()
        if isinstance(calibration, Calibration):
            calibrated = calibration  # already calibrated (on this model's float graph)
            if rounding == "nearest" and calibrated.hessians is not None:
                from irc.decision.rounding import without_statistics

                calibrated = without_statistics(calibrated)  # nearest means nearest
        else:
            calibrated = calibrate(graph, calibration, method, preprocess=preprocess,
                                   limit=limit, progress=progress)  # fmt: skip
        times["calibrate"] = time.perf_counter() - t
        if rounding != "nearest":
            add_rounding_statistics(graph, calibrated, calibration, rounding, preprocess, progress)
    ctx.analyses["calibration"] = calibrated
    ctx.analyses["precision_plan"] = plan
    PassManager(QUANTIZE_PIPELINE.format(weights=weight_clipping), ctx).run(graph)
    return calibrated


# calibration inputs (at most) whose statistics GPTQ rounding uses: with 64, the late layers'
# statistics (a 1280-wide classifier input: rank 64) let GPTQ fit its own images and lose
# top-1 on others (MobileNetV2, one FP32/8 plan: 73.0 with 64, 75.9 with 224)
GPTQ_SAMPLES = 256


def add_rounding_statistics(graph, calibrated, data, rounding, preprocess, progress,
                            skip: int = 0) -> None:  # fmt: skip
    """For ``rounding="gptq"`` or ``"best"``: each layer's input statistics, on
    ``calibrated.hessians``, from up to ``GPTQ_SAMPLES`` calibration inputs after the first
    ``skip`` (the sensitivity sample, which must not judge rounding fitted to it) — or the
    last ones, if too few."""
    from irc.decision.rounding import ROUNDINGS

    if rounding not in ROUNDINGS:
        raise InputError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")
    if rounding == "nearest":
        return
    from irc.calibration import Calibration
    from irc.decision.api import sample_inputs
    from irc.gptq import layer_hessians

    if isinstance(data, Calibration):
        if data.hessians is None:
            raise InputError(
                f"rounding={rounding!r} needs calibration data, not a bare Calibration"
            )
        return
    sample, _ = sample_inputs(graph, data, preprocess, skip + GPTQ_SAMPLES)
    sample = sample[skip:] if len(sample) > skip else sample[-GPTQ_SAMPLES:]
    calibrated.hessians = layer_hessians(graph, sample, progress=progress)


def clear_cache() -> None:
    """Forget every cached program (their constants are freed with the last model)."""
    _CACHE.clear()


def graph_key(graph: Graph, pipeline: str) -> str:
    """The cache key: the graph's text with constants elided, their bytes, the pipeline."""
    from irc.printer import print_graph

    digest = hashlib.blake2b(digest_size=20)
    digest.update(pipeline.encode() + b"\0" + print_graph(graph, full=False).encode())
    for op in graph.ops:
        for value in op.attrs.values():
            if isinstance(value, np.ndarray):
                digest.update(f"{value.dtype.str}{value.shape}".encode())
                digest.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _load(model, input_shapes) -> Graph:
    """A graph of ``model`` that this compile owns (a copy when the caller gave a Graph)."""
    import irc

    if isinstance(model, Graph):
        return irc.specialize(model, input_shapes) if input_shapes else model.clone()
    if isinstance(model, (str, os.PathLike)):
        return irc.load_graph(model, input_shapes)
    return irc.import_onnx(model, input_shapes)


def _static_graph(graph: Graph) -> Graph:
    """``graph`` with every symbolic leading dimension of an input specialised to 1."""
    from irc.backends.numba.kernel_table import BackendError
    from irc.specialize import specialize

    shapes = {}
    for v in graph.inputs:
        shape = tuple(1 if i == 0 and isinstance(d, str) else d for i, d in enumerate(v.type.shape))
        if any(isinstance(d, str) for d in shape):
            raise BackendError(
                f"input '{v.name}' has symbolic dimensions {v.type}; the Numba backend needs "
                "static shapes: give input_shapes={'" + v.name + "': (...)}"
            )
        if shape != v.type.shape:
            shapes[v.name] = shape
    return specialize(graph, shapes) if shapes else graph


class CompiledModel:
    """A compiled model: call it with arrays (positionally, or a dict by input name).

    ``graph`` is the compiled graph (after the pipeline; shared with the compile cache,
    so treat it as read-only), ``driver_source`` the generated driver, ``stats`` the
    statistics of every pass including ``plan-memory``, ``num_threads`` the thread count
    each call sets. One model runs one call at a time (calls from threads queue on a lock).
    """

    def __init__(self, program, stats, num_threads: int, cache_hit: bool = False):
        from irc.backends.numba.codegen import Driver

        self.program = program
        self.stats: list[tuple[str, dict[str, int]]] = list(stats)
        self.cache_hit = cache_hit
        self.compile_seconds: dict[str, float] = {}
        self.calibration = None  # the calibration used (value name -> range), if any
        self.choice = None  # irc.decision.choose.Choice when a strategy chose the precisions
        self._driver = Driver(program, num_threads)
        self._lock = threading.Lock()

    @property
    def graph(self) -> Graph:
        """The graph as compiled: specialised, after the pipeline."""
        return self.program.graph

    @property
    def driver_source(self) -> str:
        """The generated driver's Python source."""
        return self.program.source

    @property
    def num_threads(self) -> int:
        """The Numba (and BLAS) thread count set for each call."""
        return self._driver.num_threads

    @property
    def arena_bytes(self) -> int:
        """Bytes of the arena holding every intermediate value."""
        return self.program.plan.arena_bytes

    def __repr__(self) -> str:
        return (
            f"<CompiledModel @{self.graph.name}: {len(self.program.calls)} kernel calls, "
            f"arena {self.arena_bytes / 1e6:.2f} MB, {self.num_threads} thread(s)>"
        )

    def __call__(self, *inputs) -> tuple[np.ndarray, ...]:
        """Run the model; returns a tuple of the graph's outputs (fresh arrays)."""
        arrays = self._check(inputs)
        with self._lock:
            try:
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
        """Run once on zeros so every kernel is compiled (or loaded from Numba's cache).

        BackendError names an op whose kernel Numba cannot compile; other failures are
        left to the first real call (zeros may be invalid data: an index, a divisor).
        """
        from numba.core.errors import NumbaError

        from irc.backends.numba.kernel_table import BackendError

        zeros = [np.zeros(v.type.shape, v.type.dtype.numpy) for v in self.graph.inputs]
        with self._lock:
            try:
                self._driver.run(*zeros)
            except NumbaError:
                op, error = self._driver.failing_op(zeros)
                where = f"op {op.label()}" if op is not None else "the driver"
                summary = str(error).strip().splitlines()[0] if error else ""
                raise BackendError(f"{where}: Numba cannot compile its kernel: {summary}") from None
            except Exception:  # noqa: BLE001 - data-dependent; the real call reports it
                pass

    def report(self):
        """Per layer: op, shape, precision, weight bytes; and totals against FP32."""
        from irc.report import model_report

        return model_report(self.graph)

    def save(self, path) -> None:
        """Write the compiled model to one file (``irc.load`` reads it back)."""
        from irc.serialize import save_model

        save_model(self, path)

    def export_onnx(self, path=None, **options):
        """The model as standard ONNX in QDQ form (an ``onnx.ModelProto``), also written to
        ``path`` when given; ``options`` as for ``irc.export_onnx.export_onnx``."""
        from irc.export_onnx import export_onnx

        return export_onnx(self, path, **options)

    def profile(self, *inputs, runs: int = 20) -> list[OpTiming]:
        """Median time of every kernel call over ``runs`` runs, in op order."""
        arrays = self._check(inputs)
        calls = self.program.calls
        samples = np.empty((runs, len(calls)))
        with self._lock:
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


__all__ = ["CompiledModel", "IrcError", "OpTiming", "clear_cache", "compile", "format_profile"]
