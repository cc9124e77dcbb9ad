"""Write a convolutional classifier as an ONNX graph, taking its weights from a state dict.

``NetBuilder`` emits the few node kinds the zoo's networks are made of (Conv without bias,
BatchNormalization kept as its own node, Clip for ReLU6, Add, and a pooled Gemm head),
tracks each value's channels and spatial size so it can check every weight's shape and
compute TensorFlow's "same" padding, and names each initializer after its state-dict key.

    >>> net = NetBuilder(state, "mobilenetv2")
    >>> x = net.conv(net.input, "features.0.0", 32, 3, stride=2)
    >>> model = net.finish(net.classifier(x, "classifier.1", 1000))
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from irc.zoo.checkpoint import CheckpointError

OPSET = 13
IR_VERSION = 7  # the lowest IR version that carries opset 13: older runtimes load the file


class NetBuilder:
    """Nodes and initializers of one network, with the shape of every value it made."""

    def __init__(self, state: dict[str, np.ndarray], name: str, size: int = 224):
        self.state, self.name = state, name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.input = "input"
        self.shapes = {self.input: (3, size, size)}  # channels, height, width (batch symbolic)

    def weight(self, key: str, shape: tuple[int, ...]) -> str:
        """The initializer of state-dict entry ``key``, checked to have ``shape``."""
        if key not in self.state:
            raise CheckpointError(f"has no '{key}' (is it a {self.name} checkpoint?)")
        array = self.state[key]
        if tuple(array.shape) != tuple(shape):
            raise CheckpointError(f"'{key}' has shape {list(array.shape)}, expected {list(shape)}")
        if key not in self.initializers:
            self.initializers[key] = numpy_helper.from_array(array.astype(np.float32), key)
        return key

    def _constant(self, name: str, value: float) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.array(value, np.float32), name)
        return name

    def _node(self, op: str, inputs: list[str], shape, out: str = "", **attrs) -> str:
        out = out or f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(
            helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}", **attrs)
        )
        self.shapes[out] = shape
        return out

    def conv(self, x, key, channels, kernel, stride=1, groups=1, padding="symmetric") -> str:
        """A bias-free Conv with weight ``key.weight``; ``padding`` "symmetric" or "tf-same"."""
        c, h, w = self.shapes[x]
        weight = self.weight(f"{key}.weight", (channels, c // groups, kernel, kernel))
        if padding == "tf-same":
            (top, bottom, oh), (left, right, ow) = (_same(n, kernel, stride) for n in (h, w))
        else:
            top = bottom = left = right = kernel // 2
            oh, ow = ((n + 2 * (kernel // 2) - kernel) // stride + 1 for n in (h, w))
        return self._node(
            "Conv", [x, weight], (channels, oh, ow), dilations=[1, 1], group=groups,
            kernel_shape=[kernel, kernel], pads=[top, left, bottom, right], strides=[stride] * 2,
        )  # fmt: skip

    def batchnorm(self, x, key, epsilon: float, momentum: float) -> str:
        """BatchNormalization with ``key.weight``, ``.bias``, ``.running_mean`` and ``.running_var``
        (the inference form: running statistics)."""
        c = self.shapes[x][0]
        params = [self.weight(f"{key}.{p}", (c,)) for p in _BN_PARAMS]
        return self._node(
            "BatchNormalization", [x, *params], self.shapes[x], epsilon=epsilon, momentum=momentum
        )

    def relu6(self, x) -> str:
        """ReLU6 as Clip(x, 0, 6) with scalar initializer bounds."""
        low, high = self._constant("relu6_min", 0.0), self._constant("relu6_max", 6.0)
        return self._node("Clip", [x, low, high], self.shapes[x])

    def add(self, a, b) -> str:
        """The elementwise sum of two values of one shape (a residual connection)."""
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"residual shapes differ: {self.shapes[a]} vs {self.shapes[b]}")
        return self._node("Add", [a, b], self.shapes[a])

    def classifier(self, x, key, classes: int) -> str:
        """GlobalAveragePool, Flatten and Gemm (``key.weight`` [classes, C], ``key.bias``) to
        the output ``logits``."""
        c = self.shapes[x][0]
        pooled = self._node("GlobalAveragePool", [x], (c, 1, 1))
        flat = self._node("Flatten", [pooled], (c,), axis=1)
        weight = self.weight(f"{key}.weight", (classes, c))
        bias = self.weight(f"{key}.bias", (classes,))
        return self._node(
            "Gemm", [flat, weight, bias], (classes,), "logits", alpha=1.0, beta=1.0, transB=1
        )

    def finish(self, logits: str, doc: str = "") -> onnx.ModelProto:
        """The checked model: input ``input`` [N,3,H,W] float32, output ``logits`` [N,classes]."""
        unused = sorted(
            k for k in self.state if k not in self.initializers and not k.endswith("_tracked")
        )
        if unused:
            raise CheckpointError(
                f"has {len(unused)} parameter(s) that {self.name} does not use, e.g. '{unused[0]}'"
            )
        c, h, w = self.shapes[self.input]
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(self.input, TensorProto.FLOAT, ["N", c, h, w])],
            [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", *self.shapes[logits]])],
            list(self.initializers.values()),
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="irc.zoo",
            doc_string=doc,
        )
        onnx.checker.check_model(model, full_check=True)
        return model


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def _same(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME" padding (before, after, output size): any odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out
