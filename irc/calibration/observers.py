"""Streaming statistics per tensor, and the methods that turn them into a real range.

A ``TensorObserver`` keeps a running min/max and, for the histogram methods, a
``Histogram`` of a fixed number of bins: memory does not grow with the number of images.
The histogram's bins lie on a grid of width ``w`` with 0.0 on an edge; when new data fall
outside it, the grid is shifted or its width doubled as often as needed (each new bin is a
whole number of old bins, so counts move exactly and none is lost), in the spirit of
onnxruntime's HistogramCollector, which instead adds bins.

Range methods (``compute_range``):

- ``minmax``: the exact running min and max.
- ``percentile``: the given percentile of the histogram; a non-negative tensor is clipped
  only at the top (a non-positive one only at the bottom), any other in both tails, each
  losing half of the remainder.
- ``entropy``: the window around 0 whose distribution, quantized to 256 (or 128) levels,
  has the least KL divergence from the whole distribution with outliers folded into its end
  bins, as TensorRT's and onnxruntime's entropy calibration.
- ``mse``: the clip range whose int8 grid (``irc.quant.activation_params``) gives the least
  expected squared error over the histogram, searched for hi and lo in turn.
"""

from __future__ import annotations

import math

import numpy as np

from irc.quant import ACT_QMAX, ACT_QMIN, activation_params

DEFAULT_BINS = 2048
METHODS = ("minmax", "percentile", "entropy", "mse")
HISTOGRAM_METHODS = ("percentile", "entropy", "mse")
# irc.compile's default, not a method of its own: irc.stages.choose_ranges picks one
COMPILE_METHOD = "auto"
_CHUNK = 1 << 18  # values binned at a time


class Histogram:
    """Counts over ``bins`` bins of equal width; bin ``i`` is [(start+i)·w, (start+i+1)·w).

    ``add`` widens the covered range to take in new data (shift, or double the width),
    keeping every count.
    """

    def __init__(self, bins: int = DEFAULT_BINS):
        if bins < 16:
            raise ValueError(f"a histogram needs at least 16 bins, got {bins}")
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, np.int64)
        self.width = 0.0  # 0: nothing seen yet
        self.start = 0  # the grid cell of bin 0 (a Python int: grids may sit far from 0)

    @property
    def total(self) -> int:
        """The number of values counted."""
        return int(self.counts.sum())

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges (float64)."""
        return (self.start + np.arange(self.bins + 1, dtype=np.float64)) * self.width

    def add(self, x: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        """Count the finite values ``x`` (``lo``/``hi``: their min and max, if known)."""
        x = np.asarray(x)
        if x.size == 0:
            return
        lo = float(x.min()) if lo is None else float(lo)
        hi = float(x.max()) if hi is None else float(hi)
        self._cover(lo, hi)
        self.counts += self._bin_counts(x)

    def _occupied(self) -> tuple[int, int] | None:
        nz = np.flatnonzero(self.counts)
        return (int(nz[0]), int(nz[-1])) if nz.size else None

    def _cover(self, lo: float, hi: float) -> None:
        """Move or coarsen the grid so that [lo, hi] and every counted value fit."""
        if self.width == 0.0:
            span = hi - lo
            if span > 0:
                self.width = span / (self.bins - 2)
            else:  # one value so far: any width will do, the grid coarsens on demand
                self.width = abs(lo) / self.bins if lo != 0 else 1e-30
            self.start = math.floor(lo / self.width)
        occupied = self._occupied()
        k = 0
        while True:
            w = self.width * 2**k
            first, last = math.floor(lo / w), math.floor(hi / w)
            if occupied is not None:
                first = min(first, (self.start + occupied[0]) >> k)
                last = max(last, (self.start + occupied[1]) >> k)
            if last - first + 1 <= self.bins:
                break
            k += 1
        if k == 0 and self.start <= first and last < self.start + self.bins:
            return  # already covered
        new_start = first - (self.bins - (last - first + 1)) // 2  # centre: room both ways
        if occupied is not None:
            cells = self.start + np.arange(occupied[0], occupied[1] + 1)
            moved = (cells >> k) - new_start  # old bins map whole into new ones
            counts = self.counts[occupied[0] : occupied[1] + 1]
            self.counts = np.bincount(moved, weights=counts, minlength=self.bins).astype(np.int64)
        self.width *= 2**k
        self.start = new_start

    def _bin_counts(self, x: np.ndarray) -> np.ndarray:
        # float32 math on the offset from the grid origin, in cache-sized chunks: about
        # twice as fast as one pass over the whole tensor with full-size temporaries
        x = x.astype(np.float32, copy=False).reshape(-1)
        origin = np.float32(self.start * self.width)
        inverse = np.float32(1.0 / self.width)
        top = np.float32(self.bins - 1)
        size = min(x.size, _CHUNK)
        scratch = np.empty(size, np.float32)
        index = np.empty(size, np.int32)
        counts = np.zeros(self.bins, np.int64)
        for begin in range(0, x.size, size):
            chunk = x[begin : begin + size]
            t, i = scratch[: chunk.size], index[: chunk.size]
            np.subtract(chunk, origin, out=t)
            t *= inverse
            np.clip(t, 0, top, out=t)  # then truncation is floor
            i[...] = t
            counts += np.bincount(i, minlength=self.bins)
        return counts

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the counts lie (linear within a bin)."""
        cum = np.cumsum(self.counts)
        target = min(max(q, 0.0), 1.0) * cum[-1]
        i = min(int(np.searchsorted(cum, target, side="left")), self.bins - 1)
        before = cum[i] - self.counts[i]
        frac = (target - before) / self.counts[i] if self.counts[i] else 0.0
        return float((self.start + i + frac) * self.width)


