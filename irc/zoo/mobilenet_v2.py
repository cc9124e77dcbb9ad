"""MobileNetV2 (Sandler et al. 2018) in torchvision's layout, as an ONNX graph.

The network: a 3×3 stride-2 stem of 32 channels, 17 inverted-residual blocks (1×1 expand,
3×3 depthwise, 1×1 linear projection; a residual Add where the stride is 1 and the width
is kept), a 1×1 conv to 1280 channels, global average pooling and a 1000-way linear layer.
Every conv is followed by its own BatchNormalization node (epsilon 1e-5) and, except the
projections, by ReLU6 written as Clip(0, 6); padding is symmetric (kernel // 2).

Parameter names follow torchvision's state dict (``features.3.conv.1.0.weight`` …), so the
checkpoint ``mobilenet_v2-b0353104.pth`` loads as it is.
"""

from __future__ import annotations

import numpy as np
import onnx

from irc.zoo.builder import NetBuilder

# (expansion t, output channels c, repeats n, first stride s) of each stage, width 1.0
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
STEM, HEAD, CLASSES = 32, 1280, 1000
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9  # momentum as ONNX counts it (1 - torch's 0.1)


def _conv_bn(net: NetBuilder, x, key, channels, kernel, stride=1, groups=1, relu6=True):
    """Conv ``key.0``, BatchNormalization ``key.1`` and (if ``relu6``) Clip(0, 6)."""
    x = net.conv(x, f"{key}.0", channels, kernel, stride, groups)
    x = net.batchnorm(x, f"{key}.1", BN_EPSILON, BN_MOMENTUM)
    return net.relu6(x) if relu6 else x


def _inverted_residual(net: NetBuilder, x, key, expansion, channels, stride):
    """One block ``key.conv.*``: [expand,] depthwise, project; plus the input where it fits."""
    inp = net.shapes[x][0]
    hidden = inp * expansion
    layer, y = 0, x
    if expansion != 1:
        y = _conv_bn(net, y, f"{key}.conv.0", hidden, 1)
        layer = 1
    y = _conv_bn(net, y, f"{key}.conv.{layer}", hidden, 3, stride, groups=hidden)
    y = net.conv(y, f"{key}.conv.{layer + 1}", channels, 1)
    y = net.batchnorm(y, f"{key}.conv.{layer + 2}", BN_EPSILON, BN_MOMENTUM)
    return net.add(x, y) if stride == 1 and inp == channels else y


def build_mobilenet_v2(state: dict[str, np.ndarray], doc: str = "") -> onnx.ModelProto:
    """MobileNetV2 (1.0, 224×224) with the weights of a torchvision-layout state dict.

    Input ``input`` float32 [N,3,224,224] (torchvision normalisation), output ``logits``
    float32 [N,1000]. Raises ``CheckpointError`` when a weight is missing, mis-shaped or
    left unused.
    """
    net = NetBuilder(state, "MobileNetV2")
    x = _conv_bn(net, net.input, "features.0", STEM, 3, stride=2)
    index = 1
    for expansion, channels, repeats, stride in STAGES:
        for i in range(repeats):
            x = _inverted_residual(
                net, x, f"features.{index}", expansion, channels, stride if i == 0 else 1
            )
            index += 1
    x = _conv_bn(net, x, f"features.{index}", HEAD, 1)
    return net.finish(net.classifier(x, "classifier.1", CLASSES), doc)
