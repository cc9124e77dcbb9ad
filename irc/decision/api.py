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

import os
import time

import numpy as np

from irc.decision.budgets import Budgets
from irc.errors import InputError


def compile_with_strategy(model, input_shapes, pipeline, num_threads, *, strategy, budgets,
                          calibration, calibration_method, weight_clipping, preprocess,
                          calibration_limit,
                          progress, labels=None, evaluate=None, sensitivity_limit=16,
                          strategy_options=None, rounding="nearest"):  # fmt: skip
    """See ``irc.compile``; returns the chosen plan's CompiledModel with ``.choice`` set."""
    from irc.calibration import Calibration, calibrate
    from irc.compile import _load, add_rounding_statistics
    from irc.decision.choose import choose
    from irc.pass_manager import PassContext, PassManager

    start = time.perf_counter()
    if calibration is None or isinstance(calibration, Calibration):
        raise InputError(
            f"strategy {strategy!r} needs calibration data (calibration=array, iterable of "
            "batches or image folder): its first inputs are the sensitivity sample"
        )
    graph = _load(model, None)
    PassManager(pipeline, PassContext()).run(graph)
    calibrated = calibrate(graph, calibration, calibration_method, preprocess=preprocess,
                           limit=calibration_limit, progress=progress)  # fmt: skip
    calibrate_seconds = time.perf_counter() - start
    add_rounding_statistics(graph, calibrated, calibration, rounding, preprocess, progress,
                            skip=sensitivity_limit)  # fmt: skip
    sample, found = sample_inputs(graph, calibration, preprocess, sensitivity_limit)
    if found is not None and evaluate is None and budgets is not None and budgets.max_drop:
        evaluate = labelled_top1(calibration, preprocess, calibration_limit)
    labels = found if labels is None else np.asarray(labels)[: len(sample)]
    choice = choose(graph, calibrated, sample, strategy=strategy, budgets=budgets or Budgets(),
                    labels=labels, evaluate=evaluate, input_shapes=input_shapes,
                    num_threads=num_threads, progress=progress,
                    strategy_options=strategy_options, weights=weight_clipping,
                    rounding=rounding)  # fmt: skip
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
    from irc.calibration import load_labelled_folder

    xs, ys = zip(*load_labelled_folder(folder, preprocess, limit=limit))
    images, labels = np.concatenate(xs), np.concatenate(ys)

    def top1(model) -> float:
        batch = model.graph.inputs[0].type.shape[0]
        hits = 0
        for start in range(0, len(images) - batch + 1, batch):
            logits = model(np.ascontiguousarray(images[start : start + batch]))[0]
            hits += int(np.sum(np.argmax(logits, axis=1) == labels[start : start + batch]))
        return 100.0 * hits / (len(images) // batch * batch)

    return top1


def sample_inputs(graph, data, preprocess, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``limit`` inputs of ``data`` as one array, and their labels if a folder has
    a ``labels.txt``."""
    from irc.calibration import load_labelled_folder
    from irc.calibration.data import model_batches

    if isinstance(data, (str, os.PathLike)) and os.path.isfile(os.path.join(data, "labels.txt")):
        xs, ys = zip(*load_labelled_folder(data, preprocess, limit=limit))
        return np.concatenate(xs), np.concatenate(ys)
    source = model_batches(graph, data, preprocess=preprocess, limit=limit)
    name = graph.inputs[0].name
    arrays = [batch[name] for batch in source.batches]
    return np.concatenate(arrays).astype(np.float32), None
