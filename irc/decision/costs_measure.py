"""Building the cost model (``irc.decision.cost.CostModel``) by measuring this machine.

    >>> costs = build_cost_model(graph, calibration)          # float graph, calibrated
    >>> costs.plan_latency({"conv1": "int8"}), costs.plan_bytes({"conv1": "int8"})

Each layer is cut out of the model and quantized alone at each precision
(``layer_programs``). Its **bytes** are what ``irc.report`` counts for it there (their sum
plus ``other_bytes`` is the whole model's): quantized as the model's quantization stage
does it with nearest rounding (the same weight clipping, the calibration's bias
correction), since a bias is stored in the narrowest integer type that holds its levels.
Under GPTQ rounding a layer's scales, and so its bias's width, may differ. A precision
the support table (``irc.support``) refuses the layer is not **allowed** and is never
compiled (fp32 always is; such an entry holds the fp32 bytes and latency). **latency**:
the median over ``runs`` of the layer's kernel call in its compiled program at batch 1
(at fp16 with the weight's ``cast``); the int8 (else int4, int2) program's ``quantize``
and ``dequantize`` calls are its **transition** costs.
``other_latency``: the float model's batch-1 time outside the layers.

Measurements are kept in a JSON file, ``<cache_dir>/costs-<machine hash>.json``::

    {"version": 2, "machine": {"cpu", "avx2", "avx512", "kernels", "numba", "irc", "threads"},
     "layers": {"<signature>": {"allowed", "seconds", "quantize", "dequantize", "error",
                                "precision", "class", "macs", "params", "in", "out",
                                "touched"}},
     "models": {"<model key>": {"other_latency"}}}

A layer's signature (JSON) is its op kind, input shape at batch 1, weight shape, attributes
(strides, pads, dilations, group, fused activation, ...), bias presence and precision:
equal signatures run the same kernel on the same shapes, so a cached entry is reused
without compiling anything. The file is written atomically, merged with what other
processes wrote; a corrupt file is ignored with a warning (invalid entries are dropped).

Unmeasured (``measure=False``, or an entry missing), latency is the roofline estimate
``max(macs / rate, touched / bandwidth, MIN_CALL)``: ``rate`` the median MACs/s of cached
measurements of the precision and layer class (conv, depthwise, gemm) on this machine,
``bandwidth`` the median bytes/s of cached quantize/dequantize calls, else constants.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path

import numba
import numpy as np

from irc.build import build, kernel_isa
from irc.calibration.progress import Progress, stage
from irc.decision.cost import INTEGER, PRECISIONS, CostModel
from irc.decision.layer_programs import quantized_layer_graph
from irc.decision.sensitivity import layer_info
from irc.errors import InputError
from irc.ir import Graph, Op
from irc.opdef import has_trait
from irc.precision import PlanError, layer_name, normalize_precision
from irc.report import model_report
from irc.support import precision_problem, quantizable_layers
from irc.version import __version__

CACHE_VERSION = 3  # bumped when the kernels change what a layer costs
# Fallback roofline constants, measured once on the development machine (AMD EPYC, AVX2,
# shared, 1 thread): the median MACs/s per precision and class over MobileNetV2's layers
# at batch 1 and the median bytes/s of its quantize/dequantize calls, rounded down by
# ~20% (conservative). Used only where the cache holds no measurement of the kind.
DEFAULT_RATES = {
    ("fp32", "conv"): 2e10, ("fp32", "depthwise"): 2.5e9, ("fp32", "gemm"): 8e9,
    ("fp16", "conv"): 1.5e10, ("fp16", "depthwise"): 2.3e9, ("fp16", "gemm"): 2e8,
    ("int8", "conv"): 1.8e10, ("int8", "depthwise"): 2.4e9, ("int8", "gemm"): 1.6e10,
    ("int4", "conv"): 1.6e10, ("int4", "depthwise"): 2.2e9, ("int4", "gemm"): 1.6e10,
    ("int2", "conv"): 1.6e10, ("int2", "depthwise"): 2.2e9, ("int2", "gemm"): 1.3e10,
}  # fmt: skip
DEFAULT_BANDWIDTH = 1.1e10  # bytes/s
MIN_CALL = 2e-6  # seconds: the least a kernel call costs (driver and dispatch overhead)


def build_cost_model(graph: Graph, calibration, *, precisions=PRECISIONS, measure: bool = True,
                     runs: int = 20, num_threads: int | None = 1, cache_dir=None,
                     weights: str = "mse", progress: bool = True,
                     layer_ops: list[Op] | None = None) -> CostModel:  # fmt: skip
    """The cost model of ``graph`` (float, after the float pipeline; only read).

    ``calibration``: value name → (lo, hi) (an ``irc.calibrate`` result). ``layer_ops``:
    the layers (default ``quantizable_layers(graph)``). ``measure=False`` measures nothing
    and gives roofline estimates only (``measured`` all False; what the cache knows of
    ``allowed`` still holds). ``cache_dir``: where the measurements are kept (default
    ``$IRC_CACHE_DIR``, else ``~/.cache/irc``). ``weights``: the weight clipping of the
    layer programs (measured and counted: a bias's stored width depends on its levels).
    """
    start = time.perf_counter()
    precisions, threads = _check_args(precisions, runs, weights, num_threads)
    ranges = getattr(calibration, "ranges", calibration) or {}
    nearest = _nearest_rounding(calibration)
    ops = quantizable_layers(graph) if layer_ops is None else list(layer_ops)
    if not ops:
        raise InputError("the model has no layer that can be quantized (conv2d / gemm)")
    missing = [v.name for op in ops for v in (op.operands[0], op.result) if v.name not in ranges]
    if missing and set(precisions) & set(INTEGER):
        raise InputError(f"no calibrated range for {missing[:3]}: calibrate the graph first")
    machine = machine_info(threads)
    cache = CostCache(cache_path(cache_dir, machine), machine)
    shape = (len(ops), len(precisions))
    latency, nbytes = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    allowed, measured = np.ones(shape, dtype=bool), np.zeros(shape, dtype=bool)
    transition = np.full((len(ops), 2), np.nan)
    facts, found, new = [], {}, 0
    bar = Progress(len(ops), label="cost model", unit="layer", enabled=progress)
    for i, op in enumerate(ops):
        fact = _facts(op)
        facts.append(fact)
        x, before = _random_input(op, ranges), new
        for j, p in enumerate(precisions):
            if precision_problem(op, p) is not None:  # irc.support: nothing to compile
                allowed[i, j] = False
                continue
            key = layer_signature(op, p)
            entry = cache.layers.get(key)
            run = measure and entry is None
            # bytes as the model's own quantization counts them (bias widths vary)
            cut = quantized_layer_graph(graph, op, p, nearest, 1, weights)
            nbytes[i, j] = _layer_bytes(cut, layer_name(op), p)
            if run:
                entry = dict(fact, precision=p, touched=_touched(fact, p, nbytes[i, j]),
                             allowed=True, **_measure_layer(cut, x, runs, threads))  # fmt: skip
                cache.layers[key] = entry
                new += 1
            if measure and entry is not None and entry.get("seconds"):
                latency[i, j], measured[i, j] = entry["seconds"], True
                found[i, p] = entry
        sides = [found[i, q] for q in INTEGER if "dequantize" in found.get((i, q), ())]
        if sides:
            transition[i] = sides[0].get("quantize", np.nan), sides[0]["dequantize"]
        if new > before:
            cache.save()
        bar.update(1)
    bar.close()

    rates, bandwidth = fit_roofline(cache.layers.values())
    fp32 = precisions.index("fp32")
    for i, fact in enumerate(facts):
        for j, p in enumerate(precisions):
            if allowed[i, j] and not measured[i, j]:
                touched = _touched(fact, p, nbytes[i, j])
                latency[i, j] = roofline(fact["macs"], touched, rates[p, fact["class"]], bandwidth)
        for j in np.flatnonzero(~allowed[i]):
            latency[i, j], nbytes[i, j] = latency[i, fp32], nbytes[i, fp32]
        if np.isnan(transition[i]).any():
            transition[i] = [max(fact[k] * 5 / bandwidth, MIN_CALL) for k in ("in", "out")]

    names = [layer_name(op) for op in ops]
    report = model_report(graph)
    other_bytes = report.totals.bytes - sum(r.bytes for r in report.layers if r.name in names)
    if measure:
        mkey = model_key(graph, ops)
        if mkey not in cache.models:
            with stage("cost model: the other ops", enabled=progress):
                other = _measure_other(graph, names, runs, threads)
            cache.models[mkey] = {"other_latency": other}
            cache.save()
        other_latency = float(cache.models[mkey]["other_latency"])
    else:
        other_latency = _roofline_other(graph, {id(op) for op in ops}, bandwidth)
    isa = "AVX-512" if machine["avx512"] else "AVX2" if machine["avx2"] else "no AVX2"
    described = f"{machine['cpu']}, {isa}, numba {machine['numba']}, {threads} thread(s)"
    extra = {"cache": str(cache.path), "seconds": time.perf_counter() - start,
             "measured_now": new, "rates": {f"{p}/{c}": r for (p, c), r in rates.items()},
             "bandwidth": bandwidth, "threads": threads, "runs": runs}  # fmt: skip
    return CostModel(names, precisions, latency, nbytes, allowed, measured, transition,
                     int(other_bytes), other_latency, described, extra)  # fmt: skip


def _check_args(precisions, runs, weights, num_threads) -> tuple[tuple[str, ...], int]:
    precisions = (precisions,) if isinstance(precisions, str) else precisions
    try:
        precisions = tuple(normalize_precision(p, "precisions") for p in precisions)
    except PlanError as e:
        raise InputError(str(e)) from None
    if "fp32" not in precisions or len(set(precisions)) != len(precisions):
        raise InputError(f"precisions must hold fp32 and no repeats, got {precisions}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise InputError(f"runs must be a whole number of at least 1, got {runs!r}")
    if weights not in ("mse", "minmax"):
        raise InputError(f"weights must be 'mse' or 'minmax', got {weights!r}")
    limit = numba.config.NUMBA_NUM_THREADS
    threads = limit if num_threads is None else num_threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise InputError(f"num_threads must be between 1 and {limit}, got {num_threads!r}")
    return precisions, threads


# ------------------------------------------------------------------ facts and estimates
def _facts(op: Op) -> dict:
    """What the roofline needs of a layer: MACs, class, input and output elements."""
    info = layer_info(op)
    cls = "gemm" if op.kind == "gemm" else "depthwise" if info.depthwise else "conv"
    return {"class": cls, "macs": info.macs, "in": _elements(op.operands[0].type.shape),
            "out": _elements(op.result.type.shape), "params": info.params}  # fmt: skip


def _elements(shape) -> int:
    """Elements at batch 1 (a symbolic dimension counts as 1)."""
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape], dtype=np.int64))


def _touched(fact: dict, precision: str, stored: int) -> int:
    """Bytes a layer call reads and writes: activations (1 byte each at an integer
    precision, else 4), the stored weight and, at fp16, the float32 copy cast from it."""
    width = 1 if precision in INTEGER else 4
    cast = 8 * fact["params"] if precision == "fp16" else 0
    return int(width * (fact["in"] + fact["out"]) + stored + cast)


def roofline(macs: float, touched: float, rate: float, bandwidth: float) -> float:
    """Estimated seconds of one call: compute- or memory-bound, at least ``MIN_CALL``."""
    return max(macs / rate, touched / bandwidth, MIN_CALL)


def fit_roofline(entries) -> tuple[dict, float]:
    """(rates, bandwidth) from measured cache entries: per (precision, class) the median
    MACs per second, and the median bytes per second of quantize/dequantize calls (5
    bytes an element: f32 in and i8 out, or back); ``DEFAULT_*`` where none exist."""
    samples: dict = {k: [] for k in DEFAULT_RATES}
    moved = []
    for e in entries:
        if e.get("allowed") and e.get("seconds") and (e["precision"], e["class"]) in samples:
            samples[e["precision"], e["class"]].append(e["macs"] / e["seconds"])
            moved += [5 * e[n] / e[s] for s, n in (("quantize", "in"), ("dequantize", "out"))
                      if e.get(s)]  # fmt: skip
    rates = {k: float(np.median(v)) if v else DEFAULT_RATES[k] for k, v in samples.items()}
    return rates, float(np.median(moved)) if moved else DEFAULT_BANDWIDTH


def _roofline_other(graph: Graph, layer_ids: set[int], bandwidth: float) -> float:
    """Seconds of the ops that are not layers, as memory-bound calls on float data."""
    ops = [op for op in graph.ops if not has_trait(op.kind, "constant")
           and id(op) not in layer_ids]  # fmt: skip
    moved = [sum(4 * _elements(v.type.shape) for v in [*op.operands, *op.results]) for op in ops]
    return sum(max(m / bandwidth, MIN_CALL) for m in moved)


# ------------------------------------------------------------------ measuring
def _nearest_rounding(calibration):
    """``calibration`` without GPTQ's rounding statistics (its ranges and channel means,
    which bias correction reads, kept); an empty mapping for None."""
    if calibration is None:
        return {}
    if getattr(calibration, "hessians", None) is not None:
        return calibration.with_statistics(None)
    return calibration


def _layer_bytes(cut: Graph, name: str, precision: str) -> int:
    """The report's bytes of layer ``name`` in ``cut``; InputError if the quantize pass
    left it at another precision (it has no integer form)."""
    rows = [r for r in model_report(cut).layers if r.name == name and r.precision == precision]
    if len(rows) != 1:
        raise InputError(f"layer {name}: the quantize pass did not make it {precision}")
    return rows[0].bytes


def _random_input(op: Op, ranges) -> np.ndarray:
    """A batch-1 input of layer ``op``, uniform in its calibrated range ([-1, 1] if none)."""
    lo, hi = ranges.get(op.operands[0].name, (-1.0, 1.0))
    shape = (1, *op.operands[0].type.shape[1:])
    return np.random.default_rng(0).uniform(float(lo), float(hi), shape).astype(np.float32)


def _measure_layer(cut: Graph, x: np.ndarray, runs: int, threads: int) -> dict:
    """Compile a quantized layer graph and time it: the layer kernel (+ fp16 cast) and,
    at an integer precision, its quantize and dequantize calls."""
    program = build(cut, num_threads=threads, cache=False)
    timings = program.profile(x, runs=runs)
    result = {"seconds": float(sum(t.seconds for t in timings if _layer_time(t.kind)))}
    for t in timings:
        if t.kind in ("quantize", "dequantize"):
            result.setdefault(t.kind, float(t.seconds))
    return result


def _layer_time(kind: str) -> bool:
    """Whether a kernel of ``kind`` counts in a layer program's time: the layer (float or
    integer) and, at fp16, its weight's cast."""
    return has_trait(kind, "layer") or has_trait(kind, "integer-layer") or kind == "cast"


