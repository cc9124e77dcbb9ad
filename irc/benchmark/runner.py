"""``irc bench``: every way to compile one model, measured side by side in one run.

Rows: irc FP32, every precision strategy (``uniform-int8``, ``quantune``, ``sals``,
``profile-score``, ``sigma``, and ``auto`` at each size target), and onnxruntime FP32 and
INT8 (``quantize_static`` on the same calibration images) as peers. Each row gets its
top-1 / top-5 on the labelled evaluation images, its stored size, its batch-1 latency
(all rows interleaved, medians) and its compile time.

The strategies share one calibration, one sensitivity table (on the first ``sample``
calibration images) and one cost model, as ``irc.compile(strategy=...)`` would build them;
a row's compile time is its own decide + compile + verify time plus the shared work it
needs. Calibration and evaluation images never overlap: without a calibration folder,
the labelled images are split (every other one calibrates).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from irc.benchmark.peers import ort_int8_model, ort_session
from irc.build import build
from irc.calibration import COMPILE_METHOD, load_labelled_folder
from irc.decision import BudgetError, Budgets
from irc.decision.choose import choose
from irc.decision.costs_measure import build_cost_model
from irc.decision.rounding import analyze_best
from irc.decision.sensitivity import analyze
from irc.errors import InputError
from irc.measure import accuracy, interleaved
from irc.stages import GPTQ_SAMPLES, calibrate, float_graph, layer_hessians

STRATEGIES = ("uniform-int8", "quantune", "sals", "profile-score", "sigma", "auto")
SIZED = ("sals", "sigma")  # rank-based strategies that need a size budget (FP32 / first size)


@dataclass
class Row:
    """One configuration's measurements (``None`` where it was not measured)."""

    name: str
    runtime: str  # "irc" or "onnxruntime"
    strategy: str | None = None
    budgets: str = ""
    bytes: int | None = None
    top1: float | None = None
    top5: float | None = None
    latency_ms: float | None = None
    compile_s: float | None = None
    precisions: dict = field(default_factory=dict)  # precision -> number of layers
    error: str | None = None  # why the strategy found no plan


