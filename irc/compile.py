"""``irc.compile``: a model in, a callable compiled by the Numba backend out.

    >>> import irc
    >>> model = irc.compile("mobilenetv2.onnx")             # batch specialised to 1
    >>> (logits,) = model(x)                                 # or model({"input": x})
    >>> print(model.driver_source)                           # the generated driver

A thin facade over the compile stages (``irc.stages``): the float graph, calibration and
rounding statistics, quantization, build; or, given a ``strategy``, over the decision
(``irc.decision.api``), which chooses each layer's precision and builds that plan.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from irc.build import build, check_threads, clear_cache, graph_key, load
from irc.calibration import Calibration
from irc.calibration.data import fit_preprocess
from irc.calibration.progress import StageTimes, stage
from irc.compile_options import CompileOptions
from irc.compiled import CompiledModel, OpTiming, format_profile
from irc.decision.api import compile_with_strategy
from irc.errors import InputError, IrcError
from irc.pass_manager import PassContext
from irc.pipelines import float_deploy_pipeline, float_pipeline_to_quantize
from irc.precision import as_plan
from irc.stages import (
    build_plan,
    calibrate,
    float_graph,
    load_batch_open,
    rounding_statistics,
)


def compile(  # noqa: A001 - the public name irc.compile
    model,
    input_shapes: Mapping[str, tuple] | None = None,
    options: CompileOptions | None = None,
    **settings,
) -> CompiledModel:
    """Compile ``model`` (an ONNX path, ModelProto or bytes, a text IR path, or a Graph).

    The settings are the fields of ``options`` (an ``irc.CompileOptions``), given as keyword
    arguments or as that one object (keywords override its fields).

    ``input_shapes`` (input name → shape) specialises symbolic dimensions (an ONNX dim of
    ``-1``, unnamed or named), before anything else: the float passes fold the shape
    arithmetic and calibration runs on the specialised graph (a symbolic batch stays open
    for calibration where the model allows, and is fixed at build). The backend needs static
    shapes: a symbolic leading (batch) dimension left unspecified becomes 1; any other
    symbolic dimension must be given (an error names the input otherwise). ``pipeline`` is
    the float pass pipeline (``""`` runs none; the default leaves hard_swish unfused when
    the model is quantized, ``irc.pipelines.QUANTIZED_FLOAT_PIPELINE``). ``num_threads``
    fixes the Numba thread count of every call; by default each call runs on one thread or
    on all of Numba's, whichever the model's recent calls found faster (on a busy machine,
    all can be slower than one). ``warmup`` runs the model once on zeros, so Numba compiles
    (or loads from its cache) every kernel here rather than on the first call.
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
    (``irc.decision.rounding``). By default (None) a strategy compile uses ``best``, any
    other ``nearest``. ``calibration_engine``: ``compiled`` (the float model's
    compiled program runs the calibration data) or ``reference`` (the numpy interpreter).

    With a ``strategy`` (``irc.decision.api``), each stage's result is kept in
    ``stage_cache`` (True: ``$IRC_CACHE_DIR/stages``, else ``~/.cache/irc/stages``; a
    folder; False: off) and reused by a later compile of the same model, data and options;
    ``sensitivity_table`` (a .json/.csv file) is read when it holds this model's table,
    else written. A BudgetError's ``partial`` holds what was measured before the miss.
    ``holdout`` says which labelled images a top-1 drop budget is checked on, apart from
    those calibration, rounding statistics and sensitivity fit on: by default half of a
    labelled calibration folder; a number of its images; another labelled folder; or 0,
    none apart (``irc.decision.holdout``). ``strategy="search"`` compiles and scores
    candidate plans on those images (``irc.decision.search``; ``strategy_options``:
    ``evaluations``, ``width``, ``seed``, ``start``) through ``executor``: None for local
    processes, a ``dask.distributed.Client`` for a cluster, or a concurrent.futures
    Executor.
    ``progress`` shows each stage on stderr; ``compile_seconds`` holds each one's time.
    """
    options = CompileOptions.of(options, settings)
    check_threads(options.num_threads)
    if options.strategy is not None:
        return _compile_with_strategy(model, input_shapes, options)
    start = time.perf_counter()
    times = StageTimes()
    plan = as_plan(options.precision)
    if plan == as_plan("fp32"):
        with times.timing("load"):
            graph = load(model, input_shapes)
        with times.timing("build"), stage("build", enabled=options.progress):
            compiled = build(graph, pipeline=float_deploy_pipeline(options.pipeline),
                             num_threads=options.num_threads, cache=options.cache,
                             warmup=options.warmup)  # fmt: skip
    else:
        ctx = PassContext()
        with times.timing("load"):  # shapes fixed first (a symbolic batch: after calibration)
            pipeline = float_pipeline_to_quantize(options.pipeline)
            graph = float_graph(model, pipeline, input_shapes=input_shapes, context=ctx)
        options = _fitted(options, graph)
        calibration = None if plan.is_float else _calibration(graph, options, times)
        with times.timing("build"), stage("build", enabled=options.progress):
            compiled = build_plan(graph, plan, calibration, weights=options.weight_clipping,
                                  input_shapes=input_shapes, num_threads=options.num_threads,
                                  cache=options.cache, warmup=options.warmup,
                                  stats=ctx.statistics)  # fmt: skip
    compiled.compile_seconds = {**times, "total": time.perf_counter() - start}
    return compiled


def _compile_with_strategy(model, input_shapes, options: CompileOptions) -> CompiledModel:
    """``compile_with_strategy`` on ``model`` specialised to ``input_shapes`` first (the
    decision calibrates what it is given), with a preprocessing preset fitted to it."""
    if not input_shapes and not isinstance(options.preprocess, str):
        return compile_with_strategy(model, input_shapes, options)
    shaped = load_batch_open(model, input_shapes)
    return compile_with_strategy(shaped, input_shapes, _fitted(options, shaped))


def _fitted(options: CompileOptions, graph) -> CompileOptions:
    """``options`` with a preprocessing preset resolved for ``graph``'s input size
    (``irc.calibration.data.fit_preprocess``), so every stage reads the same images."""
    if not isinstance(options.preprocess, str):
        return options
    return dataclasses.replace(options, preprocess=fit_preprocess(graph, options.preprocess))


def _calibration(graph, options: CompileOptions, times: StageTimes) -> Calibration:
    """The calibration the options ask for on float ``graph``: made from data (with GPTQ
    statistics for ``rounding="gptq"``), or the ``Calibration`` given; the stages' seconds
    go to ``times``."""
    data = options.calibration
    if data is None:
        raise InputError(
            "the precision plan has integer layers: give calibration data "
            "(calibration=array, iterable of batches, or image folder)"
        )
    if isinstance(data, Calibration):  # already calibrated (on this model's float graph)
        if options.weight_rounding == "nearest":
            return data.with_statistics(None)  # nearest means nearest
        if data.hessians is None:
            raise InputError(
                f"rounding={options.weight_rounding!r} needs calibration data, not a bare "
                "Calibration"
            )
        return data
    with times.timing("calibrate"):
        calibration = calibrate(graph, data, options.calibration_method,
                                engine=options.calibration_engine, preprocess=options.preprocess,
                                limit=options.calibration_limit,
                                progress=options.progress)  # fmt: skip
    if options.weight_rounding == "gptq":
        with times.timing("rounding statistics"):
            statistics = rounding_statistics(graph, data, preprocess=options.preprocess,
                                             limit=options.calibration_limit,
                                             progress=options.progress)  # fmt: skip
        calibration = calibration.with_statistics(statistics)
    return calibration


__all__ = [
    "CompileOptions",
    "CompiledModel",
    "IrcError",
    "OpTiming",
    "clear_cache",
    "compile",
    "format_profile",
    "graph_key",
]
