"""The ``auto`` calibration method (irc.stages.choose_ranges): the ranges kept are those whose
uniform INT8 model is measured nearer the float model, by an independent measurement."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import small_convnet

import irc
from irc.measure import sqnr_db
from irc.stages import RANGE_SAMPLES, calibrate, float_graph


@pytest.fixture(scope="module")
def graph():
    return float_graph(small_convnet())


def _data(tails: bool) -> np.ndarray:
    """Normal inputs, or heavy-tailed ones (Student's t, 2 degrees of freedom), whose rare
    large values min–max ranges spend their levels on."""
    rng = np.random.default_rng(3)
    shape = (24, 3, 16, 16)
    x = rng.standard_t(2, shape) if tails else rng.standard_normal(shape)
    return x.astype(np.float32)


def _measured_sqnr(graph, calibration, x) -> float:
    """Output SQNR of uniform INT8 on ``calibration`` against FP32 on the first samples,
    measured through irc.compile (the oracle the choice must agree with)."""
    fp32 = irc.compile(graph, num_threads=1, progress=False)
    int8 = irc.compile(graph, precision="int8", calibration=calibration, num_threads=1,
                       progress=False)  # fmt: skip
    sample = x[:RANGE_SAMPLES]
    ref = np.concatenate([fp32(sample[i : i + 1])[0] for i in range(len(sample))])
    out = np.concatenate([int8(sample[i : i + 1])[0] for i in range(len(sample))])
    return sqnr_db(out.astype(np.float64), ref.astype(np.float64))


@pytest.mark.parametrize(("tails", "expected"), [(False, "minmax"), (True, "mse")])
def test_auto_keeps_the_ranges_measured_nearer_the_float_model(graph, tails, expected):
    x = _data(tails)
    chosen = calibrate(graph, x, "auto", progress=False, num_threads=1)
    histograms = calibrate(graph, x, "mse", progress=False, num_threads=1)
    measured = {m: _measured_sqnr(graph, histograms.recompute(m), x) for m in ("minmax", "mse")}
    assert set(chosen.scores) == {"minmax", "mse"}
    for method, db in measured.items():
        assert chosen.scores[method] == pytest.approx(db, abs=1e-3)  # float sums' order
    assert chosen.method == max(measured, key=measured.get) == expected
    assert dict(chosen.ranges) == dict(histograms.recompute(chosen.method).ranges)


def test_one_pass_data_keeps_minmax(graph):
    x = _data(True)
    chosen = calibrate(graph, iter(np.split(x, 4)), "auto", progress=False, num_threads=1)
    assert chosen.method == "minmax" and chosen.scores is None
    minmax = calibrate(graph, np.split(x, 4), "minmax", progress=False, num_threads=1)
    assert dict(chosen.ranges) == dict(minmax.ranges)


def test_compile_defaults_to_auto_and_outputs_keep_every_value(graph):
    x = _data(True)
    model = irc.compile(graph, precision="int8", calibration=x, num_threads=1, progress=False)
    assert model.calibration.method == "mse" and model.calibration.scores is not None
    (out,) = graph.outputs
    observer = model.calibration.observers[out.name]
    assert model.calibration[out.name] == (observer.min, observer.max)
