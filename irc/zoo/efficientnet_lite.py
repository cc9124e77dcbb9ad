"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile CPUs), as an ONNX graph.

Lite drops squeeze-and-excitation, uses ReLU6 (Clip(0, 6)) instead of swish, and keeps the
stem (32) and head (1280) widths fixed. The network: a 3×3 stride-2 stem, 16 MBConv blocks
in 7 stages (1×1 expand unless the ratio is 1, k×k depthwise, 1×1 linear projection; a
residual Add where the stride is 1 and the width is kept), a 1×1 head conv, global average
pooling and a 1000-way linear layer. Each conv has its own BatchNormalization (epsilon
1e-3, as in TensorFlow). The weights came from TensorFlow, so padding is TensorFlow's
"same": at stride 2 the odd pixel pads the bottom/right, which ``Conv.pads`` states
explicitly for the 224×224 input (e.g. [0, 0, 1, 1] for 3×3 from 224 to 112).

Parameter names follow the state dict of ``efficientnet-lite0-57934424.pth``
(``_conv_stem``, ``_blocks.N._expand_conv`` / ``_depthwise_conv`` / ``_project_conv``
with ``_bn0`` / ``_bn1`` / ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``).
"""

from __future__ import annotations

import numpy as np
import onnx

from irc.zoo.builder import NetBuilder

# (repeats, kernel, first stride, expansion, output channels) of each stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM, HEAD, CLASSES = 32, 1280, 1000
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99  # momentum as ONNX counts it (1 - torch's 0.01)


def _conv_bn(net: NetBuilder, x, conv, bn, channels, kernel, stride=1, groups=1, relu6=True):
    """Conv ``conv`` with "same" padding, BatchNormalization ``bn``, then Clip(0, 6)."""
    x = net.conv(x, conv, channels, kernel, stride, groups, padding="tf-same")
    x = net.batchnorm(x, bn, BN_EPSILON, BN_MOMENTUM)
    return net.relu6(x) if relu6 else x


def _mbconv(net: NetBuilder, x, key, kernel, stride, expansion, channels):
    """One block ``key``: [expand,] depthwise, project; plus the input where it fits."""
    inp = net.shapes[x][0]
    hidden = inp * expansion
    y = x
    if expansion != 1:
        y = _conv_bn(net, y, f"{key}._expand_conv", f"{key}._bn0", hidden, 1)
    y = _conv_bn(net, y, f"{key}._depthwise_conv", f"{key}._bn1", hidden, kernel, stride, hidden)
    y = _conv_bn(net, y, f"{key}._project_conv", f"{key}._bn2", channels, 1, relu6=False)
    return net.add(y, x) if stride == 1 and inp == channels else y


def build_efficientnet_lite0(state: dict[str, np.ndarray], doc: str = "") -> onnx.ModelProto:
    """EfficientNet-Lite0 (224×224) with the weights of its PyTorch state dict.

    Input ``input`` float32 [N,3,224,224] (normalised as (x - 127) / 128 for x in 0..255),
    output ``logits`` float32 [N,1000]. Raises ``CheckpointError`` when a weight is
    missing, mis-shaped or left unused.
    """
    net = NetBuilder(state, "EfficientNet-Lite0")
    x = _conv_bn(net, net.input, "_conv_stem", "_bn0", STEM, 3, stride=2)
    index = 0
    for repeats, kernel, stride, expansion, channels in STAGES:
        for i in range(repeats):
            first_stride = stride if i == 0 else 1
            x = _mbconv(net, x, f"_blocks.{index}", kernel, first_stride, expansion, channels)
            index += 1
    x = _conv_bn(net, x, "_conv_head", "_bn1", HEAD, 1)
    return net.finish(net.classifier(x, "_fc", CLASSES), doc)
