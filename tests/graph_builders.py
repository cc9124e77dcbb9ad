"""IR graphs for tests: built directly (no ONNX) where a test needs a shape ONNX files
rarely have, or a small model taken to a given level (``tiny_cnn_levels``)."""

from __future__ import annotations

import numpy as np
from onnx_builders import tiny_cnn

import irc
from irc.interpreter import run_graph
from irc.ir import Graph
from irc.opdef import build
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import as_plan
from irc.types import DType, TensorType


def relu_chain(length: int, width: int = 16) -> Graph:
    """x f32[1, width] -> relu -> relu -> ... (``length`` ops)."""
    g = Graph("chain")
    v = g.add_input("x", TensorType(DType.F32, (1, width)))
    for _ in range(length):
        v = build(g, "relu", [v]).result
    g.outputs = [v]
    return g


def tiny_cnn_float(batch: int = 2) -> Graph:
    """``onnx_builders.tiny_cnn`` imported and through the default float pipeline."""
    graph = irc.import_onnx(tiny_cnn(batch=batch))
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    return graph


def tiny_cnn_levels(plan, x: np.ndarray, weight_scale: float = 1.0) -> Graph:
    """``tiny_cnn_float`` at level L3 under ``plan``, its weights times ``weight_scale``,
    calibrated by min/max of every float value on ``x``."""
    graph = tiny_cnn_float(batch=len(x))
    for op in graph.ops:
        if op.kind == "constant" and op.attrs["value"].ndim >= 2:
            op.attrs["value"] = (op.attrs["value"] * weight_scale).astype(np.float32)
    ranges = {"x": (float(x.min()), float(x.max()))}

    def observe(op, args, results):
        for value, array in zip(op.results, results):
            if array.dtype == np.float32:
                ranges[value.name] = (float(array.min()), float(array.max()))

    run_graph(graph, [x], observers=[observe])
    ctx = PassContext()
    ctx.analyses["calibration"] = ranges
    ctx.analyses["precision_plan"] = as_plan(plan)
    PassManager("quantize,lower-quantized,pack-weights", ctx).run(graph)
    return graph
