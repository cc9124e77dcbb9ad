"""The default float pipeline on real models: it keeps what they compute and does its job.

Two checks of meaning: the outputs agree within 1e-4 of their largest magnitude, and so does
every non-constant value whose name survives the pipeline (the passes' naming rule says a
surviving name still means the same value), which catches a wrong fold that a softmax
output would hide.
"""

from __future__ import annotations

import numpy as np
import pytest
from model_paths import LIGHT_DIR, LIGHT_MODELS, shared_path

import irc
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE

ACTIVATIONS = ("relu", "clip", "hard_swish")

# (model, batchnorms folded, activations fused) as measured when the passes were written
SHARED = [("mobilenetv2_bn.onnx", 52, 35), ("efficientnet_lite0_bn.onnx", 49, 33)]


def named_values(graph: irc.Graph, inputs) -> dict[str, np.ndarray]:
    """Every non-constant value the interpreter computes, by name."""
    seen: dict[str, np.ndarray] = {}

    def observe(op, args, results):
        if op.kind != "constant":
            for value, array in zip(op.results, results):
                seen[value.name] = array

    irc.run(graph, inputs, observers=[observe])
    return seen


def optimize(graph: irc.Graph) -> dict[str, dict[str, int]]:
    """Run the default pipeline (verifying after each pass); statistics by pass name."""
    ctx = PassContext(verify_each=True)
    PassManager(DEFAULT_FLOAT_PIPELINE, ctx).run(graph)
    merged: dict[str, dict[str, int]] = {}
    for name, stats in ctx.statistics:
        for key, count in stats.items():
            merged.setdefault(name, {}).setdefault(key, 0)
            merged[name][key] += count
    return merged


def assert_same_meaning(before: dict, after: dict, outputs: list[str]) -> None:
    common = sorted(set(before) & set(after))
    assert set(outputs) <= set(common)
    for name in common:
        want, got = before[name], after[name]
        assert got.shape == want.shape, name
        scale = max(float(np.abs(want).max()), 1e-30)
        assert np.abs(got - want).max() <= 1e-4 * scale, f"%{name} differs"


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_default_pipeline_keeps_light_model_outputs(name):
    graph = irc.import_onnx(LIGHT_DIR / f"light_{name}.onnx")
    x = np.random.default_rng(0).standard_normal(graph.inputs[0].type.shape)
    inputs = [x.astype(np.float32)]
    before = named_values(graph, inputs)
    optimize(graph)
    assert_same_meaning(before, named_values(graph, inputs), [v.name for v in graph.outputs])


@pytest.mark.parametrize("model,folded,fused", SHARED)
def test_default_pipeline_on_shared_model(model, folded, fused):
    graph = irc.import_onnx(shared_path("models", model))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    before = named_values(graph, [x])
    signature = [(v.name, v.type) for v in graph.inputs + graph.outputs]

    stats = optimize(graph)
    assert stats["fold-batchnorm"] == {"folded": folded, "refused": 0}
    assert stats["fuse"]["fused-activation"] == fused
    assert [(v.name, v.type) for v in graph.inputs + graph.outputs] == signature
    kinds = [op.kind for op in graph.ops]
    assert "batchnorm" not in kinds
    for op in graph.ops:
        if op.kind in ACTIVATIONS:
            assert op.operands[0].producer.kind != "conv2d", op.label()
    assert kinds.count("conv2d") == folded  # one per folded batchnorm: none lost, none added
    assert_same_meaning(before, named_values(graph, [x]), [v.name for v in graph.outputs])