@dataclass
class BenchResult:
    """Every row and how they were measured."""

    model: str
    rows: list[Row]
    eval_images: int
    calib_images: int
    sample: int
    threads: int
    runs: int
    rounding: str
    shared_s: dict = field(default_factory=dict)  # calibrate / sensitivity / cost seconds
    fp32_bytes: int = 0
    models: dict = field(default_factory=dict, repr=False)  # row name -> CompiledModel (irc)

    def row(self, name: str) -> Row:
        """The row called ``name`` (KeyError when absent)."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-ready (without the compiled models)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "models"}
        out["rows"] = [asdict(r) for r in self.rows]
        return out


@dataclass
class BenchData:
    """Preprocessed images: calibration inputs (with labels) and evaluation inputs."""

    calib: np.ndarray
    calib_labels: np.ndarray
    eval: np.ndarray
    eval_labels: np.ndarray


def load_data(data, preprocess, labels_file=None, calib=None, limit=None, calib_limit=256):
    """The evaluation images of ``data`` and calibration images (``calib`` or a split).

    ``calib`` is a folder with a labels.txt. Without it, every other labelled image of
    ``data`` calibrates and the rest evaluate.
    """

    def load(folder, labels, count):
        xs, ys = zip(*load_labelled_folder(folder, preprocess, limit=count, labels_file=labels))
        return np.concatenate(xs), np.concatenate(ys)

    images, labels = load(data, labels_file, None if calib is None else limit)
    if calib is not None:
        calib_images, calib_labels = load(calib, None, calib_limit)
    else:
        if len(images) < 4:
            raise InputError(
                f"bench: {data} has {len(images)} labelled images; splitting it into "
                "calibration and evaluation images needs at least 4 (or pass --calib)"
            )
        calib_images, calib_labels = images[0::2][:calib_limit], labels[0::2][:calib_limit]
        images, labels = images[1::2], labels[1::2]
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
    return BenchData(calib_images, calib_labels, images, labels)


def strategy_runs(fp32_bytes: int, strategies, sizes, max_drop, auto_latency=1.0):
    """(row name, strategy, Budgets) for each strategy row; ``auto_latency`` is auto's
    latency budget as a ratio to uniform INT8 (None: no latency budget)."""
    runs = []
    for strategy in strategies:
        if strategy == "auto":
            for size in sizes:
                budgets = Budgets(max_bytes=int(fp32_bytes / size), max_latency_ratio=auto_latency,
                                  max_drop=max_drop)  # fmt: skip
                runs.append((f"auto ≤FP32/{size:g}", strategy, budgets))
        elif strategy in SIZED:
            size = sizes[0] if sizes else 6
            runs.append((f"{strategy} ≤FP32/{size:g}", strategy,
                         Budgets(max_bytes=int(fp32_bytes / size))))  # fmt: skip
        else:
            runs.append((strategy, strategy, Budgets()))
    return runs


def run_bench(model_path, data: BenchData, *, strategies=STRATEGIES, sizes=(6.0, 8.0),
              max_drop=None, auto_latency=1.0, sample=16, rounding="best", runs=30, threads=1,
              peers=True, log=print) -> BenchResult:  # fmt: skip
    """Compile and measure every row; see the module docstring. ``log`` gets progress.

    ``sizes``: auto runs once per size budget FP32 / size (sals and sigma get the first),
    with latency ≤ ``auto_latency`` × uniform INT8 and a top-1 drop ≤ ``max_drop`` when
    given; ``sample``: sensitivity images; ``runs``: latency rounds.
    """
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise InputError(f"bench: unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    if sample > len(data.calib):
        sample = len(data.calib)
    rows, models, shared = [], {}, {}
    graph, calibration = _float_graph(model_path, data, rounding, sample, shared, log)
    start = time.perf_counter()
    fp32 = build(graph, pipeline="channels-last", num_threads=threads, cache=False)  # deployed
    fp32_bytes = fp32.report().totals.bytes
    rows.append(Row("irc fp32", "irc", bytes=fp32_bytes,
                    compile_s=time.perf_counter() - start))  # fmt: skip
    models["irc fp32"] = fp32
    if strategies:
        runs_ = strategy_runs(fp32_bytes, strategies, sizes, max_drop, auto_latency)
        _strategy_rows(graph, calibration, data, runs_, sample, threads, rounding, rows, models,
                       shared, log)  # fmt: skip
    runners = {name: (lambda x, m=m: m(x)[0]) for name, m in models.items()}
    with tempfile.TemporaryDirectory() as tmp:
        if peers:
            _peer_rows(model_path, data, threads, Path(tmp), rows, runners, log)
        log(f"top-1 of {len(runners)} configurations on {len(data.eval)} images")
        for r in rows:
            if r.name in runners:
                r.top1, r.top5 = accuracy(runners[r.name], data.eval, data.eval_labels)
        log(f"batch-1 latency: {runs} interleaved rounds on {threads} thread(s)")
        latency = interleaved(runners, np.ascontiguousarray(data.eval[:1]), runs)
    for r in rows:
        if r.name in latency:
            r.latency_ms = latency[r.name] * 1e3
    return BenchResult(str(model_path), rows, len(data.eval), len(data.calib), sample, threads,
                       runs, rounding, shared, fp32_bytes, models)  # fmt: skip


def _float_graph(model_path, data, rounding, sample, shared, log):
    """The float graph after the float pipeline and its calibration (timed into shared)."""
    graph = float_graph(model_path)
    start = time.perf_counter()
    calibration = calibrate(graph, data.calib, COMPILE_METHOD, progress=False)
    if rounding != "nearest":  # statistics from other images than the sensitivity sample
        rest = data.calib[sample:] if len(data.calib) > sample else data.calib
        calibration = calibration.with_statistics(layer_hessians(graph, rest[:GPTQ_SAMPLES]))
    shared["calibrate"] = time.perf_counter() - start
    log(f"calibrated on {len(data.calib)} images in {shared['calibrate']:.1f} s")
    return graph, calibration


def _strategy_rows(graph, calibration, data, strategy_runs_, sample, threads, rounding, rows,
                   models, shared, log):  # fmt: skip
    """One row per strategy run, on one shared sensitivity table and cost model."""
    images, labels = data.calib[:sample], data.calib_labels[:sample]
    start = time.perf_counter()
    measure = analyze
    if rounding == "best":  # nearest and GPTQ measured, the better kept per layer and precision
        measure = analyze_best
    table = measure(graph, calibration, images, labels=labels, num_threads=threads)
    shared["sensitivity"] = time.perf_counter() - start
    log(f"sensitivity: {len(table.layers)} layers × {len(table.precisions)} precisions on "
        f"{len(images)} images in {shared['sensitivity']:.1f} s")  # fmt: skip
    start = time.perf_counter()
    cost = build_cost_model(graph, calibration, num_threads=threads)
    shared["cost"] = time.perf_counter() - start
    log(f"cost model in {shared['cost']:.1f} s")

    def calib_top1(model):
        return accuracy(lambda x: model(x)[0], data.calib, data.calib_labels)[0]

    fp32_bytes = rows[0].bytes
    for name, strategy, budgets in strategy_runs_:
        needs = shared["calibrate"] + (0.0 if strategy == "uniform-int8"
                                       else shared["sensitivity"] + shared["cost"])  # fmt: skip
        row = Row(name, "irc", strategy, budgets.describe())
        rows.append(row)
        start = time.perf_counter()
        try:
            choice = choose(graph, calibration, images, strategy=strategy, budgets=budgets,
                            labels=labels, evaluate=calib_top1, table=table, cost=cost,
                            num_threads=threads, progress=False, rounding=rounding)  # fmt: skip
        except BudgetError as e:
            row.error = str(e)
            log(f"{name}: no plan: {e}")
            continue
        row.compile_s = needs + time.perf_counter() - start
        row.bytes = choice.model.report().totals.bytes
        row.precisions = choice.model.report().totals.counts
        models[name] = choice.model
        log(f"{name}: {_counts(row.precisions)}, {fp32_bytes / row.bytes:.2f}× smaller")


def _peer_rows(model_path, data, threads, tmp: Path, rows, runners, log):
    """onnxruntime FP32 and quantize_static INT8 rows, their runners added to ``runners``."""
    start = time.perf_counter()
    session = ort_session(model_path, threads)
    fp32_s = time.perf_counter() - start
    start = time.perf_counter()
    int8_path = ort_int8_model(model_path, data.calib, tmp / "int8.onnx")
    int8 = ort_session(int8_path, threads)
    int8_s = time.perf_counter() - start
    log(f"onnxruntime quantize_static in {int8_s:.1f} s")
    for name, s, path, seconds in (("ort fp32", session, model_path, fp32_s),
                                   ("ort int8", int8, int8_path, int8_s)):  # fmt: skip
        feed = s.get_inputs()[0].name
        runners[name] = lambda x, s=s, feed=feed: s.run(None, {feed: x})[0]
        rows.append(Row(name, "onnxruntime", bytes=_onnx_bytes(path), compile_s=seconds))


def _onnx_bytes(path) -> int:
    """Bytes of an ONNX model's initializers (its stored weights)."""
    import onnx

    model = onnx.load(str(path))
    return sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes
               for t in model.graph.initializer)  # fmt: skip


def _counts(counts: dict) -> str:
    return ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
