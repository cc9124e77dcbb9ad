"""Float conv2d kernels: depthwise as a direct kernel, everything else as BLAS products.

Three forms, chosen once by the builder from the op's shapes and attributes:

* depthwise (every group one input channel, any depth multiplier): a direct kernel over
  stride-phase planes, vectorised along rows (``float_depthwise``).
* pointwise (1×1, stride 1, no padding, any group): W_g[O/g × C/g] @ X_g[C/g × H·W] straight
  from the input into the output through OpenBLAS, in column tiles so that the bias and
  activation pass runs on a tile still in cache.
* general (the 3×3 stem, grouped convs, strided 1×1): im2col of one tile of output rows
  into a buffer, then the same product and epilogue per group.

Bias and the fused activation are applied inside the kernels; a conv without bias gets a
zero bias bound at compile time, so both cases share one specialisation. A conv2d with
``layout=nhwc`` (a float layer among channels-last integer ones) runs the channels-last
kernels of ``float_conv_nhwc`` instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.backends.numba.float_activation import activation_args, bias_activate_rows
from irc.backends.numba.float_blas import gemm_flat
from irc.backends.numba.float_common import float_dtype, static_shape
from irc.backends.numba.float_conv_nhwc import pack_conv2d_nhwc, plan_conv2d_nhwc
from irc.backends.numba.float_depthwise import depthwise_conv
from irc.backends.numba.kernel_table import KernelFn, kernel_builder
from irc.ir import Op
from irc.matching import constant_array

# Product tiles: about 1 MB of B block and result (the epilogue then rereads them from
# cache), but at least 4096 columns, below which OpenBLAS's per-call cost shows (measured).
_TILE_BYTES = 1 << 20
_TILE_MIN_COLUMNS = 4096


@kernel_builder("conv2d")
def build_conv2d(op: Op) -> KernelFn:
    """conv2d: depthwise, pointwise or im2col form, bias and activation fused; on NCHW, or
    (``layout=nhwc``) on channels-last activations by ``float_conv_nhwc``'s kernels."""
    dtype = float_dtype(op)
    x_shape = static_shape(op, op.operands[0], "input")
    cout, cin_g, kh, kw = static_shape(op, op.operands[1], "weight")
    out_shape = static_shape(op, op.results[0], "result")
    hard_swish, lo, hi = activation_args(op, dtype)
    a = op.attrs
    if a["layout"] == "nhwc":
        jit, params = plan_conv2d_nhwc(x_shape, (cout, cin_g, kh, kw), out_shape, a["strides"],
                                       a["pads"], a["dilations"], a["group"], hard_swish, lo, hi,
                                       dtype.itemsize)  # fmt: skip
        packed = _nhwc_packed(op, jit, params, cout, dtype)
        return packed or _with_bias(op, jit, params, cout, dtype)
    cin, (oh, ow) = x_shape[1], out_shape[2:]
    sh, sw = a["strides"]
    top, left = a["pads"][:2]
    dh, dw = a["dilations"]
    group = a["group"]
    if cin_g == 1 and group == cin:
        jit, params = depthwise_conv, (sh, sw, top, left, dh, dw, hard_swish, lo, hi)
    else:
        pointwise = kh == kw == 1 and (sh, sw) == (1, 1) and not any(a["pads"])
        k = cin_g * kh * kw
        per_column = (cout // group + (0 if pointwise else k)) * dtype.itemsize
        rows = max(_TILE_BYTES // (per_column * ow), -(-_TILE_MIN_COLUMNS // ow))
        rows = max(1, min(oh, rows))
        tile_rows = -(-oh // (-(-oh // rows)))  # even tiles: no thin last tile
        jit = _conv_gemm
        params = (sh, sw, top, left, dh, dw, group, pointwise, tile_rows, hard_swish, lo, hi)
    return _with_bias(op, jit, params, cout, dtype)


def _with_bias(op: Op, jit, params: tuple, cout: int, dtype) -> KernelFn:
    """The kernel function calling ``jit(x, w, bias, out, *params)``; a conv without bias
    gets a zero bias bound here (one specialisation for both)."""
    if len(op.operands) == 3:

        def conv(x, wt, bias, out):
            jit(x, wt, bias, out, *params)

        return conv
    zero_bias = np.zeros(cout, dtype)

    def conv_no_bias(x, wt, out):
        jit(x, wt, zero_bias, out, *params)

    return conv_no_bias


def _nhwc_packed(op: Op, jit, params: tuple, cout: int, dtype) -> KernelFn | None:
    """The kernel function of a channels-last conv whose weights (and bias, if any) are
    constants: ``float_conv_nhwc.pack_conv2d_nhwc`` prepares them once, here, and the
    kernel ignores its weight and bias operands. None when they are not constants or the
    kernel has nothing to prepare."""
    weight = constant_array(op.operands[1])
    bias = constant_array(op.operands[2]) if len(op.operands) == 3 else np.zeros(cout, dtype)
    if weight is None or bias is None:
        return None
    prepared = pack_conv2d_nhwc(jit, params, np.ascontiguousarray(weight, dtype),
                                np.ascontiguousarray(bias, dtype))  # fmt: skip
    if prepared is None:
        return None
    packed, args = prepared
    if len(op.operands) == 3:

        def conv(x, wt, b, out):
            packed(x, out, *args)

        return conv

    def conv_no_bias(x, wt, out):
        packed(x, out, *args)

    return conv_no_bias


@njit(cache=True)
def _conv_gemm(x, w, bias, out, sh, sw, top, left, dh, dw, group, pointwise, tile_rows, hs, lo, hi):
    """Convolution as per-group products over tiles of ``tile_rows`` output rows."""
    n, cin, height, width = x.shape
    cout, cin_g, kh, kw = w.shape
    oh_all, ow_all = out.shape[2], out.shape[3]
    og, k, pixels = cout // group, cin_g * kh * kw, oh_all * ow_all
    xf, wf, of = x.reshape(x.size), w.reshape(w.size), out.reshape(out.size)
    cols = np.empty(0 if pointwise else k * tile_rows * ow_all, dtype=x.dtype)
    for b in range(n):
        for g in range(group):
            c0 = (b * cin + g * cin_g) * height * width
            for r0 in range(0, oh_all, tile_rows):
                rows = min(tile_rows, oh_all - r0)
                count = rows * ow_all
                p0 = r0 * ow_all
                out_off = (b * cout + g * og) * pixels + p0
                if pointwise:
                    gemm_flat(wf, g * og * k, k, False, xf, c0 + p0, pixels, False,
                              of, out_off, pixels, og, count, k, 1.0, 0.0)  # fmt: skip
                else:
                    _im2col(xf, c0, height, width, cin_g, kh, kw, sh, sw, top, left, dh, dw,
                            r0, rows, ow_all, cols)  # fmt: skip
                    gemm_flat(wf, g * og * k, k, False, cols, 0, count, False,
                              of, out_off, pixels, og, count, k, 1.0, 0.0)  # fmt: skip
                bias_activate_rows(of, out_off, pixels, og, count, bias, g * og, hs, lo, hi)


@njit(cache=True)
def _im2col(xf, c0, height, width, channels, kh, kw, sh, sw, top, left, dh, dw, r0, rows, ow_all,
            cols):  # fmt: skip
    """cols[(c, i, j), (r, o)] = x[c, (r0+r)·sh - top + i·dh, o·sw - left + j·dw], zero
    outside the input, for the ``rows`` output rows from ``r0``."""
    count = rows * ow_all
    for c in range(channels):
        plane = c0 + c * height * width
        for i in range(kh):
            for j in range(kw):
                base = ((c * kh + i) * kw + j) * count
                shift = j * dw - left
                # output columns o whose input column o·sw + shift lies inside [0, width)
                o_lo = min(ow_all, max(0, -(shift // sw) if shift < 0 else 0))
                o_hi = max(o_lo, min(ow_all, (width - 1 - shift) // sw + 1))
                for r in range(rows):
                    dst = base + r * ow_all
                    ih = (r0 + r) * sh - top + i * dh
                    if ih < 0 or ih >= height:
                        cols[dst : dst + ow_all] = 0
                        continue
                    row = cols[dst : dst + ow_all]
                    src = xf[plane + ih * width : plane + (ih + 1) * width]
                    row[:o_lo] = 0
                    # views from the first real column: indices stay >= 0, so no wraparound
                    # select, and the unit-stride copy vectorises
                    inner, taps = row[o_lo:o_hi], src[o_lo * sw + shift :]
                    if sw == 1:
                        for o in range(o_hi - o_lo):
                            inner[o] = taps[o]
                    else:
                        for o in range(o_hi - o_lo):
                            inner[o] = taps[o * sw]
                    row[o_hi:] = 0
