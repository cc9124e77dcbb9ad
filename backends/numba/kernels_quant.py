"""Integer kernels: quantize / dequantize, qconv2d, qgemm, qadd, qglobal_avg_pool and qconcat.

The builders read every scale, zero point and fused clamp from the op's types and
attributes once (``irc.quant`` computes them exactly as the reference does) and bind them
as integers, so the kernels only do integer work (and float32 for the two boundaries).

qconv2d and qgemm run the L2/L3 form: an int32 bias operand and explicit per-channel
multiplier and shift operands ([O] or [1]); the L1 form raises BackendError asking for
the ``lower-quantized`` pass. Weights are int8 levels (i8, and i4/i2 not yet packed,
whose levels are valid int8 ones), or a ``qconstant`` with ``packed=1``: uint8 rows of
4- or 2-bit fields, which the kernels read in place. A conv is depthwise (direct kernel)
when every group has one input channel, and otherwise an int8 matrix product per group
over gathered pixels; the weights' level sums that correct for the input zero point are
computed here when the weight is a constant. A qconv2d / qglobal_avg_pool with
``layout=nhwc`` (the ``channels-last`` pass) runs the channels-last kernels
(``int_depthwise_nhwc``, ``int_conv_nhwc``, ``qmean_channels_last``), the others the NCHW
ones (``int_depthwise``, ``int_conv``, ``int_pointwise``). qconcat copies the operands
quantized as its result and maps the others' levels through a table of ``irc.quant.
rescale`` over all 256 levels (the reference's arithmetic, so bit-exact by construction).
max_pool and nearest resize on qi8 values are the movement kernels' own (``kernels_pool``,
``kernels_resize``), which take int8 arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads

from irc import quant
from irc.backends.numba.float_common import static_shape
from irc.backends.numba.int_common import weight_sums
from irc.backends.numba.int_conv import qconv_gemm, qgemm_tiles
from irc.backends.numba.int_conv_nhwc import (
    PATH_AUTO,
    conv_plan,
    prepare_tail,
    prepare_weights,
    qconv_nhwc,
    qconv_nhwc_prepared,
    qconv_nhwc_serial,
)
from irc.backends.numba.int_depthwise import qdepthwise
from irc.backends.numba.int_depthwise_nhwc import (
    prepare_depthwise,
    qdepthwise_nhwc,
    qdepthwise_nhwc_prepared,
    qdepthwise_nhwc_serial,
)
from irc.backends.numba.int_elementwise import (
    dequantize,
    qadd,
    qmean,
    qmean_channels_last,
    quantize,
    requantize_columns,
)
from irc.backends.numba.int_pointwise import MAX_K, qpointwise
from irc.backends.numba.int_simd import HAVE_AVX2
from irc.backends.numba.kernel_table import BackendError, KernelFn, kernel_builder
from irc.backends.numba.kernels_elementwise import broadcast_plan
from irc.backends.numba.kernels_movement import concat_blocks, copy_columns
from irc.ir import Op, Value
from irc.tensor import ElidedTensor
from irc.types import DType

# Bytes of gathered activations per conv product tile (pixels = this // K, kept within
# the bounds below), and the qgemm tile: rows of A, and columns of W split for small M.
_CONV_TILE_BYTES = 1 << 15
_CONV_TILE_PIXELS = (16, 1024)
_GEMM_TILE_M = 256
_GEMM_SPLIT_N = 8


def _per_tensor(op: Op, value: Value, what: str) -> tuple[float, int]:
    """Scale and zero point of a per-tensor quantized operand."""
    q = value.type.quant
    if q is None or q.axis is not None or q.elided:
        raise BackendError(f"op {op.label()}: the {what} needs per-tensor quantization")
    return q.scales[0], int(q.zero_points[0])


def _clamp(op: Op) -> tuple[int, int, int]:
    """(out zero point, lo, hi): the output zero point and the fused activation's levels."""
    a = op.attrs
    lo, hi = quant.activation_levels(
        a["activation"], a["act_min"], a["act_max"], a["out_scale"], a["out_zero_point"]
    )
    return int(a["out_zero_point"]), int(lo), int(hi)


def _check_lowered(op: Op, out_channels: int) -> None:
    """BackendError unless the layer has its int32 bias, multiplier and shift operands."""
    types = [v.type for v in op.operands]
    if len(types) != 5 or types[2].dtype != DType.I32:
        raise BackendError(
            f"op {op.label()}: the Numba backend runs {op.kind} with an int32 bias and explicit "
            "multiplier and shift operands; it must be lowered with the `lower-quantized` "
            "pass first"
        )
    for t in types[3:]:
        if t.dtype != DType.I32 or t.shape not in ((out_channels,), (1,)):
            raise BackendError(f"op {op.label()}: multiplier and shift must be i32 [O] or [1]")


