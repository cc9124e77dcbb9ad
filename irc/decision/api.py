"""``irc.compile(..., strategy=...)``: calibrate, choose the precisions, compile the plan.

    >>> model = irc.compile("mobilenetv2.onnx", calibration="calib/", preprocess="torchvision",
    ...                     strategy="auto", budgets=Budgets(max_bytes=parse_size("2.3MB"),
    ...                                                      max_drop=1.0))
    >>> model.choice.decision.plan            # layer -> precision; model.choice.to_dict()

The sample for sensitivity and verification is the first ``sensitivity_limit`` calibration
inputs. When the calibration data is a folder with a ``labels.txt`` (``file label`` per
line), their labels make Ω a loss change, and a top-1 drop budget is verified on labelled
images kept apart from everything the compile fits (``holdout``, ``irc.decision.holdout``:
by default half the folder's images), unless ``evaluate`` is given.

Each stage's result is kept in the stage cache (``irc.decision.stage_cache``; the option
``stage_cache``: True for ``$IRC_CACHE_DIR/stages`` or ``~/.cache/irc/stages``, a folder,
or False) as soon as the stage ends: the calibration, GPTQ's rounding statistics, the
sensitivity table and the verified choice. A second compile with the same model, data and
options reuses them (one ``reused`` line per stage on stderr with ``progress``); when the
choice itself is reused, only its plan is compiled, and ``model.choice.reused`` is True.

``sensitivity_table``: a ``SensitivityTable``, or a path (``.json`` or ``.csv``): when the
file exists it must hold a table of this model (InputError naming the file and the first
layer that differs otherwise) and is used instead of measuring; when it does not, the
table measured is written there.

When the budgets cannot be met, ``irc.decision.BudgetError`` is raised as before, and when
plans were verified first its ``partial`` holds what was reached
(``irc.decision.choose.PartialChoice``): ``attempts`` (Decision, Verification, missed
budgets), ``best`` (the attempt closest to the budgets) and ``best_plan()`` (its plan as
``precision=`` takes it), ``table``, ``cost``, ``calibration``, and ``to_dict()`` (a report).
"""

from __future__ import annotations

import os
import time

import numpy as np

from irc.calibration import Calibration
from irc.calibration.data import sample_inputs
from irc.calibration.progress import StageTimes, note, stage
from irc.compile_options import CompileOptions
from irc.compiled import CompiledModel
from irc.decision.budgets import BudgetError, Budgets
from irc.decision.choose import Choice, annotate, choose
from irc.decision.holdout import HeldOut, holdout_split
from irc.decision.rounding import analyze_best, plan_calibration
from irc.decision.sensitivity import analyze, layer_info
from irc.decision.stage_cache import StageCache
from irc.decision.table import SensitivityTable, mismatch, read_table
from irc.errors import InputError
from irc.pipelines import float_pipeline_to_quantize
from irc.stages import build_plan, calibrate, float_graph, rounding_statistics
from irc.support import quantizable_layers


def compile_with_strategy(model, input_shapes, options: CompileOptions) -> CompiledModel:
    """See ``irc.compile``; returns the chosen plan's CompiledModel with ``.choice`` set and
    ``compile_seconds`` holding each stage's seconds in the order they ran (``load``,
    ``calibrate``, ``rounding statistics``, ``sample data``, ``sensitivity``, then
    ``choose``'s), and ``total``."""
    start = time.perf_counter()
    data = options.calibration
    if data is None or isinstance(data, Calibration):
        raise InputError(
            f"strategy {options.strategy!r} needs calibration data (calibration=array, "
            "iterable of batches or image folder): its first inputs are the sensitivity sample"
        )
    times = StageTimes()
    with times.timing("load"):
        graph = float_graph(model, float_pipeline_to_quantize(options.pipeline))
    with times.timing("held-out images"):
        options, held_out = holdout_split(graph, options)
    if held_out is None:
        del times["held-out images"]
    with times.timing("load"):
        cache = StageCache.open(graph, options, input_shapes)
    calibrated = _calibration(graph, options, cache, times)
    table = given_table(graph, options)
    if table is None and cache is not None:
        table = cache.load_table()
        if table is not None:
            write_table_file(table, options)
    reused = None
    if table is not None and cache is not None and options.evaluate is None:
        reused = cache.load_choice(table)
    if reused is not None:
        choice = _rebuild(reused, graph, calibrated, options, input_shapes, times)
    else:
        choice = _measure_and_choose(graph, calibrated, table, options, input_shapes, cache,
                                     times, held_out)  # fmt: skip
    compiled = choice.model
    compiled.choice = choice
    compiled.calibration = calibrated
    compiled.compile_seconds = {**times, **choice.seconds, "total": time.perf_counter() - start}
    return compiled


