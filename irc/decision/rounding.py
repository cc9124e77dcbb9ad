"""``rounding="best"``: the weight rounding chosen per layer and precision, by measurement.

GPTQ's rounding (``irc.gptq``) lowers a layer's output error on the inputs its statistics
came from, but whether that makes the *model* better differs by layer and bit width. So
the sensitivity table is measured with nearest rounding (the calibration without GPTQ
statistics) and with GPTQ (with them), and each (layer, precision) measured both ways
keeps the rounding whose measured ``output_nsr`` (the model output's noise with that layer
alone quantized) is lower; every metric of that cell comes from the kept rounding's
measurement, and the table remembers the choice (``SensitivityTable.rounding``). Nearest
rounding is measured at fp16 and INT8 only (``NEAREST_BITS``): at 4 and 2 bits GPTQ
already keeps, per output channel, nearest rounding where that leaves less output error
on its statistics images (``irc.gptq.gptq_rounding``), so a nearest column there would
repeat that choice on the fewer sample images, at a seventh of the table's time each.
The strategies decide on this one merged table; a plan is then compiled with each layer
rounded as the table chose at the layer's planned precision (``plan_calibration``: GPTQ
statistics only for the layers that keep GPTQ).

    >>> table = analyze_best(graph, calibration, images, labels=labels)   # hessians set
    >>> calibration_of_plan = plan_calibration(calibration, table, decision.plan)
"""

from __future__ import annotations

import numpy as np

from irc.compile_options import ROUNDINGS
from irc.decision.sensitivity import analyze_variants
from irc.decision.table import CANDIDATES, SensitivityTable

__all__ = ["ROUNDINGS", "analyze_best", "merge", "plan_calibration", "without_statistics"]

CHOSEN_BY = "output_nsr"  # the metric that picks a cell's rounding
NEAREST_BITS = ("fp16", "int8")  # the precisions whose nearest rounding is measured too


def without_statistics(calibration):
    """A copy of ``calibration`` without GPTQ statistics: every layer rounds to nearest."""
    return calibration.with_statistics(None)


def merge(nearest: SensitivityTable, gptq: SensitivityTable) -> SensitivityTable:
    """One table of the precisions either measured (in ``CANDIDATES`` order): per (layer,
    precision), every metric of whichever rounding measured the lower ``output_nsr``
    (nearest on ties), or of the one table that measured the precision; the activations'
    noise (the same in both: no weight is rounded) of ``nearest``, else of ``gptq``."""
    if nearest.names != gptq.names:
        raise ValueError("the two sensitivity tables measure different layers")
    both = set(nearest.precisions) | set(gptq.precisions)
    precisions = tuple(p for p in CANDIDATES if p in both)
    precisions += tuple(sorted(both - set(precisions)))
    shape = (len(nearest.names), len(precisions))
    metrics = {m: np.zeros(shape) for m in nearest.metrics}
    rounding = np.full(shape, "nearest", dtype=object)
    for j, p in enumerate(precisions):
        n = nearest.precisions.index(p) if p in nearest.precisions else None
        g = gptq.precisions.index(p) if p in gptq.precisions else None
        if n is None:
            better = np.ones(shape[0], bool)
        elif g is None:
            better = np.zeros(shape[0], bool)
        else:
            better = gptq.metrics[CHOSEN_BY][:, g] < nearest.metrics[CHOSEN_BY][:, n]
        for m, values in metrics.items():
            if n is not None:
                values[:, j] = nearest.metrics[m][:, n]
            if g is not None:
                values[better, j] = gptq.metrics[m][better, g]
        rounding[better, j] = "gptq"
    activations = nearest.activations if nearest.activations is not None else gptq.activations
    return SensitivityTable(list(nearest.layers), precisions, metrics, nearest.images,
                            nearest.loss, nearest.seconds + gptq.seconds,
                            rounding=rounding, activations=activations)  # fmt: skip


def analyze_best(graph, calibration, data, **options) -> SensitivityTable:
    """The merged table of ``graph``: nearest rounding (at the precisions of
    ``NEAREST_BITS``) and GPTQ (``calibration.hessians``, at the integer precisions: fp16
    has no rounding to choose) measured in one pass by ``sensitivity.analyze_variants``,
    merged by ``merge``. ``options`` are ``analyze``'s."""
    precisions = tuple(options.pop("precisions", CANDIDATES))
    integer = tuple(p for p in precisions if p.startswith("int"))
    plain = tuple(p for p in precisions if p in NEAREST_BITS or p not in integer)
    variants = [(without_statistics(calibration), plain), (calibration, integer)]
    nearest, gptq = analyze_variants(graph, variants, data, **options)
    return merge(nearest, gptq)


def plan_calibration(calibration, table: SensitivityTable, plan: dict[str, str]):
    """``calibration`` for compiling ``plan`` as ``table`` chose: its GPTQ statistics kept
    only for the layers whose planned precision keeps GPTQ (itself when the table chose
    no rounding)."""
    if table.rounding is None or calibration is None:
        return calibration
    hessians = calibration.hessians or {}
    default = plan.get("default", "fp32")
    return calibration.with_statistics({
        name: hessians[name]
        for name in table.names
        if name in hessians and table.rounding_of(name, plan.get(name, default)) == "gptq"
    })  # fmt: skip
