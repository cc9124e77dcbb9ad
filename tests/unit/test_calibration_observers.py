"""Streaming statistics and range methods of irc.calibration.observers, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from irc.calibration.observers import Histogram, TensorObserver, compute_range
from irc.quant import activation_params, dequantize, quantize


def _observe(x: np.ndarray, pieces: int = 10, histogram: bool = True) -> TensorObserver:
    observer = TensorObserver(histogram=histogram)
    for piece in np.array_split(x, pieces):
        observer.update(piece)
    return observer


def _int8_error(x: np.ndarray, lo: float, hi: float) -> float:
    scale, zero_point = activation_params(lo, hi)
    return float(np.mean((dequantize(quantize(x, scale, zero_point), scale, zero_point) - x) ** 2))


@pytest.fixture(scope="module")
def heavy_tailed():
    """|t(2)| samples (non-negative, heavy tail) and t(3) samples (two-sided)."""
    rng = np.random.default_rng(0)
    return (
        np.abs(rng.standard_t(2, 100_000)).astype(np.float32),
        rng.standard_t(3, 100_000).astype(np.float32),
    )


def test_minmax_streaming_equals_one_batch():
    x = np.random.default_rng(1).standard_normal((40, 3, 5)).astype(np.float32) * 3
    streamed = _observe(x, pieces=10, histogram=False)
    whole = _observe(x, pieces=1, histogram=False)
    assert compute_range(streamed) == compute_range(whole) == (float(x.min()), float(x.max()))
    assert streamed.count == x.size


def test_histogram_rebinning_keeps_every_count():
    rng = np.random.default_rng(2)
    hist = Histogram(256)
    pieces = [rng.standard_normal(5000).astype(np.float32) * s + o
              for s, o in [(0.01, 0), (0.1, 3), (1, -2), (10, 0), (100, 50)]]  # fmt: skip
    for piece in pieces:
        hist.add(piece)
        assert hist.counts.shape == (256,)  # memory stays flat as the range grows
    data = np.concatenate(pieces)
    assert hist.total == data.size
    assert hist.edges[0] <= data.min() and data.max() <= hist.edges[-1]
    # rebinning merges whole bins, so the result is the histogram of all data at once
    direct, _ = np.histogram(data, bins=hist.edges)
    assert np.abs(direct - hist.counts).sum() <= 2
    assert np.isclose(hist.edges / hist.width, np.round(hist.edges / hist.width)).all()  # 0 on grid


def test_histogram_shifts_without_coarsening():
    hist = Histogram(64)
    hist.add(np.linspace(0, 1, 100, dtype=np.float32))
    hist.add(np.linspace(0, 1.5, 100, dtype=np.float32))  # coarsens, centred with room
    width, start = hist.width, hist.start
    hist.add(np.array([-0.5], np.float32))  # fits at the same width once shifted
    assert hist.width == width and hist.start < start and hist.total == 201
    assert hist.edges[0] <= -0.5


def test_constant_then_growing_tensor():
    observer = TensorObserver(histogram=True)
    observer.update(np.zeros(10, np.float32))
    assert compute_range(observer, "entropy") == (0.0, 0.0)
    observer.update(np.linspace(0, 6, 1000, dtype=np.float32))
    assert observer.histogram.total == 1010
    assert compute_range(observer, "percentile", percentile=100.0) == (0.0, 6.0)


def test_non_finite_values_are_skipped_and_counted():
    observer = TensorObserver(histogram=True)
    observer.update(np.array([1.0, np.nan, -2.0, np.inf], np.float32))
    assert (observer.min, observer.max, observer.nonfinite, observer.count) == (-2.0, 1.0, 2, 2)
    assert observer.histogram.total == 2


@pytest.mark.parametrize("sign", ["nonnegative", "signed", "nonpositive"])
def test_percentile_matches_numpy_within_a_bin(sign):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50_000).astype(np.float32) * 2 + 0.3
    x = {"nonnegative": np.abs(x), "signed": x, "nonpositive": -np.abs(x)}[sign]
    observer = _observe(x)
    width = observer.histogram.width
    lo, hi = compute_range(observer, "percentile", percentile=99.9)
    if sign == "nonnegative":  # only the top tail is cut
        assert lo == float(x.min())
        assert abs(hi - np.percentile(x, 99.9)) <= width
    elif sign == "nonpositive":  # only the bottom
        assert hi == float(x.max())
        assert abs(lo - np.percentile(x, 0.1)) <= width
    else:  # half of the remainder from each tail
        assert abs(lo - np.percentile(x, 0.05)) <= width
        assert abs(hi - np.percentile(x, 99.95)) <= width


def test_percentile_100_is_minmax():
    x = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    assert compute_range(_observe(x), "percentile", percentile=100) == (x.min(), x.max())


@pytest.mark.parametrize("levels", [256, 128])
def test_entropy_clips_outliers_of_heavy_tails(heavy_tailed, levels):
    for x in heavy_tailed:
        lo, hi = compute_range(_observe(x), "entropy", entropy_bins=levels)
        assert x.min() <= lo < hi <= x.max() and (lo <= 0 or lo == x.min())
        assert hi < 0.5 * x.max()  # the tail is clipped
        assert hi > np.percentile(x, 99)  # but not the bulk
        if x.min() >= 0:
            assert lo == x.min()


def test_entropy_keeps_a_uniform_range():
    x = np.random.default_rng(5).uniform(-1, 3, 100_000).astype(np.float32)
    lo, hi = compute_range(_observe(x), "entropy")
    assert lo <= -0.95 and hi >= 2.85


def test_mse_beats_minmax_on_heavy_tails(heavy_tailed):
    for x in heavy_tailed:
        lo, hi = compute_range(_observe(x), "mse")
        assert x.min() <= lo < hi <= x.max() and (lo <= 0 or lo == x.min())
        assert hi < x.max() and (x.min() >= 0 or lo > x.min())  # clipped
        assert _int8_error(x, lo, hi) < 0.9 * _int8_error(x, x.min(), x.max())
        p_lo, p_hi = compute_range(_observe(x), "percentile", percentile=99.9)
        assert _int8_error(x, lo, hi) <= _int8_error(x, p_lo, p_hi)
        if x.min() >= 0:
            assert lo == x.min()


def test_mse_is_near_the_best_grid_search():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.laplace(size=20_000), [40.0]]).astype(np.float32)
    lo, hi = compute_range(_observe(x), "mse")
    best = min(
        _int8_error(x, a, b)
        for a in np.linspace(x.min(), -1, 25)
        for b in np.linspace(1, x.max(), 50)
    )  # fmt: skip
    assert _int8_error(x, lo, hi) <= 1.05 * best


def test_unknown_method_and_missing_histogram():
    observer = _observe(np.arange(10, dtype=np.float32), histogram=False)
    with pytest.raises(ValueError, match="unknown calibration method"):
        compute_range(observer, "kl")
    with pytest.raises(ValueError, match="needs a histogram"):
        compute_range(observer, "entropy")
    assert compute_range(TensorObserver(), "minmax") == (0.0, 0.0)  # nothing seen