def _measure_other(graph: Graph, names: list[str], runs: int, threads: int) -> float:
    """Seconds per batch-1 run of the float model outside the layers ``names``."""
    model = build(graph, num_threads=threads, cache=False)
    inputs = [np.full(v.type.shape, 0.5, v.type.dtype.numpy) for v in model.graph.inputs]
    timings = model.profile(*inputs, runs=runs)
    layers = set(names)
    return float(sum(t.seconds for t in timings
                     if not has_trait(t.kind, "layer") or t.op not in layers))  # fmt: skip


# ------------------------------------------------------------------ keys and the cache
def machine_info(threads: int) -> dict:
    """What measurements depend on: CPU model and vector extensions, versions, threads."""
    info = Path("/proc/cpuinfo").read_text() if os.path.isfile("/proc/cpuinfo") else ""
    cpu = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    cpu = cpu.group(1).strip() if cpu else platform.processor() or platform.machine()
    versions = {"irc": __version__, "numba": numba.__version__, "threads": int(threads)}
    isa = {"avx2": "avx2" in flags, "avx512": "avx512f" in flags, "kernels": kernel_isa()}
    return {"cpu": cpu, **isa, **versions}


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def cache_path(cache_dir, machine: dict) -> Path:
    """``<cache_dir>/costs-<machine hash>.json`` (default ``$IRC_CACHE_DIR``, ~/.cache/irc)."""
    if cache_dir is None:
        cache_dir = os.environ.get("IRC_CACHE_DIR") or Path.home() / ".cache" / "irc"
    return Path(cache_dir) / f"costs-{_digest(machine)}.json"


