"""The ``auto`` calibration method: activation ranges chosen by what they do to the model.

No one way of turning a value's statistics into an int8 range suits every model: the
least-error range (``mse``) clips rare large values, which most layers absorb and some
cannot (a detector's score map before its sigmoid); the full observed range (``minmax``)
clips nothing and spends levels on those rare values instead. ``choose_ranges`` builds the
uniform INT8 model with each candidate's ranges (``RANGE_CANDIDATES``, all made from one
set of histograms, so the model runs over the calibration data once), runs it on the
first ``RANGE_SAMPLES`` calibration inputs beside the float model, and keeps the ranges
whose outputs are nearer the float ones: the least noise-to-signal ratio, averaged over
the graph's outputs. On a tie the first candidate, ``minmax``, stays.

    >>> calibration = choose_ranges(graph, histograms, "calib/", preprocess="torchvision")
    >>> calibration.method, calibration.scores      # "mse", {"minmax": 14.0, "mse": 18.1}
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from irc.build import build
from irc.calibration import COMPILE_METHOD, Calibration
from irc.calibration.data import model_batches
from irc.calibration.progress import note
from irc.ir import Graph
from irc.measure import energy_ratio_db
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import quantize_pipeline
from irc.specialize import specialize

AUTO = COMPILE_METHOD  # the calibration method name that asks for this choice
HISTOGRAM_METHOD = "mse"  # the histogram method the statistics are gathered with
RANGE_CANDIDATES = ("minmax", "mse")
RANGE_SAMPLES = 8  # calibration inputs the candidates are compared on


def choose_ranges(
    graph: Graph, histograms: Calibration, data, *, preprocess=None,
    num_threads: int | None = None, progress: bool = True,
) -> Calibration:  # fmt: skip
    """Of ``RANGE_CANDIDATES`` recomputed from ``histograms`` (a calibration of float
    ``graph`` that kept histograms), the one whose uniform INT8 model is nearest the float
    model on the first inputs of ``data``; its ``scores`` hold each candidate's output SQNR
    (dB). Data that cannot be read again (a one-pass iterator) keeps ``minmax``."""
    candidates = {m: histograms.recompute(m) for m in RANGE_CANDIDATES}
    batches = _sample_batches(graph, data, preprocess)
    if not batches:
        return candidates[RANGE_CANDIDATES[0]]
    shapes = {name: array.shape for name, array in batches[0].items()}
    static = specialize(graph, shapes)
    reference = _outputs(static, None, batches, num_threads)
    noise = {m: _noise_ratio(reference, _outputs(static, c, batches, num_threads))
             for m, c in candidates.items()}  # fmt: skip
    best = min(RANGE_CANDIDATES, key=lambda m: noise[m])
    scores = {m: energy_ratio_db(1.0, noise[m]) for m in RANGE_CANDIDATES}
    shown = ", ".join(f"{m} {s:.1f} dB" for m, s in scores.items())
    note(f"calibrate: {best} ranges (uniform INT8 output SQNR: {shown})", enabled=progress)
    return candidates[best].with_scores(scores)


def _sample_batches(graph: Graph, data, preprocess) -> list[dict[str, np.ndarray]]:
    """The first ``RANGE_SAMPLES`` inputs of ``data`` in batches of one shape (the graph's
    static batch, else 1); empty when ``data`` is a one-pass iterator already read."""
    if isinstance(data, Iterator):
        return []
    source = model_batches(graph, data, batch_size=1, preprocess=preprocess, limit=RANGE_SAMPLES)
    batches = list(source.batches)
    if not batches:
        return []
    first = {name: array.shape for name, array in batches[0].items()}
    return [b for b in batches if {n: a.shape for n, a in b.items()} == first]


def _outputs(static: Graph, calibration: Calibration | None, batches, num_threads):
    """The outputs of ``static`` (float, or uniform INT8 on ``calibration``) per batch."""
    graph = static
    if calibration is not None:
        ctx = PassContext()
        ctx.analyses["calibration"] = calibration.with_statistics(None)
        ctx.analyses["precision_plan"] = "int8"
        graph = static.clone()
        PassManager(quantize_pipeline("mse"), ctx).run(graph)
    model = build(graph, num_threads=num_threads, cache=False, warmup=False)
    names = [v.name for v in static.inputs]
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
