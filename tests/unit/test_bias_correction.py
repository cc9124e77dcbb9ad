"""Bias correction in the quantize pass: with the calibration's channel means, each output
channel's mean error (over the calibration inputs, against FP32) shrinks, at every width."""

from __future__ import annotations

import numpy as np
import pytest

import irc
from irc.interpreter import run_graph
from irc.ir import Graph
from irc.opdef import build
from irc.pass_manager import PassContext, PassManager
from irc.types import DType, TensorType

RNG = np.random.default_rng(11)
DATA = (RNG.normal(size=(16, 4, 6, 6)) + np.linspace(0.5, 2.0, 4)[None, :, None, None]).astype(
    np.float32
)


def conv_graph(group: int) -> Graph:
    graph = Graph("conv")
    x = graph.add_input("x", TensorType(DType.F32, ("N", 4, 6, 6)))
    w = RNG.normal(size=(8, 4 // group, 3, 3)).astype(np.float32)
    wc = build(graph, "constant", [], {"value": w}, result_names=["w"]).result
    bc = build(graph, "constant", [], {"value": np.zeros(8, np.float32)}, result_names=["b"])
    y = build(graph, "conv2d", [x, wc, bc.result], {"pads": (1, 1, 1, 1), "group": group},
              name="conv", result_names=["y"])  # fmt: skip
    graph.outputs = [y.result]
    return graph


def channel_mean_error(graph, precision: str, correct: int) -> np.ndarray:
    calibration = irc.calibrate(graph, DATA, progress=False)
    quantized = graph.clone()
    ctx = PassContext()
    ctx.analyses["calibration"] = calibration
    PassManager(f"quantize{{precision={precision},bias_correction={correct}}}", ctx).run(quantized)
    assert dict(ctx.statistics)["quantize"].get("bias-corrected", 0) == correct
    want = run_graph(graph, [DATA])[0].astype(np.float64)
    got = run_graph(quantized, [DATA])[0].astype(np.float64)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # no padding in the window
    return np.abs((got - want)[inner].mean(axis=(0, 2, 3)))


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("precision", ["int8", "int4", "int2"])
def test_channel_mean_error_shrinks(precision, group):
    graph = conv_graph(group)
    before = channel_mean_error(graph, precision, 0)
    after = channel_mean_error(graph, precision, 1)
    assert after.mean() < 0.5 * before.mean()