def layer_signature(op: Op, precision: str) -> str:
    """What a layer's kernel time depends on, as a JSON string (the cache key)."""
    x = op.operands[0].type.shape
    attrs = {k: v for k, v in op.attrs.items() if k not in ("act_min", "act_max")}
    return json.dumps({"kind": op.kind, "input": [1, *x[1:]], "weight":
                       list(op.operands[1].type.shape), "bias": len(op.operands) > 2,
                       "attrs": attrs, "precision": precision},
                      sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist")
                      else str(v))  # fmt: skip


def model_key(graph: Graph, ops: list[Op]) -> str:
    """The key of a model's ``other_latency``: its layers' signatures and the kinds and
    batch-1 shapes of every other op."""
    layer_ids = {id(op) for op in ops}
    parts = [layer_signature(op, "fp32") for op in ops]
    for op in graph.ops:
        if id(op) not in layer_ids and not has_trait(op.kind, "constant"):
            shapes = [[1, *v.type.shape[1:]] if v.type.shape else [] for v in op.results]
            parts.append(f"{op.kind}{shapes}")
    return _digest(parts)


class CostCache:
    """The JSON file of measurements for one machine: ``layers`` and ``models`` dicts."""

    def __init__(self, path: Path, machine: dict):
        self.path, self.machine = Path(path), machine
        data = self._read(warn=True) or {"layers": {}, "models": {}}
        self.layers, self.models = data["layers"], data["models"]

    def _read(self, warn: bool) -> dict | None:
        """The file's valid entries; None (with a warning) when it is unreadable."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            if data["version"] != CACHE_VERSION or data["machine"] != self.machine:
                raise ValueError("another version or machine")
            layers = {k: e for k, e in data["layers"].items() if _valid_entry(e)}
            models = {k: e for k, e in data["models"].items()
                      if _number(e.get("other_latency"))}  # fmt: skip
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            if warn:
                warnings.warn(f"ignoring the unreadable cost cache {self.path}", stacklevel=4)
            return None
        return {"layers": layers, "models": models}

    def save(self) -> None:
        """Merge with the file as it is now and replace it atomically (never raises)."""
        on_disk = self._read(warn=False) or {"layers": {}, "models": {}}
        layers = {**on_disk["layers"], **self.layers}
        models = {**on_disk["models"], **self.models}
        data = {"version": CACHE_VERSION, "machine": self.machine, "layers": layers,
                "models": models}  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f, indent=0, sort_keys=True)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            warnings.warn(f"cannot write the cost cache {self.path}: {e}", stacklevel=3)
            return
        self.layers, self.models = layers, models


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf")


def _valid_entry(e) -> bool:
    """A layer entry as ``build_cost_model`` writes it (anything else is dropped)."""
    if not isinstance(e, dict) or (e.get("precision"), e.get("class")) not in DEFAULT_RATES:
        return False
    timed = [e[k] > 0 for k in ("seconds", "quantize", "dequantize") if _number(e.get(k))]
    numbers = [_number(e.get(k)) for k in ("macs", "in", "out", "params")]
    return (isinstance(e.get("allowed"), bool) and all(numbers) and all(timed)
            and len(timed) == sum(k in e for k in ("seconds", "quantize", "dequantize"))
            and ("seconds" in e or not e["allowed"]))  # fmt: skip
