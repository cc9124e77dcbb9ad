"""The compile stages: one-way functions from a model to a compiled program.

    >>> graph = float_graph("mobilenetv2.onnx")                   # load + float pipeline
    >>> calibration = calibrate(graph, "calib/", preprocess="torchvision", limit=64)
    >>> calibration = calibration.with_statistics(
    ...     rounding_statistics(graph, "calib/", preprocess="torchvision"))   # for GPTQ
    >>> quantized = quantize(graph, {"default": "int8"}, calibration)        # L3 graph
    >>> model = build(quantized, num_threads=1)                   # a CompiledModel
    >>> model = build_plan(graph, "int8", calibration, num_threads=1)       # the two at once

Each stage returns a new value and leaves its arguments as they were. ``irc.compile``,
the decision (``irc.decision``), the benchmark and the bench scripts are clients of these
functions; nothing else loads, calibrates or quantizes a model.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from irc.build import build, load, load_batch_open, load_model, static_graph
from irc.calibration import COMPILE_METHOD, Calibration
from irc.calibration import calibrate as reference_calibrate
from irc.calibration.data import model_batches
from irc.calibration.progress import note
from irc.compile_options import CALIBRATION_ENGINES
from irc.compiled import CompiledModel
from irc.errors import InputError
from irc.ir import Graph
from irc.measure import energy_ratio_db
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE, quantize_pipeline
from irc.precision import as_plan
from irc.run_statistics import GPTQ_SAMPLES, layer_hessians, rounding_statistics
from irc.run_statistics import calibrate as compiled_calibrate
from irc.specialize import specialize

HISTOGRAM_METHOD = "mse"  # the histogram method ``auto`` gathers its statistics with
RANGE_CANDIDATES = ("minmax", "mse")  # the ranges ``auto`` chooses between
RANGE_SAMPLES = 8  # calibration inputs the candidates are compared on

__all__ = [
    "GPTQ_SAMPLES",
    "build",
    "build_plan",
    "calibrate",
    "choose_ranges",
    "float_graph",
    "layer_hessians",
    "load",
    "load_batch_open",
    "load_model",
    "quantize",
    "rounding_statistics",
    "static_graph",
]


def float_graph(model, pipeline: str = DEFAULT_FLOAT_PIPELINE, *, input_shapes=None,
                context: PassContext | None = None) -> Graph:  # fmt: skip
    """``model`` (as for ``irc.build.load``) loaded and run through the float ``pipeline``;
    ``context`` collects the passes' statistics when given. ``input_shapes`` specialise the
    inputs first, before the pipeline folds shape arithmetic and before any calibration;
    a symbolic batch stays symbolic where the model allows (``irc.build.load_batch_open``)."""
    graph = load_batch_open(model, input_shapes)
    PassManager(pipeline, context or PassContext()).run(graph)
    return graph


def calibrate(graph: Graph, data, method: str = "minmax", *, engine: str = "compiled",
              num_threads: int | None = None, **options) -> Calibration:  # fmt: skip
    """Activation ranges of float ``graph`` over ``data`` (``options`` as for
    ``irc.calibration.calibrate``: ``preprocess``, ``limit``, ``progress``, ...); ``method``
    ``auto`` (irc.compile's default) chooses between the ``minmax`` and ``mse`` ranges by
    the uniform INT8 model's output error (``choose_ranges``). ``engine``:
    ``compiled`` runs the graph's compiled float program, ``reference`` the numpy
    reference interpreter (every op, slowly)."""
    if engine not in CALIBRATION_ENGINES:
        raise InputError(
            f"calibration engine must be one of {', '.join(CALIBRATION_ENGINES)}; got {engine!r}"
        )
    if method == COMPILE_METHOD:
        histograms = calibrate(graph, data, HISTOGRAM_METHOD, engine=engine,
                               num_threads=num_threads, **options)  # fmt: skip
        return choose_ranges(graph, histograms, data, preprocess=options.get("preprocess"),
                             num_threads=num_threads,
                             progress=bool(options.get("progress", True)))  # fmt: skip
    if engine == "reference":
        return reference_calibrate(graph, data, method, **options)
    return compiled_calibrate(graph, data, method, num_threads=num_threads, **options)


def choose_ranges(
    graph: Graph, histograms: Calibration, data, *, preprocess=None,
    num_threads: int | None = None, progress: bool = True,
) -> Calibration:  # fmt: skip
    """The ``auto`` calibration method: of ``RANGE_CANDIDATES`` recomputed from
    ``histograms`` (a calibration of float ``graph`` that kept histograms), the ranges whose
    uniform INT8 model is nearest the float model on the first ``RANGE_SAMPLES`` inputs of
    ``data`` (the least noise-to-signal ratio, averaged over the graph's outputs; on a tie
    the first, ``minmax``). Its ``scores`` hold each candidate's output SQNR (dB), and a
    line on stderr names the choice. Data that cannot be read again (a one-pass iterator)
    keeps ``minmax``.

    No one range suits every model: least-error ranges (``mse``) clip rare large values,
    which most layers absorb and some cannot (a detector's score map before its sigmoid);
    min–max ranges clip nothing and spend levels on those rare values instead."""
    candidates = {m: histograms.recompute(m) for m in RANGE_CANDIDATES}
    batches = _sample_batches(graph, data, preprocess)
    if not batches:
        return candidates[RANGE_CANDIDATES[0]]
    static = specialize(graph, {name: array.shape for name, array in batches[0].items()})
    reference = _outputs(build(static, num_threads=num_threads, cache=False, warmup=False),
                         batches)  # fmt: skip
    noise = {}
    for method, calibration in candidates.items():
        quantized = quantize(static, "int8", calibration.with_statistics(None))
        model = build(quantized, num_threads=num_threads, cache=False, warmup=False)
        noise[method] = _noise_ratio(reference, _outputs(model, batches))
    best = min(RANGE_CANDIDATES, key=lambda m: noise[m])
    scores = {m: energy_ratio_db(1.0, noise[m]) for m in RANGE_CANDIDATES}
    shown = ", ".join(f"{m} {db:.1f} dB" for m, db in scores.items())
    note(f"calibrate: {best} ranges (uniform INT8 output SQNR: {shown})", enabled=progress)
    return candidates[best].with_scores(scores)


def _sample_batches(graph: Graph, data, preprocess) -> list[dict[str, np.ndarray]]:
    """The first ``RANGE_SAMPLES`` inputs of ``data`` in batches of one shape (the graph's
    static batch, else 1); empty when ``data`` is a one-pass iterator, already read."""
    if isinstance(data, Iterator):
        return []
    source = model_batches(graph, data, batch_size=1, preprocess=preprocess, limit=RANGE_SAMPLES)
    batches = list(source.batches)
    shapes = [{name: array.shape for name, array in b.items()} for b in batches]
    return [b for b, shape in zip(batches, shapes) if shape == shapes[0]]


def _outputs(model: CompiledModel, batches) -> list[list[np.ndarray]]:
    """``model``'s outputs (float64) on each of ``batches``."""
    names = [v.name for v in model.graph.inputs]
    return [[np.asarray(y, np.float64) for y in model(*(b[n] for n in names))]
            for b in batches]  # fmt: skip


def _noise_ratio(reference, outputs) -> float:
    """The noise-to-signal ratio of ``outputs`` against ``reference``, per graph output
    over every batch, averaged over the outputs."""
    ratios = []
    for k in range(len(reference[0])):
        signal = sum(float(np.sum(r[k] * r[k])) for r in reference)
        noise = sum(float(np.sum((o[k] - r[k]) ** 2)) for o, r in zip(outputs, reference))
        ratios.append(noise / max(signal, 1e-300))
    return float(np.mean(ratios))


def quantize(graph: Graph, precision, calibration: Calibration | None, *,
             weights: str = "mse", context: PassContext | None = None,
             rounding_memo: dict | None = None) -> Graph:  # fmt: skip
    """A copy of float ``graph`` at ``precision`` (a precision name, a layer → precision
    mapping or a ``PrecisionPlan``), lowered to L3: integer layers rounded on
    ``calibration``'s ranges (GPTQ where it holds rounding statistics), 4/2-bit weights
    packed. ``weights``: the weight clipping (``mse`` or ``minmax``). ``rounding_memo``: a
    dict kept across compiles of plans of this graph, clipping and calibration, in which
    each layer's rounding is done once per precision (``passes/quantize.py``)."""
    plan = as_plan(precision)
    if not plan.is_float and calibration is None:
        raise InputError(
            "the precision plan has integer layers: give calibration data "
            "(calibration=array, iterable of batches, or image folder)"
        )
    ctx = context or PassContext()
    ctx.analyses["calibration"] = calibration if calibration is not None else {}
    ctx.analyses["precision_plan"] = plan
    if rounding_memo is not None:
        ctx.analyses["rounding_memo"] = rounding_memo
    quantized = graph.clone()
    PassManager(quantize_pipeline(weights), ctx).run(quantized)
    return quantized


def build_plan(graph: Graph, precision, calibration: Calibration | None, *, weights: str = "mse",
               input_shapes=None, num_threads: int | None = None, cache: bool = True,
               warmup: bool = True, stats=(), rounding_memo: dict | None = None,
               ) -> CompiledModel:  # fmt: skip
    """``quantize`` then ``build``: float ``graph`` compiled at ``precision``, its input
    shapes specialised to ``input_shapes`` after quantization (the batch: ``float_graph``
    specialised the rest before calibration, so a calibration of any batch applies); the
    model's ``stats`` hold ``stats`` (earlier stages'), the quantize passes' and the
    build's."""
    ctx = PassContext()
    quantized = quantize(graph, precision, calibration, weights=weights, context=ctx,
                         rounding_memo=rounding_memo)  # fmt: skip
    if input_shapes:
        quantized = specialize(quantized, input_shapes)
    model = build(quantized, num_threads=num_threads, cache=cache, warmup=warmup,
                  stats=[*stats, *ctx.statistics])  # fmt: skip
    model.calibration = calibration
    return model