class TensorObserver:
    """Running min/max of one tensor (finite values), plus a histogram if asked, and the
    running sum per channel (axis 1) of tensors of rank ≥ 2 (for bias correction)."""

    def __init__(self, histogram: bool = False, bins: int = DEFAULT_BINS):
        self.min = math.inf
        self.max = -math.inf
        self.count = 0  # finite values seen
        self.nonfinite = 0  # NaN / inf values skipped
        self.histogram = Histogram(bins) if histogram else None
        self.channel_sum: np.ndarray | None = None  # float64 [C]
        self.channel_count = 0  # values summed per channel

    @property
    def channel_mean(self) -> np.ndarray | None:
        """Mean of each channel (axis 1) over everything seen; None if never a finite
        tensor of rank ≥ 2."""
        if self.channel_sum is None or self.channel_count == 0:
            return None
        return self.channel_sum / self.channel_count

    @property
    def seen(self) -> bool:
        """True once any finite value was observed."""
        return self.count > 0

    def update(self, x: np.ndarray) -> None:
        """Fold the array ``x`` into the statistics (``x`` is only read)."""
        x = np.asarray(x)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if x.ndim >= 2 and math.isfinite(lo) and math.isfinite(hi):
            axes = (0, *range(2, x.ndim))
            sums = x.sum(axis=axes, dtype=np.float64)
            if self.channel_sum is None:
                self.channel_sum = sums
            elif self.channel_sum.shape == sums.shape:
                self.channel_sum = self.channel_sum + sums
            self.channel_count += x.size // x.shape[1]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = x[np.isfinite(x)]
            self.nonfinite += x.size - finite.size
            if finite.size == 0:
                return
            x, lo, hi = finite, float(finite.min()), float(finite.max())
        self.count += x.size
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if self.histogram is not None:
            self.histogram.add(x, lo, hi)


