"""Calibration: run a graph over sample data and record value ranges.

    >>> from irc.calibration import calibrate
    >>> cal = calibrate(graph, "imagenet-calib256", "entropy", preprocess="torchvision",
    ...                 limit=64)
    >>> cal["input"], cal.params("input")          # (lo, hi), (scale, zero point)

``calibrate`` watches every float value an op computes (and the float graph inputs),
except weights and what is computed from weights alone, or just the names in ``values``.
It runs the graph in the reference interpreter, or with any ``run(batch, observers)`` that
calls the interpreter's observers (the compile stage passes the compiled float program's).
Statistics stream (``observers.py``): memory stays flat however many images are seen.
The graph is only read. The ranges come out in a ``Calibration``, which keeps the
statistics, so ``recompute`` tries another method without running the model again.
Whatever the method, the graph's outputs keep their observed min–max range: they are what
the user reads, and clipping their extremes changes the answer (a classifier's largest
logits tie, a detector's farthest box moves).

Degenerate data calibrate badly without failing (all-zero or constant images quantize
every later layer to few levels and change the model's top-1), so ``calibrate`` warns,
once per calibration, naming what it found: a watched value whose range is zero
(lo == hi), a graph input that is the same in every sample, or fewer than ``MIN_SAMPLES``
(8) samples.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

import numpy as np

from irc.calibration.data import BatchSource, model_batches
from irc.calibration.images import (
    PRESETS,
    ImageSet,
    Preprocess,
    image_set,
    is_labelled,
    list_images,
    load_folder,
    load_image,
    load_labelled_folder,
    split_images,
)
from irc.calibration.observers import (
    COMPILE_METHOD,
    DEFAULT_BINS,
    HISTOGRAM_METHODS,
    METHODS,
    Histogram,
    TensorObserver,
    compute_range,
)
from irc.calibration.progress import Progress
from irc.errors import InputError
from irc.interpreter import run_graph
from irc.ir import Graph, Value
from irc.quant import activation_params

__all__ = [
    "COMPILE_METHOD",
    "DEFAULT_BINS",
    "METHODS",
    "MIN_SAMPLES",
    "PRESETS",
    "BatchSource",
    "Calibration",
    "Histogram",
    "ImageSet",
    "Preprocess",
    "Progress",
    "TensorObserver",
    "calibrate",
    "compute_range",
    "image_set",
    "is_labelled",
    "list_images",
    "load_folder",
    "load_image",
    "load_labelled_folder",
    "model_batches",
    "split_images",
    "watched_values",
]

MIN_SAMPLES = 8  # fewer calibration samples than this: a warning (ranges of a few inputs)


class Calibration(Mapping):
    """Value name → real range (lo, hi), with the method, the sample count and statistics.

    ``ranges`` is a read-only mapping (the object itself reads the same way);
    ``params(name)`` gives the int8 (scale, zero point) of ``irc.quant``.
    """

    def __init__(
        self,
        ranges: dict[str, tuple[float, float]],
        method: str,
        count: int,
        observers: dict[str, TensorObserver],
        *,
        percentile: float = 99.99,
        entropy_bins: int = 256,
        hessians: dict | None = None,
        exact: Iterable[str] = (),
        scores: dict[str, float] | None = None,
    ):
        self.ranges = MappingProxyType(dict(ranges))
        self.exact = frozenset(exact)  # values kept at min–max whatever the method
        self.scores = dict(scores) if scores else None  # method → dB, when "auto" chose
        self.hessians = hessians  # layer name -> irc.gptq.InputStatistics, for GPTQ rounding
        self.method = method
        self.count = count
        self.observers = observers
        self.percentile = percentile
        self.entropy_bins = entropy_bins

    def __getstate__(self) -> dict:
        """Pickled with its ranges as a plain dict (a process executor sends it)."""
        return {**self.__dict__, "ranges": dict(self.ranges)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, ranges=MappingProxyType(state["ranges"]))

    def channel_mean(self, name: str):
        """Mean per channel (axis 1) of value ``name`` over the calibration data (float64
        [C]), or None when not recorded."""
        observer = self.observers.get(name)
        return None if observer is None else observer.channel_mean

    def with_statistics(self, hessians: dict | None) -> Calibration:
        """The same ranges with GPTQ rounding statistics ``hessians`` (layer name →
        ``irc.gptq.InputStatistics``; None: every layer rounds to nearest); ``self`` is
        unchanged."""
        return self._copy(hessians=hessians)

    def with_scores(self, scores: dict[str, float]) -> Calibration:
        """The same calibration, recording what choosing its method measured (method →
        the uniform INT8 model's output SQNR in dB, ``irc.stages.choose_ranges``)."""
        return self._copy(scores=scores)

    def _copy(self, **changes) -> Calibration:
        """A new Calibration of ``self``'s fields with ``changes``."""
        fields = dict(ranges=self.ranges, method=self.method, count=self.count,
                      observers=self.observers, percentile=self.percentile,
                      entropy_bins=self.entropy_bins, hessians=self.hessians,
                      exact=self.exact, scores=self.scores)  # fmt: skip
        return Calibration(**{**fields, **changes})

    def __getitem__(self, name: str) -> tuple[float, float]:
        try:
            return self.ranges[name]
        except KeyError:
            raise KeyError(f"value %{name} was not calibrated") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def params(self, name: str) -> tuple[float, int]:
        """The int8 activation (scale, zero point) of value ``name``'s range."""
        return activation_params(*self[name])

    def recompute(
        self, method: str, *, percentile: float | None = None, entropy_bins: int | None = None
    ) -> Calibration:
        """The ranges ``method`` picks from the same statistics (no new model runs).

        The histogram methods need statistics gathered by one of them.
        """
        _check_method(method)
        percentile = self.percentile if percentile is None else percentile
        entropy_bins = self.entropy_bins if entropy_bins is None else entropy_bins
        _check_options(percentile, entropy_bins)
        if method in HISTOGRAM_METHODS and any(
            o.histogram is None for o in self.observers.values()
        ):
            raise InputError(
                f"method {method!r} needs histograms; this calibration ran {self.method!r}, "
                "which keeps only min/max (calibrate with a histogram method)"
            )
        ranges = _ranges(self.observers, method, percentile, entropy_bins, self.exact)
        return self._copy(ranges=ranges, method=method, percentile=percentile,
                          entropy_bins=entropy_bins, hessians=None, scores=None)  # fmt: skip

    def __repr__(self) -> str:
        return f"<Calibration {self.method}: {len(self)} values over {self.count} samples>"


def calibrate(
    graph: Graph,
    data,
    method: str = "minmax",
    *,
    percentile: float = 99.99,
    batch_size: int = 32,
    preprocess=None,
    limit: int | None = None,
    progress: bool | str = True,
    values: Iterable[str] | None = None,
    bins: int = DEFAULT_BINS,
    entropy_bins: int = 256,
    run=None,
) -> Calibration:
    """Run ``graph`` over ``data`` and return value ranges.

    ``data``: an array [N, ...], a dict of arrays, an iterable of batches, or a folder of
    images with ``preprocess`` (a ``Preprocess`` or a preset name); see
    ``irc.calibration.data``. ``method``: one of ``METHODS``; ``percentile`` is for
    ``"percentile"``, ``entropy_bins`` (256 or 128 levels) for ``"entropy"``, ``bins`` the
    histogram size. At most ``limit`` samples are used, ``batch_size`` at a time (re-cut to
    a static batch dimension). ``progress``: shown on stderr (``irc.calibration.progress``:
    a bar on a terminal, plain lines elsewhere); False hides it, ``"force"`` draws the bar.
    ``values``: calibrate only these value names. ``run(batch, observers)``: runs ``graph``
    on ``batch`` (input name → array), calling each ``observer(op, args, results)`` after
    every op (default: the reference interpreter).
    """
    _check_method(method)
    _check_options(percentile, entropy_bins)
    if progress not in (True, False, "force"):
        raise InputError(f"progress must be True, False or 'force', got {progress!r}")
    watched = watched_values(graph, values)
    use_histogram = method in HISTOGRAM_METHODS
    observers = {name: TensorObserver(use_histogram, bins) for name in watched}
    by_result = {n: observers[n] for n, v in watched.items() if not v.is_graph_input}
    by_input = [(v.name, observers[v.name]) for v in graph.inputs if v.name in watched]
    if run is None:

        def run(batch, hooks) -> None:
            run_graph(graph, batch, observers=hooks)

    def observe(op, args, results) -> None:  # by name: ``run`` may run a copy of ``graph``
        for value, array in zip(op.results, results):
            observer = by_result.get(value.name)
            if observer is not None:
                observer.update(array)

    source = model_batches(graph, data, batch_size=batch_size, preprocess=preprocess, limit=limit)
    count = 0
    first = graph.inputs[0].name
    repeated = _RepeatedInputs()
    with Progress(source.total, enabled=bool(progress), force=progress == "force") as bar:
        for batch in source.batches:
            repeated.update(batch)
            for name, observer in by_input:
                observer.update(batch[name])
            run(batch, [observe] if by_result else [])
            n = int(batch[first].shape[0])
            count += n
            bar.update(n)
    if count == 0:
        raise InputError("data: the calibration set is empty (no samples)")
    bad = [name for name, obs in observers.items() if obs.nonfinite]
    if bad:
        warnings.warn(
            f"calibration: {len(bad)} value(s) held NaN or infinity, left out of their "
            f"ranges: {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}",
            stacklevel=2,
        )
    exact = {v.name for v in graph.outputs if v.name in observers}
    ranges = _ranges(observers, method, percentile, entropy_bins, exact)
    problems = _degenerate(ranges, observers, repeated.names(), count)
    if problems:
        warnings.warn(
            "calibration: degenerate statistics, the quantized model may lose accuracy: "
            + "; ".join(problems)
            + ". Calibrate on representative inputs (real images, preprocessed as in training)",
            stacklevel=_caller_level(),
        )
    return Calibration(
        ranges, method, count, observers, percentile=percentile, entropy_bins=entropy_bins,
        exact=exact,
    )  # fmt: skip


class _RepeatedInputs:
    """Which graph inputs have been the same in every sample so far (a copy of the first
    sample per input, compared with each batch until one differs)."""

    def __init__(self):
        self.first: dict[str, np.ndarray] = {}
        self.same: dict[str, bool] = {}

    def update(self, batch: dict[str, np.ndarray]) -> None:
        """Compare ``batch`` (input name → array [B, ...]) with the first sample."""
        for name, array in batch.items():
            if not self.same.get(name, True) or array.shape[0] == 0:
                continue
            if name not in self.first:
                self.first[name] = array[0].copy()
            first = self.first[name]
            self.same[name] = array.shape[1:] == first.shape and bool((array == first).all())
            if not self.same[name]:
                del self.first[name]

    def names(self) -> list[str]:
        """The inputs identical in every sample seen."""
        return [name for name, same in self.same.items() if same]


def _caller_level() -> int:
    """The ``stacklevel`` of a warning raised by the caller of this function that points at
    the first frame outside irc (the user's call, through the compile stages)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("irc."):
        frame, level = frame.f_back, level + 1
    return level


def _degenerate(ranges, observers, repeated: list[str], count: int) -> list[str]:
    """What makes a calibration's statistics degenerate, one phrase each (none: [])."""
    problems = []
    flat = [n for n, (lo, hi) in ranges.items() if observers[n].seen and lo == hi]
    if flat:
        names = ", ".join(f"%{n}" for n in flat[:5]) + (" …" if len(flat) > 5 else "")
        problems.append(f"{len(flat)} value(s) have range zero (lo == hi): {names}")
    if count > 1:
        problems += [f"input '{name}' is the same in all {count} samples" for name in repeated]
    if count < MIN_SAMPLES:
        problems.append(f"only {count} sample{'s' * (count != 1)} (use at least {MIN_SAMPLES})")
    return problems


def watched_values(graph: Graph, names: Iterable[str] | None = None) -> dict[str, Value]:
    """The values calibration observes, by name, in graph order.

    By default: float graph inputs and float op results, leaving out constants and what
    is computed from constants alone (weights). ``names`` picks values explicitly
    (InputError for unknown or non-float ones).
    """
    if names is not None:
        if isinstance(names, str):
            names = [names]
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if not graph.has_value(n)]
        if unknown:
            raise InputError(f"values: the graph has no value(s) {unknown}")
        chosen = {n: graph.value(n) for n in names}
        not_float = [n for n, v in chosen.items() if not v.type.dtype.is_float]
        if not_float:
            raise InputError(f"values: only float values can be calibrated, not {not_float}")
        order = {id(v): i for i, v in enumerate(graph.values())}
        return dict(sorted(chosen.items(), key=lambda item: order[id(item[1])]))
    constant: set[int] = set()
    for op in graph.ops:
        if op.kind == "constant" or (op.operands and all(id(v) in constant for v in op.operands)):
            constant.update(id(r) for r in op.results)
    return {v.name: v for v in graph.values() if v.type.dtype.is_float and id(v) not in constant}


def _ranges(observers, method, percentile, entropy_bins,
            exact=frozenset()) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Each observed value's range by ``method``; the names in ``exact`` by min–max."""
    return {
        name: compute_range(
            obs,
            "minmax" if name in exact else method,
            percentile=percentile,
            entropy_bins=entropy_bins,
        )  # fmt: skip
        for name, obs in observers.items()
    }


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"method: unknown calibration method {method!r}; use one of {METHODS}")


def _check_options(percentile: float, entropy_bins: int) -> None:
    if not (isinstance(percentile, (int, float)) and math.isfinite(percentile)) or not (
        0.0 < percentile <= 100.0
    ):
        raise InputError(f"percentile must be in (0, 100], got {percentile!r}")
    if entropy_bins not in (128, 256):
        raise InputError(f"entropy_bins must be 128 or 256, got {entropy_bins!r}")
