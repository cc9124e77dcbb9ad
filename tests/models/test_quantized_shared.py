"""The shared pretrained models quantized: L1 = L3 in the reference interpreter, and the
Numba program at L3 bit-exact with the interpreter at L3 (skipped without ../shared)."""

from __future__ import annotations

import numpy as np
import pytest
from model_paths import shared_path

import irc
from irc.calibration import calibrate, load_folder
from irc.measure import sqnr_db
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import as_plan, layer_name
from irc.support import quantizable_layers

MODELS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


MIXES = {  # cycled over the layers
    "mixed": ("int8", "int4", "fp16", "int2", "fp32", "int8", "int4"),
    "int-mixed": ("int8", "int4", "int2", "int4"),
}


def plan_of(graph, precision: str):
    """``precision``, or a layer → precision mapping cycling one of ``MIXES``: float
    islands among integer layers of three widths ("mixed"), or the widths alone."""
    if precision not in MIXES:
        return precision
    names = [layer_name(op) for op in quantizable_layers(graph)]
    return {name: MIXES[precision][i % len(MIXES[precision])] for i, name in enumerate(names)}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", ["int8", "int4", "int-mixed", "mixed"])
def test_quantized_levels_and_numba_agree_exactly(name, precision):
    """L1 = L3 = channels-last L3 in the interpreter; the compiled programs of both L3
    layouts equal it bit for bit when every layer is integer, and come close otherwise
    (float kernels sum in another order than numpy's, so a float island may move a level)."""
    path = shared_path("models", f"{name}.onnx")
    calib = load_folder(shared_path("data", "imagenet-calib256"), MODELS[name], limit=4)
    x = load_folder(shared_path("data", "imagenet-val1300"), MODELS[name], limit=1)
    graph = irc.import_onnx(path, {"input": (1, 3, 224, 224)})
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    ctx = PassContext(verify_each=True)
    ctx.analyses["calibration"] = calibrate(graph, calib, "minmax", progress=False)
    ctx.analyses["precision_plan"] = as_plan(plan_of(graph, precision))
    PassManager("quantize", ctx).run(graph)
    l1 = graph.clone()
    PassManager("lower-quantized,pack-weights", ctx).run(graph)
    nhwc = graph.clone()
    PassManager("channels-last", ctx).run(nhwc)

    (want,) = irc.run(l1, [x])
    (l3,) = irc.run(graph, [x])
    np.testing.assert_array_equal(l3, want)
    np.testing.assert_array_equal(irc.run(nhwc, [x])[0], want)
    (first,) = irc.compile(graph, pipeline="", num_threads=1)(x)
    (last,) = irc.compile(nhwc, pipeline="", num_threads=1)(x)
    if precision != "mixed":
        np.testing.assert_array_equal(first, want)
        np.testing.assert_array_equal(last, want)
    else:  # float kernels round in their own order: a level may move after an island
        assert sqnr_db(first, want) > 20 and sqnr_db(last, want) > 20, (
            sqnr_db(first, want), sqnr_db(last, want))  # fmt: skip
    kinds = [op.kind for op in nhwc.ops]
    if precision != "mixed":
        assert "conv2d" not in kinds and "gemm" not in kinds  # every layer integer
        assert kinds.count("transpose") == 2  # after the input's quantize, before the head
    assert all(op.attrs["layout"] == "nhwc" for op in nhwc.ops if op.kind == "qconv2d")
    if precision == "mixed":  # float islands between integer layers follow them
        assert any(op.attrs["layout"] == "nhwc" for op in nhwc.ops if op.kind == "conv2d")
