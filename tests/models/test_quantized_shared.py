"""The shared pretrained models quantized: L1 = L3 in the reference interpreter, and the
Numba program at L3 bit-exact with the interpreter at L3 (skipped without ../shared)."""

from __future__ import annotations

import numpy as np
import pytest
from model_paths import shared_path

import irc
from irc.calibration import calibrate, load_folder
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE

MODELS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantized_levels_and_numba_agree_exactly(name, precision):
    path = shared_path("models", f"{name}.onnx")
    calib = load_folder(shared_path("data", "imagenet-calib256"), MODELS[name], limit=4)
    x = load_folder(shared_path("data", "imagenet-val1300"), MODELS[name], limit=1)
    graph = irc.import_onnx(path, {"input": (1, 3, 224, 224)})
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    ctx = PassContext(verify_each=True)
    ctx.analyses["calibration"] = calibrate(graph, calib, "minmax", progress=False)
    PassManager(f"quantize{{precision={precision}}}", ctx).run(graph)
    l1 = graph.clone()
    PassManager("lower-quantized,pack-weights", ctx).run(graph)

    (want,) = irc.run(l1, [x])
    (l3,) = irc.run(graph, [x])
    np.testing.assert_array_equal(l3, want)
    model = irc.compile(graph, pipeline="", num_threads=1)
    (got,) = model(x)
    np.testing.assert_array_equal(got, l3)
    assert all(op.kind not in ("conv2d", "gemm") for op in graph.ops)  # every layer integer
