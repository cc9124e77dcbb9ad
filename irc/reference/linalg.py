"""Linear algebra semantics: conv2d, conv_transpose2d, gemm, matmul, inference batch
normalisation and layer normalisation.

Convolution is lowered to one BLAS matrix product per batch (im2col), with groups batched
into the same product; depthwise convolution, where a matrix product would be a stack of
tiny ones, sums shifted input slices times per-channel weights instead.
"""

from __future__ import annotations

import numpy as np

from irc.ops.shape_rules import conv_output_size
from irc.reference.elementwise import fused_activation
from irc.reference.registry import semantics


def _spatial_taps(padded: np.ndarray, offset, dilation, stride, out_size):
    """Slice of the padded input that kernel tap ``offset`` reads for every output pixel."""
    (i, j), (dh, dw), (sh, sw), (oh, ow) = offset, dilation, stride, out_size
    return padded[
        ..., i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw
    ]


@semantics("conv2d")
def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    group: int,
    activation: str = "none",
    act_min: float = -np.inf,
    act_max: float = np.inf,
    layout: str = "nchw",
) -> np.ndarray:
    """ONNX Conv in 2-D: cross-correlation of NCHW ``x`` with OIHW ``w``, plus bias ``b``,
    then the fused activation (``layout="nhwc"``: ``x`` and the result channels last).

    ``pads`` is [top, left, bottom, right] of zeros; input channel group g feeds output
    channels [g*O/group, (g+1)*O/group).
    """
    if layout == "nhwc":
        args = dict(strides=strides, pads=pads, dilations=dilations, group=group,
                    activation=activation, act_min=act_min, act_max=act_max)  # fmt: skip
        y = conv2d(np.transpose(x, (0, 3, 1, 2)), w, b, **args)
        return np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1)))
    n, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = w.shape
    top, left, bottom, right = pads
    out_size = (
        conv_output_size(height, kh, strides[0], top, bottom, dilations[0]),
        conv_output_size(width, kw, strides[1], left, right, dilations[1]),
    )
    padded = x
    if any(pads):
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    if group > 1 and group_channels == 1:
        out = _depthwise(padded, w, taps, dilations, strides, out_size)
    else:
        out = _im2col_product(padded, w, group, taps, dilations, strides, out_size)
    if b is not None:
        out += b.reshape(1, out_channels, 1, 1)
    return fused_activation(out, activation, act_min, act_max)


def _im2col_product(padded, w, group, taps, dilations, strides, out_size):
    """Convolution as (O/g × C/g·kh·kw) @ (C/g·kh·kw × pixels), all groups in one matmul."""
    n, channels = padded.shape[:2]
    out_channels, group_channels, kh, kw = w.shape
    oh, ow = out_size
    columns = np.empty((n, channels, kh, kw, oh, ow), dtype=padded.dtype)
    for i, j in taps:
        columns[:, :, i, j] = _spatial_taps(padded, (i, j), dilations, strides, out_size)
    columns = columns.reshape(n, group, group_channels * kh * kw, oh * ow)
    weights = w.reshape(group, out_channels // group, group_channels * kh * kw)
    return np.matmul(weights, columns).reshape(n, out_channels, oh, ow)


def _depthwise(padded, w, taps, dilations, strides, out_size):
    """Convolution where every group has one input channel (depth multiplier O/C)."""
    n, channels = padded.shape[:2]
    out_channels = w.shape[0]
    if out_channels != channels:  # output channel o reads input channel o // multiplier
        padded = np.repeat(padded, out_channels // channels, axis=1)
    out = np.zeros((n, out_channels) + tuple(out_size), dtype=padded.dtype)
    for i, j in taps:
        tap_weights = w[:, 0, i, j].reshape(1, out_channels, 1, 1)
        out += _spatial_taps(padded, (i, j), dilations, strides, out_size) * tap_weights
    return out


@semantics("gemm")
def gemm(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    alpha: float,
    beta: float,
    trans_a: int,
    trans_b: int,
    activation: str = "none",
    act_min: float = -np.inf,
    act_max: float = np.inf,
) -> np.ndarray:
    """alpha * op(a) @ op(b) + beta * c, op transposing when trans_* is 1 (ONNX Gemm),
    then the fused activation.

    ``c`` broadcasts to the [M, N] result.
    """
    product = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    if alpha != 1.0:
        product = product * alpha
    if c is not None:
        product = product + (c if beta == 1.0 else beta * c)
    return fused_activation(product.astype(a.dtype, copy=False), activation, act_min, act_max)


@semantics("matmul")
def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.matmul (ONNX MatMul): batched, broadcasting, 1-D operands promoted and dropped."""
    return np.matmul(a, b)


@semantics("batchnorm")
def batchnorm(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    *,
    epsilon: float,
) -> np.ndarray:
    """(x - mean) / sqrt(var + epsilon) * scale + bias per channel (axis 1), inference mode."""
    per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def channel(p):
        return p.reshape(per_channel)

    normalised = (x - channel(mean)) / np.sqrt(channel(var) + epsilon)
    return (normalised * channel(scale) + channel(bias)).astype(x.dtype, copy=False)


@semantics("conv_transpose2d")
def conv_transpose2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    output_padding: tuple[int, int],
    group: int,
) -> np.ndarray:
    """ONNX ConvTranspose in 2-D: each input pixel scatters ``w`` times its value into the
    output at stride ``strides``; the full result is then cropped by ``pads`` ([top, left,
    bottom, right]) after ``output_padding`` rows and columns were added at its end."""
    n, channels, height, width = x.shape
    _, out_per_group, kh, kw = w.shape
    (sh, sw), (dh, dw), (ph, pw) = strides, dilations, output_padding
    full_h = sh * (height - 1) + dh * (kh - 1) + 1 + ph
    full_w = sw * (width - 1) + dw * (kw - 1) + 1 + pw
    full = np.zeros((n, out_per_group * group, full_h, full_w), dtype=np.result_type(x, w))
    in_per_group = channels // group
    for g in range(group):
        xg = x[:, g * in_per_group : (g + 1) * in_per_group]
        wg = w[g * in_per_group : (g + 1) * in_per_group]
        out = full[:, g * out_per_group : (g + 1) * out_per_group]
        for i in range(kh):
            for j in range(kw):
                tap = np.einsum("nchw,co->nohw", xg, wg[:, :, i, j])
                out[
                    :, :, i * dh : i * dh + sh * (height - 1) + 1 : sh,
                    j * dw : j * dw + sw * (width - 1) + 1 : sw,
                ] += tap  # fmt: skip
    top, left, bottom, right = pads
    y = full[:, :, top : full_h - bottom, left : full_w - right]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y.astype(x.dtype, copy=False))


@semantics("layer_norm")
def layer_norm(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None, *, axis: int,
    epsilon: float,
) -> np.ndarray:  # fmt: skip
    """ONNX LayerNormalization: normalise over the axes from ``axis`` on (mean and variance
    in float64), then scale and add bias, both broadcast to those axes."""
    axes = tuple(range(axis % x.ndim, x.ndim))
    wide = x.astype(np.float64)
    centred = wide - wide.mean(axis=axes, keepdims=True)
    var = (centred * centred).mean(axis=axes, keepdims=True)
    y = centred / np.sqrt(var + epsilon) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)
