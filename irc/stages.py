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

from irc.build import build, load, load_batch_open, load_model, static_graph
from irc.calibration import Calibration
from irc.calibration import calibrate as reference_calibrate
from irc.compile_options import CALIBRATION_ENGINES
from irc.compiled import CompiledModel
from irc.errors import InputError
from irc.ir import Graph
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE, quantize_pipeline
from irc.precision import as_plan
from irc.range_choice import AUTO, HISTOGRAM_METHOD, choose_ranges
from irc.run_statistics import GPTQ_SAMPLES, layer_hessians, rounding_statistics
from irc.run_statistics import calibrate as compiled_calibrate
from irc.specialize import specialize

__all__ = [
    "GPTQ_SAMPLES",
    "build",
    "build_plan",
    "calibrate",
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
    the uniform INT8 model's output error (``irc.range_choice``). ``engine``:
    ``compiled`` runs the graph's compiled float program, ``reference`` the numpy
    reference interpreter (every op, slowly)."""
    if engine not in CALIBRATION_ENGINES:
        raise InputError(
            f"calibration engine must be one of {', '.join(CALIBRATION_ENGINES)}; got {engine!r}"
        )
    if method == AUTO:
        histograms = calibrate(graph, data, HISTOGRAM_METHOD, engine=engine,
                               num_threads=num_threads, **options)  # fmt: skip
        return choose_ranges(graph, histograms, data, preprocess=options.get("preprocess"),
                             num_threads=num_threads,
                             progress=bool(options.get("progress", True)))  # fmt: skip
    if engine == "reference":
        return reference_calibrate(graph, data, method, **options)
    return compiled_calibrate(graph, data, method, num_threads=num_threads, **options)


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