def _calibration(graph, options: CompileOptions, cache, times: StageTimes) -> Calibration:
    """The calibration of ``graph`` (with GPTQ statistics unless rounding is nearest), from
    the stage cache or computed and kept there."""
    data = options.calibration
    calibrated = None if cache is None else cache.load_calibration()
    if calibrated is None:
        with times.timing("calibrate"):
            calibrated = calibrate(graph, data, options.calibration_method,
                                   engine=options.calibration_engine,
                                   preprocess=options.preprocess,
                                   limit=options.calibration_limit,
                                   progress=options.progress)  # fmt: skip
        if cache is not None:
            cache.save_calibration(calibrated)
    if options.weight_rounding == "nearest":
        return calibrated
    statistics = None if cache is None else cache.load_statistics()
    if statistics is None:
        with times.timing("rounding statistics"):
            statistics = rounding_statistics(graph, data, preprocess=options.preprocess,
                                             skip=options.sensitivity_limit,
                                             limit=options.calibration_limit,
                                             progress=options.progress)  # fmt: skip
        if cache is not None:
            cache.save_statistics(statistics)
    return calibrated.with_statistics(statistics)


def given_table(graph, options: CompileOptions) -> SensitivityTable | None:
    """The sensitivity table ``options.sensitivity_table`` gives: a table, or a file that
    exists, checked to be of ``graph``'s layers (InputError otherwise); None to measure."""
    given = options.sensitivity_table
    if given is None or (not isinstance(given, SensitivityTable) and not os.path.isfile(given)):
        return None
    layers = [layer_info(op) for op in quantizable_layers(graph)]
    if isinstance(given, SensitivityTable):
        problem = mismatch(given, layers)
        if problem:
            raise InputError(f"sensitivity_table is the table of another model: {problem}")
        return given
    table = read_table(given, layers)
    note(f"sensitivity: reused from {given} ({len(table.layers)} layers)",
         enabled=options.progress)  # fmt: skip
    return table


def _measure_and_choose(graph, calibrated, table, options: CompileOptions, input_shapes, cache,
                        times: StageTimes, held_out: HeldOut | None) -> Choice:  # fmt: skip
    """Sample the data, measure the sensitivity table (unless given), choose and verify
    (top-1 on ``held_out`` when given); each result kept in the stage cache. A
    BudgetError's ``partial`` gets the calibration."""
    data, budgets = options.calibration, options.budgets
    evaluate = options.evaluate if held_out is None else held_out
    with times.timing("sample data"):
        sample, found = sample_inputs(graph, data, options.preprocess, options.sensitivity_limit)
    labels = found if options.labels is None else np.asarray(options.labels)[: len(sample)]
    if budgets is not None and budgets.max_drop is not None and labels is None and evaluate is None:
        raise BudgetError(
            "a top-1 drop budget needs labelled data (labels) or an evaluation function"
        )
    memo: dict = {}  # each layer's roundings, measured once, compiled again from here
    if table is None:
        with times.timing("sensitivity"):
            table = measure_table(graph, calibrated, sample, labels, options, memo)
        if cache is not None:
            cache.save_table(table)
        write_table_file(table, options)
    try:
        choice = choose(graph, calibrated, sample, strategy=options.strategy,
                        budgets=budgets or Budgets(), labels=labels, evaluate=evaluate,
                        input_shapes=input_shapes, num_threads=options.num_threads,
                        progress=options.progress, strategy_options=options.strategy_options,
                        weights=options.weight_clipping, rounding=options.weight_rounding,
                        table=table, executor=options.executor,
                        rounding_memo=memo)  # fmt: skip
    except BudgetError as e:
        if e.partial is not None:
            e.partial.calibration = calibrated
        raise
    if cache is not None and options.evaluate is None:
        cache.save_choice(choice)
    return choice


def write_table_file(table: SensitivityTable, options: CompileOptions) -> None:
    """Write ``table`` to the file ``options.sensitivity_table`` names, if it names one."""
    if isinstance(options.sensitivity_table, (str, os.PathLike)):
        table.save(options.sensitivity_table)


def measure_table(graph, calibrated, sample, labels, options: CompileOptions,
                  rounding_memo: dict | None = None) -> SensitivityTable:  # fmt: skip
    """The sensitivity table of ``graph`` on ``sample`` (both roundings with ``best``);
    ``rounding_memo`` keeps the layers' roundings for the plans compiled after."""
    analyzer = analyze_best if options.weight_rounding == "best" else analyze
    return analyzer(graph, calibrated, sample, labels=labels, num_threads=options.num_threads,
                    weights=options.weight_clipping, progress=options.progress,
                    rounding_memo=rounding_memo)  # fmt: skip


def _rebuild(choice: Choice, graph, calibrated, options: CompileOptions, input_shapes,
             times: StageTimes) -> Choice:  # fmt: skip
    """A reused choice with its plan compiled on ``calibrated`` (as ``choose`` compiles it)
    and annotated; its verification is the cached one."""
    plan = {"default": "fp32", **choice.decision.plan}
    with times.timing("build"), stage("build the reused plan", enabled=options.progress):
        choice.model = build_plan(graph, plan, plan_calibration(calibrated, choice.table, plan),
                                  weights=options.weight_clipping, input_shapes=input_shapes,
                                  num_threads=options.num_threads)  # fmt: skip
        annotate(choice)
    choice.seconds = {}
    return choice