# ---------------------------------------------------------------------- range methods
def compute_range(
    observer: TensorObserver,
    method: str = "minmax",
    *,
    percentile: float = 99.99,
    entropy_bins: int = 256,
) -> tuple[float, float]:
    """The real range [lo, hi] that ``method`` chooses from ``observer``'s statistics.

    The result always lies within the observed [min, max]; (0, 0) if nothing was seen.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; methods: {', '.join(METHODS)}")
    if not observer.seen:
        return 0.0, 0.0
    lo, hi = observer.min, observer.max
    if method == "minmax" or lo == hi:
        return lo, hi
    hist = observer.histogram
    if hist is None:
        raise ValueError(f"method {method!r} needs a histogram; observe with histogram=True")
    if method == "percentile":
        found = percentile_range(hist, lo, hi, percentile)
    elif method == "entropy":
        found = entropy_range(hist, lo, hi, entropy_bins)
    else:
        found = mse_range(hist, lo, hi)
    a, b = (min(max(v, lo), hi) for v in found)
    return float(a), float(max(a, b))


def percentile_range(hist: Histogram, lo: float, hi: float, percentile: float):
    """The percentile range: one-sided for tensors that do not cross 0, else both tails."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    keep = percentile / 100.0
    if lo >= 0.0:
        return lo, hist.quantile(keep)
    if hi <= 0.0:
        return hist.quantile(1.0 - keep), hi
    tail = (1.0 - keep) / 2.0
    return hist.quantile(tail), hist.quantile(1.0 - tail)


def entropy_range(hist: Histogram, lo: float, hi: float, target_bins: int = 256):
    """The KL-optimal window around 0 for ``target_bins`` quantization levels.

    Candidate windows grow outward from 0 one bin a side, each clamped to the data; the
    window's distribution P has the outliers added to its end bins, and Q is P's own
    slice merged into ``target_bins`` levels and spread back over P's non-empty bins.
    """
    if target_bins not in (128, 256):
        raise ValueError(f"entropy calibration targets 128 or 256 levels, not {target_bins}")
    counts = hist.counts.astype(np.float64)
    nz = np.flatnonzero(counts)
    first, last = int(nz[0]), int(nz[-1]) + 1  # occupied bins [first, last)
    if last - first <= target_bins:
        return lo, hi
    zero = min(max(-hist.start, first), last)  # the edge at 0, clamped to the data
    half = np.arange(1, max(zero - first, last - zero) + 1)
    starts = np.maximum(first, zero - half)
    ends = np.minimum(last, zero + half)
    ok = ends - starts >= target_bins
    starts, ends = starts[ok], ends[ok]
    cum = np.concatenate([[0.0], np.cumsum(counts)])

    def divergence(i: int) -> float:
        return _window_kl(counts, cum, int(starts[i]), int(ends[i]), target_bins)

    best = _coarse_to_fine(len(starts), divergence)
    edges = hist.edges
    return float(edges[starts[best]]), float(edges[ends[best]])


def _window_kl(counts: np.ndarray, cum: np.ndarray, s: int, e: int, levels: int) -> float:
    sliced = counts[s:e]
    p = sliced.copy()
    p[0] += cum[s]
    p[-1] += cum[-1] - cum[e]
    n = e - s
    group = (np.arange(n) * levels) // n
    nonzero = p > 0
    merged = np.bincount(group, weights=sliced, minlength=levels)
    spread = np.bincount(group, weights=nonzero, minlength=levels)
    q = np.where(nonzero, merged[group] / np.maximum(spread[group], 1.0), 0.0)
    if q.sum() <= 0:  # a window with nothing but folded outliers (a gap around 0)
        return math.inf
    p = p[nonzero] / p.sum()
    q = q[nonzero] / q.sum()
    # where Q is empty but P is not (outliers folded into an empty end bin) a floor stands
    # in for the usual smoothing: a large but finite penalty
    return float(np.sum(p * np.log(p / np.maximum(q, 1e-10))))


