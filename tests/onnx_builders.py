"""Small ONNX models built with onnx.helper, for tests that need a model file."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_cnn(batch="N", opset: int = 13) -> onnx.ModelProto:
    """Conv → BatchNorm → Clip(0, 6) → GlobalAveragePool → Flatten → Gemm, seeded weights."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array((rng.random(4) + 0.5).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean"),
        numpy_helper.from_array((rng.random(4) + 0.5).astype(np.float32), "var"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"
        ),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["act"], name="relu6"),
        helper.make_node("GlobalAveragePool", ["act"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def single_node_model(op_type: str, inputs, outputs, opset: int = 13, **attrs) -> onnx.ModelProto:
    """One node over float32 inputs given as (name, shape) pairs."""
    node = helper.make_node(op_type, [n for n, _ in inputs], [n for n, _ in outputs], **attrs)
    graph = helper.make_graph(
        [node],
        op_type.lower(),
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def cyclic_model() -> onnx.ModelProto:
    """Two Relu nodes that feed each other (invalid: a cycle)."""
    nodes = [
        helper.make_node("Add", ["x", "b_out"], ["a_out"], name="node_a"),
        helper.make_node("Relu", ["a_out"], ["b_out"], name="node_b"),
    ]
    graph = helper.make_graph(
        nodes,
        "cycle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def runner_input(model: onnx.ModelProto) -> np.ndarray:
    """The input onnx's backend test runner feeds its light models: arange(n)/n, float32."""
    inits = {t.name for t in model.graph.initializer}
    (vi,) = [v for v in model.graph.input if v.name not in inits]
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim
    )
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def small_convnet(batch="N", seed: int = 0) -> onnx.ModelProto:
    """Four layers for the precision decision: a stem conv (stride 2), a depthwise conv, a
    pointwise conv, each with ReLU, then GlobalAveragePool → Flatten → Gemm to 10 classes.
    Input x [batch, 3, 16, 16]; seeded weights."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(data, name)

    inits = [
        init("w0", 8, 3, 3, 3), init("b0", 8), init("w1", 8, 1, 3, 3), init("b1", 8),
        init("w2", 32, 8, 1, 1), init("b2", 32), init("fc_w", 10, 32), init("fc_b", 10),
    ]  # fmt: skip
    nodes = [
        helper.make_node(
            "Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2]
        ),  # fmt: skip
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node(
            "Conv", ["r0", "w1", "b1"], ["c1"], name="depthwise", pads=[1, 1, 1, 1], group=8
        ),  # fmt: skip
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="pointwise"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def pool_concat_resize_net(batch=1, seed: int = 0) -> onnx.ModelProto:
    """Conv → MaxPool (3×3, stride 2, pads 1) → two convs of different ranges → Concat →
    Resize (nearest, ×2) → Conv: the detector glue of issue 23. Input x [batch, 3, 16, 16],
    output y [batch, 4, 16, 16]; seeded weights (the second branch's four times larger)."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(data, name)

    inits = [
        init("w0", 8, 3, 3, 3), init("b0", 8), init("w1", 8, 8, 1, 1), init("b1", 8),
        init("w2", 8, 8, 3, 3, scale=1.2), init("b2", 8), init("w3", 4, 16, 3, 3), init("b3", 4),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]  # fmt: skip
    pool = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["c0"], ["p0"], name="pool", **pool),
        helper.make_node("Conv", ["p0", "w1", "b1"], ["c1"], name="narrow"),
        helper.make_node("Conv", ["p0", "w2", "b2"], ["c2"], name="wide", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c1", "c2"], ["cat"], name="concat", axis=1),
        helper.make_node("Resize", ["cat", "", "scales"], ["up"], name="up", mode="nearest"),
        helper.make_node("Conv", ["up", "w3", "b3"], ["y"], name="head", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "pool_concat_resize_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 16, 16])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def activation_net(activation: str, batch=1, seed: int = 0) -> onnx.ModelProto:
    """Conv (3→8, 3×3) → ``activation`` → Conv (8→4, 3×3): ``Sigmoid``, ``Tanh``,
    ``HardSigmoid``, ``HardSwish``, ``SiLU`` (a Sigmoid and a Mul by its input), ``GELU``
    (written out as exporters do: x · (erf(x / √2) + 1) · 0.5) or ``GeluTanh`` (ONNX Gelu,
    opset 20, approximate="tanh"), ``Affine`` (HardSwish, then 0.7 · x + 0.3 as a Mul and an
    Add by scalar constants: PP-LCNet's learnable affine block) or ``Shift`` (HardSwish, then
    x − 0.25 as a Sub); and three near misses of that affine form, after HardSwish:
    ``Halve`` (x / 2, a Div), ``SubFrom`` (0.25 − x) and ``ChannelScale`` (a Mul by a
    per-channel [1, 8, 1, 1] constant). Input
    x [batch, 3, 16, 16], output y [batch, 4, 16, 16]; seeded weights."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.4):
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(data, name)

    inits = [init("w0", 8, 3, 3, 3), init("b0", 8), init("w1", 4, 8, 3, 3), init("b1", 4)]
    if activation == "SiLU":
        act = [helper.make_node("Sigmoid", ["c0"], ["gate"], name="gate"),
               helper.make_node("Mul", ["c0", "gate"], ["a0"], name="silu")]  # fmt: skip
    elif activation == "GELU":
        half, one, root2 = (
            numpy_helper.from_array(np.array(v, np.float32), name)
            for v, name in ((0.5, "half"), (1.0, "one"), (2**0.5, "root2"))
        )
        inits += [half, one, root2]
        act = [helper.make_node("Div", ["c0", "root2"], ["scaled"], name="scale"),
               helper.make_node("Erf", ["scaled"], ["erf"], name="erf"),
               helper.make_node("Add", ["erf", "one"], ["gate"], name="gate"),
               helper.make_node("Mul", ["c0", "gate"], ["gated"], name="gated"),
               helper.make_node("Mul", ["gated", "half"], ["a0"], name="gelu")]  # fmt: skip
    elif activation in ("Affine", "Shift"):
        constants = {"Affine": ((0.7, "scale"), (0.3, "bias")), "Shift": ((0.25, "shift"),)}
        inits += [numpy_helper.from_array(np.array([v], np.float32), name)
                  for v, name in constants[activation]]  # fmt: skip
        act = [helper.make_node("HardSwish", ["c0"], ["hs"], name="hs")]
        act += ([helper.make_node("Mul", ["scale", "hs"], ["scaled"], name="scale"),
                 helper.make_node("Add", ["scaled", "bias"], ["a0"], name="affine")]
                if activation == "Affine"
                else [helper.make_node("Sub", ["hs", "shift"], ["a0"], name="shift")])  # fmt: skip
    elif activation in ("Halve", "SubFrom", "ChannelScale"):
        value = {
            "Halve": np.float32([2.0]),
            "SubFrom": np.float32([0.25]),
            "ChannelScale": np.linspace(0.5, 1.5, 8, dtype=np.float32).reshape(1, 8, 1, 1),
        }
        inits.append(numpy_helper.from_array(value[activation], "c"))
        kind, ins = {"Halve": ("Div", ["hs", "c"]), "SubFrom": ("Sub", ["c", "hs"]),
                     "ChannelScale": ("Mul", ["hs", "c"])}[activation]  # fmt: skip
        act = [helper.make_node("HardSwish", ["c0"], ["hs"], name="hs"),
               helper.make_node(kind, ins, ["a0"], name="near")]  # fmt: skip
    elif activation == "GeluTanh":
        act = [helper.make_node("Gelu", ["c0"], ["a0"], name="act", approximate="tanh")]
    else:
        act = [helper.make_node(activation, ["c0"], ["a0"], name="act")]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        *act,
        helper.make_node("Conv", ["a0", "w1", "b1"], ["y"], name="head", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, f"{activation.lower()}_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 16, 16])], inits,
    )  # fmt: skip
    opset = 20 if activation == "GeluTanh" else 14
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def detector_head_net(batch=1, seed: int = 0) -> onnx.ModelProto:
    """Conv stem → a box conv (outputs in pixels, hundreds) and a score conv → Sigmoid (0..1)
    → Concat on channels → Reshape [batch, 5, 64] → Transpose: one output ``y`` [batch, 64, 5]
    holding four box coordinates and a score per cell, as a detector's head writes them.
    Input x [batch, 3, 8, 8]; seeded weights."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.4):
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return numpy_helper.from_array(data, name)

    inits = [init("w0", 8, 3, 3, 3), init("b0", 8), init("wb", 4, 8, 1, 1, scale=60.0),
             init("bb", 4, scale=100.0), init("ws", 1, 8, 1, 1), init("bs", 1),
             numpy_helper.from_array(np.array([batch, 5, 64], np.int64), "shape")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu"),
        helper.make_node("Conv", ["r0", "wb", "bb"], ["boxes"], name="boxes"),
        helper.make_node("Conv", ["r0", "ws", "bs"], ["logits"], name="logits"),
        helper.make_node("Sigmoid", ["logits"], ["scores"], name="scores"),
        helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="concat", axis=1),
        helper.make_node("Reshape", ["cat", "shape"], ["flat"], name="flat"),
        helper.make_node("Transpose", ["flat"], ["y"], name="rows", perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes, "detector_head_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 64, 5])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
