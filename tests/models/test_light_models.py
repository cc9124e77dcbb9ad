"""The nine light models shipped in the onnx package: import, verify, round-trip, run.

Their stored outputs (``light_*_output_0.pb``) were computed by onnx from the input that
its backend test runner generates: ``arange(n).reshape(shape) / n`` in float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_paths import LIGHT_DIR, LIGHT_MODELS
from onnx_builders import runner_input

import irc


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_stored_output(name):
    path = LIGHT_DIR / f"light_{name}.onnx"
    model = onnx.load(path)
    graph = irc.import_onnx(model)
    irc.verify_graph(graph)

    text = irc.print_graph(graph)
    reparsed = irc.parse_graph(text)
    assert irc.print_graph(reparsed) == text

    expected = onnx.numpy_helper.to_array(
        onnx.load_tensor(str(LIGHT_DIR / f"light_{name}_output_0.pb"))
    )
    (got,) = irc.run(graph, [runner_input(model)])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