def mse_range(hist: Histogram, lo: float, hi: float, samples: int = 2):
    """The clip range minimising the expected int8 quantization error over the histogram.

    Each occupied bin stands for ``samples`` evenly spread values; a range's error uses
    the exact grid of ``activation_params``. hi is searched over the bin edges above 0
    with lo at the minimum, then lo with that hi, then hi again.
    """
    counts = hist.counts
    nz = np.flatnonzero(counts)
    first, last = int(nz[0]), int(nz[-1]) + 1
    offsets = (np.arange(samples) + 0.5) / samples
    cells = hist.start + np.arange(first, last)
    values = ((cells[:, None] + offsets[None, :]) * hist.width).reshape(-1)
    weights = np.repeat(counts[first:last].astype(np.float64) / samples, samples)
    used = weights > 0
    values, weights = values[used], weights[used]
    edges = hist.edges[first : last + 1]
    hi_candidates = np.append(edges[(edges > max(lo, 0.0)) & (edges < hi)], hi)
    lo_candidates = np.append(edges[(edges < min(hi, 0.0)) & (edges > lo)], lo)

    def best_hi(lo_: float) -> float:
        if hi <= 0.0:
            return hi

        def errs(idx):
            return _range_errors(values, weights, [(lo_, hi_candidates[i]) for i in idx])

        return float(hi_candidates[_coarse_to_fine(len(hi_candidates), errs, batched=True)])

    def best_lo(hi_: float) -> float:
        if lo >= 0.0:
            return lo

        def errs(idx):
            return _range_errors(values, weights, [(lo_candidates[i], hi_) for i in idx])

        return float(lo_candidates[_coarse_to_fine(len(lo_candidates), errs, batched=True)])

    new_hi = best_hi(lo)
    new_lo = best_lo(new_hi)
    if new_lo != lo:
        new_hi = best_hi(new_lo)
    return new_lo, new_hi


def _range_errors(values: np.ndarray, weights: np.ndarray, ranges) -> np.ndarray:
    """The weighted squared int8 error of ``values`` for each (lo, hi) in ``ranges``."""
    params = [activation_params(a, b) for a, b in ranges]
    scale = np.array([s for s, _ in params], np.float64)[:, None]
    zp = np.array([z for _, z in params], np.float64)[:, None]
    levels = np.clip(np.rint(values[None, :] / scale) + zp, ACT_QMIN, ACT_QMAX)
    diff = (levels - zp) * scale - values[None, :]
    return (diff * diff) @ weights


def _coarse_to_fine(n: int, cost, coarse: int = 64, batched: bool = False) -> int:
    """The index in [0, n) of least ``cost``: every stride-th index, then around the best.

    ``cost(i)`` scores one index, or with ``batched`` ``cost(indices)`` scores many.
    The last index (the whole range) is always among the candidates.
    """
    stride = max(1, -(-n // coarse))
    grid = np.unique(np.append(np.arange(0, n, stride), n - 1))
    best = _argmin(grid, cost, batched)
    near = np.arange(max(0, best - stride + 1), min(n, best + stride))
    return _argmin(near, cost, batched)


def _argmin(indices: np.ndarray, cost, batched: bool) -> int:
    scores = np.asarray(cost(indices) if batched else [cost(int(i)) for i in indices])
    return int(indices[int(np.argmin(scores))])


# ---------------------------------------------------------------------- serialisation
def observer_state(observer: TensorObserver) -> tuple[dict, dict[str, np.ndarray]]:
    """``observer`` as (JSON-ready facts, named arrays): enough for ``observer_from_state``
    to give back an observer with the same range, channel means and histogram."""
    hist = observer.histogram
    facts = {
        "min": observer.min, "max": observer.max, "count": observer.count,
        "nonfinite": observer.nonfinite, "channel_count": observer.channel_count,
        "histogram": None if hist is None else
        {"bins": hist.bins, "width": hist.width, "start": hist.start},
    }  # fmt: skip
    arrays = {}
    if observer.channel_sum is not None:
        arrays["channel_sum"] = np.asarray(observer.channel_sum, np.float64)
    if hist is not None:
        arrays["counts"] = hist.counts
    return facts, arrays


def observer_from_state(facts: dict, arrays: dict[str, np.ndarray]) -> TensorObserver:
    """The observer ``observer_state`` described (KeyError / ValueError on a bad state)."""
    spec = facts["histogram"]
    observer = TensorObserver(spec is not None, spec["bins"] if spec else DEFAULT_BINS)
    observer.min, observer.max = float(facts["min"]), float(facts["max"])
    observer.count, observer.nonfinite = int(facts["count"]), int(facts["nonfinite"])
    observer.channel_count = int(facts["channel_count"])
    observer.channel_sum = arrays.get("channel_sum")
    if spec is not None:
        counts = np.asarray(arrays["counts"], np.int64)
        if counts.shape != (observer.histogram.bins,):
            raise ValueError(f"histogram counts have shape {counts.shape}")
        hist = observer.histogram
        hist.counts, hist.width, hist.start = counts, float(spec["width"]), int(spec["start"])
    return observer
