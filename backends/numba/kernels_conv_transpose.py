"""Float conv_transpose2d: a direct loop nest that scatters each input row into the output,
or, where the kernel's taps do not overlap, one matrix product.

Per output channel the plane starts at the bias; then every (input channel, kernel tap)
pair adds weight · input row into the output row it lands on, at the op's stride, after
the ``pads`` crop. The innermost loop runs along an input row, so it reads contiguously and
writes at the stride; the work is that of the matching convolution.

When the stride equals the kernel (a 2×2 stride-2 upsampler, as DBNet heads use), no pads
or dilation, one group: each input pixel fills its own kh × kw patch of the output, so the
whole op is ``wᵀ · x`` (the weight [C, O·kh·kw] against the input [C, H·W], one BLAS
product) followed by moving each patch into place and adding the bias.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.backends.numba.float_blas import gemm_flat
from irc.backends.numba.float_common import float_dtype, static_shape
from irc.backends.numba.kernel_table import KernelFn, kernel_builder
from irc.ir import Op


@njit(cache=True)
def conv_transpose_kernel(x, w, bias, out, group, strides, pads, dilations):
    """out[n, g·O/g + o] = bias + Σ x[n, c] scattered through w[c, o] (NCHW, 4-D arrays)."""
    batch, channels, height, width = x.shape
    _, out_per_group, kh, kw = w.shape
    out_h, out_w = out.shape[2], out.shape[3]
    sh, sw = strides
    top, left = pads
    dh, dw = dilations
    in_per_group = channels // group
    for n in range(batch):
        for g in range(group):
            for o in range(out_per_group):
                oc = g * out_per_group + o
                plane = out[n, oc]
                plane[:, :] = bias[oc]
                for ic in range(in_per_group):
                    c = g * in_per_group + ic
                    src = x[n, c]
                    for i in range(kh):
                        for j in range(kw):
                            _scatter_tap(src, w[c, o, i, j], plane, i * dh - top, j * dw - left,
                                         sh, sw, height, width, out_h, out_w)  # fmt: skip


@njit(cache=True)
def _scatter_tap(src, weight, plane, row0, col0, sh, sw, height, width, out_h, out_w):
    """plane[row0 + sh·r, col0 + sw·c] += weight · src[r, c] where that lands in the plane."""
    c_lo = max(0, -(col0 // sw)) if col0 < 0 else 0
    c_hi = min(width, (out_w - 1 - col0) // sw + 1) if out_w - 1 - col0 >= 0 else 0
    for r in range(height):
        oh = row0 + r * sh
        if oh < 0 or oh >= out_h:
            continue
        row = plane[oh]
        for c in range(c_lo, c_hi):
            row[col0 + c * sw] += weight * src[r, c]


@njit(cache=True)
def conv_transpose_patches(x, w, bias, out, product):
    """``conv_transpose_kernel`` for stride = kernel, no pads or dilation, one group:
    ``product`` [O·kh·kw, H·W] = wᵀ · x per image, then each patch moved into place."""
    batch, channels, height, width = x.shape
    _, out_channels, kh, kw = w.shape
    pixels = height * width
    rows = out_channels * kh * kw
    wf, xf = w.reshape(-1), x.reshape(-1)
    for n in range(batch):
        gemm_flat(wf, 0, rows, True, xf, n * channels * pixels, pixels, False,
                  product, 0, pixels, rows, pixels, channels, 1.0, 0.0)  # fmt: skip
        for o in range(out_channels):
            b = bias[o]
            plane = out[n, o]
            for i in range(kh):
                for j in range(kw):
                    tap = ((o * kh + i) * kw + j) * pixels
                    for r in range(height):
                        row = plane[r * kh + i]
                        src = tap + r * width
                        for c in range(width):
                            row[c * kw + j] = product[src + c] + b


def _patches(op: Op) -> bool:
    """Whether ``op``'s taps tile its output without overlap or crop."""
    a = op.attrs
    kernel = tuple(op.operands[1].type.shape[2:])
    return (tuple(a["strides"]) == kernel and not any(a["pads"]) and a["group"] == 1
            and tuple(a["dilations"]) == (1, 1) and not any(a["output_padding"]))  # fmt: skip


@kernel_builder("conv_transpose2d")
def build_conv_transpose2d(op: Op) -> KernelFn:
    """conv_transpose2d, NCHW, any group; a missing bias is a bound zero vector."""
    dtype = float_dtype(op)
    out_channels = static_shape(op, op.result, "result")[1]
    a = op.attrs
    params = (a["group"], tuple(a["strides"]), tuple(a["pads"][:2]), tuple(a["dilations"]))
    zero_bias = np.zeros(out_channels, dtype)
    if _patches(op):
        x_shape = static_shape(op, op.operands[0], "input")
        w_shape = static_shape(op, op.operands[1], "weight")
        product = np.empty(out_channels * w_shape[2] * w_shape[3] * x_shape[2] * x_shape[3],
                           dtype)  # fmt: skip
        if len(op.operands) == 3:

            def by_patches(x, w, b, out):
                conv_transpose_patches(x, w, b, out, product)

            return by_patches

        def by_patches_no_bias(x, w, out):
            conv_transpose_patches(x, w, zero_bias, out, product)

        return by_patches_no_bias
    if len(op.operands) == 3:

        def conv_transpose(x, w, b, out):
            conv_transpose_kernel(x, w, b, out, *params)

        return conv_transpose

    def conv_transpose_no_bias(x, w, out):
        conv_transpose_kernel(x, w, zero_bias, out, *params)

    return conv_transpose_no_bias