def _weight_form(op: Op) -> tuple[int, np.ndarray | None]:
    """(bits the kernels read the weight payload at, its level sums per row or None).

    A packed ``qconstant`` holds 4- or 2-bit fields; any other weight holds int8 levels
    (read at 8 bits whatever its type's width). The sums come from a constant's payload;
    None means the kernel function computes them on each call.
    """
    w = op.operands[1]
    producer = w.producer
    packed = producer is not None and producer.kind == "qconstant" and producer.attrs["packed"]
    bits = w.type.dtype.bits if packed else 8
    if producer is None or producer.kind != "qconstant":
        return bits, None
    value = producer.attrs["value"]
    if isinstance(value, ElidedTensor):
        return bits, None
    levels = quant.unpack(value, bits, w.type.shape) if packed else np.asarray(value)
    rows = levels.reshape(levels.shape[0], -1).astype(np.int64)
    return bits, np.ascontiguousarray(rows.sum(axis=1))


@kernel_builder("qconv2d")
def build_qconv2d(op: Op) -> KernelFn:
    """qconv2d: depthwise (direct) or per-group int8 products (pointwise or gathered), on
    NCHW or channels-last activations as the op's ``layout`` says."""
    if op.attrs["layout"] == "nhwc":
        return _build_qconv2d_nhwc(op)
    n, cin, h, w = static_shape(op, op.operands[0], "input")
    cout, cin_g, kh, kw = static_shape(op, op.operands[1], "weight")
    oh, ow = static_shape(op, op.results[0], "result")[2:]
    _check_lowered(op, cout)
    _, x_zero = _per_tensor(op, op.operands[0], "input")
    zp, lo, hi = _clamp(op)
    bits, sums = _weight_form(op)
    sh, sw = op.attrs["strides"]
    top, left = op.attrs["pads"][:2]
    dh, dw = op.attrs["dilations"]
    group = op.attrs["group"]

    if cin_g == 1 and group == cin:
        params = (kh, kw, sh, sw, top, left, dh, dw, x_zero, zp, lo, hi)

        def depthwise(x, wt, bias, mult, shift, out):
            qdepthwise(x, wt, bits, bias, mult, shift, out, *params)

        return depthwise

    pointwise = kh == kw == 1 and (sh, sw) == (1, 1) and not any(op.attrs["pads"])
    k = cin_g * kh * kw
    if pointwise and group == 1 and k <= MAX_K and HAVE_AVX2:
        tail = (x_zero, zp, lo, hi)

        def conv_pointwise(x, wt, bias, mult, shift, out):
            wsums = sums if sums is not None else weight_sums(wt, bits, k)
            qpointwise(x, wt, bits, bias, mult, shift, wsums, out, *tail)

        return conv_pointwise
    tile = max(_CONV_TILE_PIXELS[0], min(_CONV_TILE_PIXELS[1], _CONV_TILE_BYTES // k))
    tile = min(tile, oh * ow) or 1
    tiles = -(-oh * ow // tile)
    tile = -(-oh * ow // tiles)  # even tiles: no thin last one
    params = (kh, kw, sh, sw, top, left, dh, dw, group, pointwise, tile, x_zero, zp, lo, hi)

    def conv(x, wt, bias, mult, shift, out):
        wsums = sums if sums is not None else weight_sums(wt, bits, k)
        qconv_gemm(x, wt, bits, bias, mult, shift, wsums, out, *params)

    return conv


def _build_qconv2d_nhwc(op: Op) -> KernelFn:
    """qconv2d on channels-last int8: a depthwise kernel vectorised over channels, or
    products on the pixel rows as the layout stores them, requantized in the kernel. When
    the weight, bias, multiplier and shift are constants (a compiled model's), their
    tables and layer constants are prepared here, once."""
    n, _, _, cin = static_shape(op, op.operands[0], "input")
    cout, cin_g, kh, kw = static_shape(op, op.operands[1], "weight")
    oh, ow = static_shape(op, op.results[0], "result")[1:3]
    _check_lowered(op, cout)
    _, x_zero = _per_tensor(op, op.operands[0], "input")
    zp, lo, hi = _clamp(op)
    bits, sums = _weight_form(op)
    geometry = (kh, kw, *op.attrs["strides"], *op.attrs["pads"][:2], *op.attrs["dilations"])
    group = op.attrs["group"]
    weight, bias, mult, shift = (_payload(v) for v in op.operands[1:5])
    constant = all(a is not None for a in (weight, bias, mult, shift))
    if cin_g == 1 and group == cin:
        params = (*geometry, x_zero, zp, lo, hi)
        if constant:
            layer = prepare_depthwise(weight, bits, bias, mult, shift, kh, kw)

            def depthwise_nhwc_prepared(x, wt, bias, mult, shift, out):
                threads = get_num_threads()
                run = qdepthwise_nhwc_serial if threads == 1 else qdepthwise_nhwc_prepared
                run(x, layer, out, *params, threads)

            return depthwise_nhwc_prepared

        def depthwise_nhwc(x, wt, bias, mult, shift, out):
            qdepthwise_nhwc(x, wt, bits, bias, mult, shift, out, *params, get_num_threads())

        return depthwise_nhwc
    k = cin_g * kh * kw
    og = cout // group
    if constant and sums is not None:
        lanes, tile = conv_plan(PATH_AUTO, k, og, n * oh * ow, oh * ow, 0)
        table = prepare_weights(weight, bits, group, cin_g, kh, kw, og, lanes)
        tail = prepare_tail(bias, mult, shift, sums, x_zero, k, lanes)
        run = (*geometry, group, x_zero, zp, lo, hi, lanes, tile)

        def conv_nhwc_prepared(x, wt, bias, mult, shift, out):
            threads = get_num_threads()
            conv = qconv_nhwc_serial if threads == 1 else qconv_nhwc_prepared
            conv(x, wt, bits, table, tail, out, *run, threads)

        return conv_nhwc_prepared
    params = (*geometry, group, x_zero, zp, lo, hi)

    def conv_nhwc(x, wt, bias, mult, shift, out):
        wsums = sums if sums is not None else weight_sums(wt, bits, k)
        qconv_nhwc(x, wt, bits, bias, mult, shift, wsums, out, *params, 0, 0, get_num_threads())

    return conv_nhwc


def _payload(value: Value) -> np.ndarray | None:
    """The array a kernel receives for ``value`` when a constant with its data produces
    it (a qconstant's stored levels or packed bytes), else None."""
    producer = value.producer
    if producer is None or producer.kind not in ("constant", "qconstant"):
        return None
    data = producer.attrs["value"]
    if isinstance(data, ElidedTensor):
        return None
    return np.ascontiguousarray(data)


@kernel_builder("qgemm")
def build_qgemm(op: Op) -> KernelFn:
    """qgemm: int8 [M, K] times weight rows [N, K] (int8 or packed), requantized. Where
    the channels-last conv has its ``vpdpbusd`` product and the constants are known, the
    gemm runs as that conv (1×1 over M pixels), its tables prepared here."""
    m, k = static_shape(op, op.operands[0], "a")
    n = static_shape(op, op.operands[1], "weight")[0]
    _check_lowered(op, n)
    _, a_zero = _per_tensor(op, op.operands[0], "input")
    zp, lo, hi = _clamp(op)
    bits, sums = _weight_form(op)
    weight, bias, mult, shift = (_payload(v) for v in op.operands[1:5])
    lanes, tile = conv_plan(PATH_AUTO, k, n, m, m, 0)
    if lanes == 64 and sums is not None and all(a is not None for a in (weight, bias, mult, shift)):
        table = prepare_weights(weight, bits, 1, k, 1, 1, n, lanes)
        tail = prepare_tail(bias, mult, shift, sums, a_zero, k, lanes)
        pixels, rows = (1, 1, m, k), (1, 1, m, n)
        run = (1, 1, 1, 1, 0, 0, 1, 1, 1, a_zero, zp, lo, hi, lanes, tile)

        def gemm_as_conv(a, wt, bias, mult, shift, out):
            threads = get_num_threads()
            conv = qconv_nhwc_serial if threads == 1 else qconv_nhwc_prepared
            conv(a.reshape(pixels), wt, bits, table, tail, out.reshape(rows), *run, threads)

        return gemm_as_conv
    tile_m = max(1, min(m, _GEMM_TILE_M))
    # few rows: split the output features instead, so every thread gets a share
    tile_n = n if m > _GEMM_TILE_M else max(1, -(-n // _GEMM_SPLIT_N))
    params = (tile_m, tile_n, a_zero, zp, lo, hi)

    def gemm(a, wt, bias, mult, shift, out):
        wsums = sums if sums is not None else weight_sums(wt, bits, k)
        qgemm_tiles(a, wt, bits, bias, mult, shift, wsums, out, *params)

    return gemm


@kernel_builder("quantize")
def build_quantize(op: Op) -> KernelFn:
    """quantize: float32 (or float64, rounded to float32 first) to int8 levels."""
    dtype = op.operands[0].type.dtype
    if dtype not in (DType.F32, DType.F64):
        raise BackendError(f"op {op.label()}: quantize takes f32 or f64, not {dtype.short}")
    scale = np.float32(op.attrs["scale"])
    zero_point = np.float32(op.attrs["zero_point"])

    def quantize_kernel(x, out):
        quantize(x, out, scale, zero_point)

    return quantize_kernel


@kernel_builder("dequantize")
def build_dequantize(op: Op) -> KernelFn:
    """dequantize: levels to float32, per tensor or along the type's axis."""
    x = op.operands[0]
    q = x.type.quant
    if q.elided:
        raise BackendError(f"op {op.label()}: the operand's scales were elided")
    shape = static_shape(op, x, "input")
    scales = np.asarray(q.scales, np.float32)
    zero_points = np.asarray(q.zero_points, np.float32)
    producer = x.producer
    if producer is not None and producer.kind == "qconstant" and producer.attrs["packed"]:
        # a packed constant: its result is a constant too, made once here
        levels = quant.unpack(producer.attrs["value"], x.type.dtype.bits, shape)
        result = quant.dequantize(levels, scales, zero_points, q.axis)

        def dequantize_constant(packed, out):
            out[...] = result

        return dequantize_constant
    if x.type.dtype.numpy.kind not in "iu":
        raise BackendError(f"op {op.label()}: dequantize takes integer levels")
    axis = q.axis
    inner = int(math.prod(shape[axis + 1 :])) if axis is not None else int(math.prod(shape))
    inner = max(1, inner)

    def dequantize_kernel(x, out):
        dequantize(x, out, scales, zero_points, inner)

    return dequantize_kernel


@kernel_builder("qadd")
def build_qadd(op: Op) -> KernelFn:
    """qadd: both operands rescaled to the output scale in fixed point, broadcasting."""
    (sa, za), (sb, zb) = (_per_tensor(op, v, "operand") for v in op.operands)
    out_scale = op.attrs["out_scale"]
    ma, mb, shift = quant.add_multipliers(sa / out_scale, sb / out_scale)
    zp, lo, hi = _clamp(op)
    plan = broadcast_plan(
        static_shape(op, op.results[0], "result"),
        static_shape(op, op.operands[0], "a"),
        static_shape(op, op.operands[1], "b"),
    )
    if plan is None:
        raise BackendError(f"op {op.label()}: this broadcast needs more than four loop axes")
    # the fixed-point pair as exact float64 ratios (int_elementwise._qadd_one)
    ra, rb = (float(np.ldexp(np.float64(m), -int(shift))) for m in (ma, mb))
    params = (*plan, float(za), float(zb), ra, rb, float(zp), float(lo), float(hi))

    def qadd_kernel(a, b, out):
        qadd(a, b, out, *params)

    return qadd_kernel


@kernel_builder("qglobal_avg_pool")
def build_qglobal_avg_pool(op: Op) -> KernelFn:
    """qglobal_avg_pool: the int sum over the spatial axes, requantized."""
    shape = static_shape(op, op.operands[0], "input")
    x_scale, x_zero = _per_tensor(op, op.operands[0], "input")
    channels_last = op.attrs["layout"] == "nhwc"
    count = int(math.prod(shape[1:3] if channels_last else shape[2:]))
    m, s = quant.mean_multiplier(x_scale, count, op.attrs["out_scale"])
    params = (count, x_zero, int(m[0]), int(s[0]), int(op.attrs["out_zero_point"]))
    if channels_last:

        def qglobal_avg_pool_nhwc(x, out):
            qmean_channels_last(x, out, *params)

        return qglobal_avg_pool_nhwc

    def qglobal_avg_pool_kernel(x, out):
        qmean(x, out, *params)

    return qglobal_avg_pool_kernel


def _rescale_table(op: Op, value: Value) -> np.ndarray | None:
    """The output level of each of ``value``'s 256 levels, or None when ``value`` is
    quantized as ``op``'s result (its levels are copied)."""
    scale, zero = _per_tensor(op, value, "operand")
    out_scale, out_zero = op.attrs["out_scale"], int(op.attrs["out_zero_point"])
    if np.float32(scale) == np.float32(out_scale) and zero == out_zero:
        return None
    levels = np.arange(quant.ACT_QMIN, quant.ACT_QMAX + 1)
    return quant.rescale(levels, scale, zero, out_scale, out_zero)


@kernel_builder("qconcat")
def build_qconcat(op: Op) -> KernelFn:
    """qconcat: blocks of columns of the result, copied or requantized through a table."""
    rows, total, blocks = concat_blocks(op)
    tables = [_rescale_table(op, v) for v in op.operands]

    def qconcat_kernel(*arrays):
        flat = arrays[-1].reshape(-1)
        for x, (cols, offset), table in zip(arrays, blocks, tables):
            if table is None:
                copy_columns(x.reshape(-1), flat, rows, cols, total, offset)
            else:
                requantize_columns(x.reshape(-1), flat, rows, cols, total, offset, table)

    return qconcat_kernel
