"""The pretrained models in ../shared/models against onnxruntime (skipped without ../shared)."""

from __future__ import annotations

import numpy as np
import pytest
from model_paths import shared_path

import irc

MODELS = ["mobilenetv2_bn.onnx", "efficientnet_lite0_bn.onnx"]


@pytest.mark.parametrize("name", MODELS)
def test_shared_model_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime")
    path = shared_path("models", name)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)

    graph = irc.import_onnx(path)
    irc.verify_graph(graph)
    assert graph.inputs[0].type.shape[0] == "N"  # the symbolic batch survives import
    (got,) = irc.run(graph, [x])

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {session.get_inputs()[0].name: x})
    scale = np.abs(expected).max()
    assert got.shape == expected.shape == (2, 1000)
    assert np.abs(got - expected).max() <= 1e-4 * scale


@pytest.mark.parametrize("name", MODELS)
def test_shared_model_specialises_batch(name):
    path = shared_path("models", name)
    graph = irc.import_onnx(path, input_shapes={"input": (8, 3, 224, 224)})
    assert graph.inputs[0].type.shape == (8, 3, 224, 224)
    assert graph.outputs[0].type.shape == (8, 1000)
    reparsed = irc.parse_graph(irc.print_graph(graph))
    assert irc.print_graph(reparsed) == irc.print_graph(graph)
