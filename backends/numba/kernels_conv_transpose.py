"""Float conv_transpose2d: a direct loop nest that scatters each input row into the output.

Per output channel the plane starts at the bias; then every (input channel, kernel tap)
pair adds weight · input row into the output row it lands on, at the op's stride, after
the ``pads`` crop. The innermost loop runs along an input row, so it reads contiguously and
writes at the stride; the work is that of the matching convolution.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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


@kernel_builder("conv_transpose2d")
def build_conv_transpose2d(op: Op) -> KernelFn:
    """conv_transpose2d, NCHW, any group; a missing bias is a bound zero vector."""
    dtype = float_dtype(op)
    out_channels = static_shape(op, op.result, "result")[1]
    a = op.attrs
    params = (a["group"], tuple(a["strides"]), tuple(a["pads"][:2]), tuple(a["dilations"]))
    if len(op.operands) == 3:

        def conv_transpose(x, w, b, out):
            conv_transpose_kernel(x, w, b, out, *params)

        return conv_transpose
    zero_bias = np.zeros(out_channels, dtype)

    def conv_transpose_no_bias(x, w, out):
        conv_transpose_kernel(x, w, zero_bias, out, *params)

    return conv_transpose_no_bias
