"""Checks of a compiled model's ONNX QDQ export against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from irc import quant


def assert_ort_agrees_within_a_step(model, path, inputs, output: str = "y") -> None:
    """onnxruntime runs the QDQ file ``path`` (``model.export_onnx``'s) to ``model``'s output
    within one quantization step of value ``output`` on each of ``inputs``, with its graph
    optimisations off and on."""
    step = quant.activation_params(*model.calibration.ranges[output])[0]
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):  # fmt: skip
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for x in inputs:
            (want,) = model(x)
            (got,) = session.run(None, {"x": x})
            assert np.abs(got - want).max() <= step * (1 + 1e-4)
