"""``irc.compile(..., strategy=...)``: calibrate, choose the precisions, compile the plan.

    >>> model = irc.compile("mobilenetv2.onnx", calibration="calib/", preprocess="torchvision",
    ...                     strategy="auto", budgets=Budgets(max_bytes=parse_size("2.3MB"),
    ...                                                      max_drop=1.0))
    >>> model.choice.decision.plan            # layer -> precision; model.choice.to_dict()

The sample for sensitivity and verification is the first ``sensitivity_limit`` calibration
inputs. When the calibration data is a folder with a ``labels.txt`` (``file label`` per
line), their labels make Ω a loss change, and a top-1 drop budget is verified on all the
labelled calibration images used (``calibration_limit``), unless ``evaluate`` is given.
"""

from __future__ import annotations

import time

import numpy as np

from irc.calibration import Calibration, load_labelled_folder
from irc.calibration.data import sample_inputs
from irc.compile_options import CompileOptions
from irc.compiled import CompiledModel
from irc.decision.budgets import Budgets
from irc.decision.choose import choose
from irc.errors import InputError
from irc.measure import top1
from irc.stages import calibrate, float_graph, rounding_statistics


def compile_with_strategy(model, input_shapes, options: CompileOptions) -> CompiledModel:
    """See ``irc.compile``; returns the chosen plan's CompiledModel with ``.choice`` set."""
    start = time.perf_counter()
    data = options.calibration
    if data is None or isinstance(data, Calibration):
        raise InputError(
            f"strategy {options.strategy!r} needs calibration data (calibration=array, "
            "iterable of batches or image folder): its first inputs are the sensitivity sample"
        )
    graph = float_graph(model, options.pipeline)
    calibrated = calibrate(graph, data, options.calibration_method,
                           engine=options.calibration_engine, preprocess=options.preprocess,
                           limit=options.calibration_limit, progress=options.progress)  # fmt: skip
    calibrate_seconds = time.perf_counter() - start
    if options.rounding != "nearest":
        statistics = rounding_statistics(graph, data, preprocess=options.preprocess,
                                         skip=options.sensitivity_limit,
                                         limit=options.calibration_limit,
                                         progress=options.progress)  # fmt: skip
        calibrated = calibrated.with_statistics(statistics)
    sample, found = sample_inputs(graph, data, options.preprocess, options.sensitivity_limit)
    budgets, evaluate = options.budgets, options.evaluate
    if found is not None and evaluate is None and budgets is not None and budgets.max_drop:
        evaluate = labelled_top1(data, options.preprocess, options.calibration_limit)
    labels = found if options.labels is None else np.asarray(options.labels)[: len(sample)]
    choice = choose(graph, calibrated, sample, strategy=options.strategy,
                    budgets=budgets or Budgets(), labels=labels, evaluate=evaluate,
                    input_shapes=input_shapes, num_threads=options.num_threads,
                    progress=options.progress, strategy_options=options.strategy_options,
                    weights=options.weight_clipping, rounding=options.rounding)  # fmt: skip
    compiled = choice.model
    compiled.choice = choice
    compiled.calibration = calibrated
    compiled.compile_seconds = {
        "calibrate": calibrate_seconds,
        "sensitivity": choice.table.seconds,
        "total": time.perf_counter() - start,
    }
    return compiled


def labelled_top1(folder, preprocess, limit: int | None):
    """A function: compiled model → top-1 (%) over the labelled images of ``folder``."""
    xs, ys = zip(*load_labelled_folder(folder, preprocess, limit=limit))
    images, labels = np.concatenate(xs), np.concatenate(ys)

    def top1_of(model) -> float:
        return top1(lambda x: model(x)[0], images, labels,
                       batch=model.graph.inputs[0].type.shape[0])  # fmt: skip

    return top1_of
