"""Real models compiled by the Numba backend against irc's reference interpreter.

The light models of the onnx package run through the default pipeline, and a few also
with no passes at all (so the unfused batchnorm, mul and add kernels run too); the
pretrained models of ../shared at batch 1 and 2. Outputs must agree to 1e-4 of the
largest reference magnitude.

The light models carry random weights: most of their logits are equal and as large as
1e21, so one float32 ulp of difference in a logit (a different summation order in a
convolution) moves their softmax anywhere. Their logits are compared instead, and the
softmax only where the logits are small enough for it to be well conditioned.

Models run on one thread: under pytest-xdist every core already runs a worker, and parallel
kernels whose threads wait on a busy core slow down by an order of magnitude.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from kernel_patches import blas_threads_kept
from model_paths import LIGHT_DIR, LIGHT_MODELS, shared_path
from onnx_builders import runner_input

import irc
from irc.pipelines import DEFAULT_FLOAT_PIPELINE

UNFUSED = {"densenet121", "inception_v1", "shufflenet"}


@pytest.fixture(autouse=True)
def _blas_threads():
    with blas_threads_kept():
        yield


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= 1e-4 * scale


def expose_logits(graph: irc.Graph) -> bool:
    """Make the input of a final softmax (through reshapes) a graph output too."""
    op = graph.outputs[0].producer
    while op is not None and op.kind == "reshape":
        op = op.operands[0].producer
    if op is None or op.kind != "softmax":
        return False
    graph.outputs.append(op.operands[0])
    return True


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model(name):
    model = onnx.load(LIGHT_DIR / f"light_{name}.onnx")
    x = runner_input(model)
    graph = irc.import_onnx(model)
    del model  # VGG-19 holds 548 MB of weights: keep one copy alive
    has_logits = expose_logits(graph)
    want = irc.run(graph, [x])
    stable = not has_logits or float(np.abs(want[1]).max()) < 100
    pipelines = [DEFAULT_FLOAT_PIPELINE] + ([""] if name in UNFUSED else [])
    for pipeline in pipelines:
        got = irc.compile(graph, pipeline=pipeline, num_threads=1)(x)
        assert_close(got[-1], want[-1])
        if stable and has_logits:
            assert_close(got[0], want[0])


@pytest.mark.parametrize("name", ["mobilenetv2_bn.onnx", "efficientnet_lite0_bn.onnx"])
def test_shared_model_at_batch_one_and_two(name):
    path = shared_path("models", name)
    graph = irc.import_onnx(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (want,) = irc.run(graph, [x])
    one = irc.compile(graph, num_threads=1)  # the symbolic batch becomes 1
    assert one.graph.inputs[0].type.shape == (1, 3, 224, 224)
    assert_close(one(x[:1])[0], want[:1])
    two = irc.compile(path, input_shapes={"input": (2, 3, 224, 224)}, num_threads=1)
    assert_close(two(x)[0], want)
    passes = [name for name, _ in two.stats]
    assert passes[-1] == "plan-memory" and "fold-batchnorm" in passes
