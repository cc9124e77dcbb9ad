"""The nine light models shipped in the onnx package: import, verify, round-trip, run.

Their stored outputs (``light_*_output_0.pb``) were computed by onnx from the input that
its backend test runner generates: ``arange(n).reshape(shape) / n`` in float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import LIGHT_DIR, LIGHT_MODELS

import irc


def runner_input(model: onnx.ModelProto) -> np.ndarray:
    """The input onnx's backend test runner feeds light models (see its generate_dummy_data)."""
    inits = {t.name for t in model.graph.initializer}
    (vi,) = [v for v in model.graph.input if v.name not in inits]
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim
    )
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


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
