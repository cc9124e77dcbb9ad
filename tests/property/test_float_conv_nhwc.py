"""Property: the channels-last float conv2d kernels agree with the numpy reference.

Random small convs of every form (depthwise with depth multiplier 1 or 2, pointwise, grouped,
general with strides, dilations and asymmetric pads) and every fused activation run through
``float_conv_nhwc.plan_conv2d_nhwc``'s kernel on NHWC data and are compared with the NCHW
reference (``irc.reference.linalg.conv2d``, bias and activation included) transposed to NHWC,
with ``test_float_kernels``' tolerance, on one or two Numba threads: as planned (float32
products on the register-tile micro-kernel of ``float_gemm_nhwc``), with the OpenBLAS
products forced (``PATH_BLAS``), and on weights prepared once (``pack_conv2d_nhwc``, as
``kernels_conv`` binds constant weights, which is checked too). Products around the tiles'
edges (channel counts around the vector width and panels, pixel counts around a tile's
rows) take both products; the tiled kernels give the same bits on one and two threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_draws import conv_geometry

from irc.backends.numba import float_conv_nhwc
from irc.backends.numba.float_conv_nhwc import (
    PATH_AUTO,
    PATH_BLAS,
    PATH_TILES,
    pack_conv2d_nhwc,
    plan_conv2d_nhwc,
)
from irc.backends.numba.float_gemm_nhwc import LANES, MAX_VECTORS
from irc.backends.numba.kernel_table import bind_kernel
from irc.ir import Graph
from irc.opdef import build
from irc.reference.linalg import conv2d
from irc.types import DType, TensorType

RTOL, ATOL = 1e-4, 1e-5  # as test_float_kernels
SUM_ERROR = 2e-6  # float32 rounding of a sum, relative to the sum of its terms' sizes
THREADS = st.sampled_from(sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}))
ACTIVATIONS = [
    {},
    {"activation": "relu"},
    {"activation": "hard_swish"},
    {"activation": "clip", "act_min": 0.0, "act_max": 6.0},
    {"activation": "clip", "act_min": -0.3, "act_max": 0.4},
]


def activation_args(attrs, dtype):
    """(hard_swish, lo, hi) as ``float_activation.activation_args`` gives them."""
    kind = attrs.get("activation", "none")
    lo, hi = -np.inf, np.inf
    if kind == "relu":
        lo = 0.0
    elif kind == "clip":
        lo, hi = attrs["act_min"], attrs["act_max"]
    return kind == "hard_swish", dtype.type(lo), dtype.type(hi)


def check(x, w, b, attrs, threads=1, path=PATH_AUTO, packed=False):
    """Run the NHWC kernel on NCHW ``x`` transposed; compare with the reference. ``path``
    forces a product (``float_conv_nhwc.PATH_*``); ``packed``: the kernel with the weights
    prepared beforehand (``pack_conv2d_nhwc``), when it has any to prepare."""
    expected = np.transpose(conv2d(x, w, b, **attrs), (0, 2, 3, 1))
    xh = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    out = np.full(expected.shape, np.nan, dtype=x.dtype)
    bias = b if b is not None else np.zeros(w.shape[0], x.dtype)
    hs, lo, hi = activation_args(attrs, x.dtype)
    kernel, params = plan_conv2d_nhwc(xh.shape, w.shape, out.shape, attrs["strides"],
                                      attrs["pads"], attrs["dilations"], attrs["group"], hs, lo,
                                      hi, x.dtype.itemsize, path)  # fmt: skip
    prepared = pack_conv2d_nhwc(kernel, params, w, bias) if packed else None
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if prepared is not None:
            prepared[0](xh, out, *prepared[1])
        else:
            kernel(xh, w, bias, out, *params)
    finally:
        numba.set_num_threads(previous)
    assert_close_to_reference(out, expected, x, w, b, attrs)


def assert_close_to_reference(out, expected, x, w, b, attrs):
    """``out`` equals the NHWC ``expected`` up to RTOL / ATOL plus float32 summation error:
    SUM_ERROR times Σ |x·w| + |b| of the output (the sum's terms can cancel, and the kernels
    add them in another order than the reference)."""
    conv = {k: v for k, v in attrs.items() if k not in ("activation", "act_min", "act_max")}
    magnitude = conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), **conv)
    allowed = ATOL + RTOL * np.abs(expected) + SUM_ERROR * np.transpose(magnitude, (0, 2, 3, 1))
    error = np.abs(out.astype(np.float64) - expected)
    bad = ~(error <= allowed)  # NaN (an output never written) is bad too
    assert not bad.any(), (
        f"{int(bad.sum())} of {bad.size} outputs differ: at {np.argwhere(bad)[0].tolist()} "
        f"{out[bad][0]!r} against {expected[bad][0]!r} (allowed {allowed[bad][0]:.3g})"
    )


@st.composite
def conv_cases(draw):
    form = draw(st.sampled_from(["general", "grouped", "depthwise", "pointwise", "stem"]))
    if form == "depthwise":
        group = draw(st.integers(1, 40))
        cin_g, cout = 1, group * draw(st.integers(1, 2))
    elif form == "grouped":
        group = draw(st.integers(2, 4))
        cin_g, cout = draw(st.integers(1, 6)), group * draw(st.integers(1, 6))
    elif form == "stem":
        group, cin_g, cout = 1, 3, draw(st.integers(1, 40))
    else:
        group = draw(st.sampled_from([1, 2])) if form == "pointwise" else 1
        cin_g, cout = draw(st.integers(1, 40)) // group + 1, group * draw(st.integers(1, 20))
    geometry = conv_geometry(draw, form == "pointwise", 12)
    kernel, strides, dilations, pads, height, width = geometry
    batch = draw(st.integers(1, 2))
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    attrs.update(draw(st.sampled_from(ACTIVATIONS)))
    x_shape = (batch, cin_g * group, height, width)
    return x_shape, (cout, cin_g) + kernel, attrs, draw(st.booleans())


@settings(max_examples=120, deadline=None)
@given(conv_cases(), st.integers(0, 2**32 - 1), THREADS, st.booleans(), st.booleans(),
       st.sampled_from(["auto", "blas", "packed"]))  # fmt: skip
def test_conv2d_nhwc(case, seed, threads, small_tiles, float64, how):
    """Every form, dtype and activation; the planned kernel (the register tiles for
    float32 products), the OpenBLAS products forced, or the kernel on prepared weights."""
    x_shape, w_shape, attrs, with_bias = case
    rng = np.random.default_rng(seed)
    dtype = np.float64 if float64 else np.float32
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[:1]).astype(dtype) if with_bias else None
    with pytest.MonkeyPatch.context() as patch:
        if small_tiles:  # a few output pixels per product tile
            patch.setattr(float_conv_nhwc, "TILE_BYTES", 64)
            patch.setattr(float_conv_nhwc, "TILE_MIN_ROWS", 1)
            patch.setattr(float_conv_nhwc, "TILES_ROWS", 5)
            patch.setattr(float_conv_nhwc, "TILES_SCRATCH", 64)
        path = PATH_BLAS if how == "blas" else PATH_AUTO
        check(x, w, b, attrs, threads, path, how == "packed")


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        # depthwise over many segments and channel blocks (64, 16 and a tail), flat and not
        ((1, 100, 70, 70), (100, 1, 3, 3), {"group": 100, "pads": (1, 1, 1, 1)}),
        ((1, 100, 70, 70), (100, 1, 3, 3), {"group": 100, "strides": (2, 2), "pads": (0, 0, 1, 1)}),
        ((2, 3, 71, 66), (6, 1, 5, 5), {"group": 3, "strides": (2, 2), "pads": (2, 1, 2, 2)}),
        ((1, 16, 96, 96), (24, 16, 1, 1), {}),  # several product tiles
        ((1, 3, 100, 90), (8, 3, 3, 3), {"strides": (2, 2), "pads": (0, 0, 1, 1)}),
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("packed", [False, True])
def test_conv2d_nhwc_large_planes(x_shape, w_shape, attrs, threads, packed):
    rng = np.random.default_rng(7)
    full = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}
    full.update(attrs)
    full.update({"activation": "clip", "act_min": 0.0, "act_max": 6.0})
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    b = rng.standard_normal(w_shape[:1]).astype(np.float32)
    check(x, w, b, full, min(threads, numba.config.NUMBA_NUM_THREADS), packed=packed)


@pytest.mark.parametrize("channels", [8, 15, 16, 17, 33, 48, 70])
@pytest.mark.parametrize(
    "side, kernel, strides, pads, dilations",
    [
        ((5, 21), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # 19 interior pixels: 8, 8, 1, 1, 1
        ((9, 30), (3, 3), (2, 2), (0, 1, 1, 0), (1, 1)),  # stride 2, tiles of 8 and 4
        ((7, 40), (5, 5), (2, 1), (2, 2, 2, 2), (1, 2)),  # dilated 5×5
        ((4, 13), (3, 2), (1, 1), (0, 0, 0, 0), (1, 1)),  # no padding: every pixel interior
    ],
)
@pytest.mark.parametrize("act", ACTIVATIONS[1:3] + ACTIVATIONS[4:])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("packed", [False, True])
def test_depthwise_nhwc_vectors(channels, side, kernel, strides, pads, dilations, act, dtype,
                                packed):  # fmt: skip
    """Depthwise channel counts around the micro-kernel's vectors (16 float32, 8 float64
    lanes) and blocks of two, on rows wide enough for its pixel tiles, with borders."""
    rng = np.random.default_rng(channels)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": channels}
    attrs.update(act)
    x = rng.standard_normal((2, channels) + side).astype(dtype)
    w = rng.standard_normal((channels, 1) + kernel).astype(dtype)
    b = rng.standard_normal(channels).astype(dtype)
    check(x, w, b, attrs, min(2, numba.config.NUMBA_NUM_THREADS), packed=packed)


@st.composite
def tile_cases(draw):
    """Products around the register tiles: output channels per group from 1 to a few
    panels (whole vectors, a partial last vector), pixel counts below, at and past a
    tile's rows, K from 1; pointwise or general (strided, padded), one or two groups."""
    group = draw(st.sampled_from([1, 1, 2]))
    og = draw(st.one_of(st.integers(1, 2 * LANES + 1),
                        st.sampled_from([LANES * v + d for v in (3, 4, 5, 6, 9)
                                         for d in (-1, 0, 1)])))  # fmt: skip
    cin_g = draw(st.integers(1, 40))
    pointwise = draw(st.booleans())
    if pointwise:
        kernel, strides, pads = (1, 1), (1, 1), (0, 0, 0, 0)
    else:
        kernel = draw(st.sampled_from([(1, 1), (3, 3), (2, 3)]))
        strides = draw(st.sampled_from([(1, 1), (2, 2)]))
        pads = draw(st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0)]))
    height, width = draw(st.integers(kernel[0], 9)), draw(st.integers(kernel[1], 9))
    attrs = {"strides": strides, "pads": pads, "dilations": (1, 1), "group": group}
    attrs.update(draw(st.sampled_from(ACTIVATIONS)))
    x_shape = (draw(st.integers(1, 2)), cin_g * group, height, width)
    return x_shape, (og * group, cin_g) + kernel, attrs


@settings(max_examples=80, deadline=None)
@given(tile_cases(), st.integers(0, 2**32 - 1), THREADS, st.booleans(), st.booleans())
def test_conv2d_nhwc_tiles(case, seed, threads, packed, small_tiles):
    """The register-tile products (``PATH_TILES``, per call or on packed weights) agree with
    the reference, and with the OpenBLAS products on the same shapes."""
    x_shape, w_shape, attrs = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[:1]).astype(np.float32)
    with pytest.MonkeyPatch.context() as patch:
        if small_tiles:
            patch.setattr(float_conv_nhwc, "TILES_ROWS", 7)
            patch.setattr(float_conv_nhwc, "TILES_SCRATCH", 64)
        check(x, w, b, attrs, threads, PATH_TILES, packed)
        check(x, w, b, attrs, threads, PATH_BLAS)


@pytest.mark.parametrize("side, k, o", [(7, 960, 320), (14, 64, 384), (12, 24, 144), (9, 144, 24),
                                        (5, 16, LANES * MAX_VECTORS * 2 + 3)])  # fmt: skip
@pytest.mark.parametrize("packed", [False, True])
def test_pointwise_tiles_shapes(side, k, o, packed):
    """MobileNet-like pointwise shapes (large K, many panels, partial vectors) through both
    products, with relu6."""
    rng = np.random.default_rng(o)
    attrs = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}
    attrs.update({"activation": "clip", "act_min": 0.0, "act_max": 6.0})
    x = rng.standard_normal((1, k, side, side)).astype(np.float32)
    w = (rng.standard_normal((o, k, 1, 1)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    for path in (PATH_TILES, PATH_BLAS):
        check(x, w, b, attrs, min(2, numba.config.NUMBA_NUM_THREADS), path, packed)


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((1, 24, 9, 9), (40, 24, 1, 1), {}),  # pointwise: packed table at bind time
        ((1, 3, 11, 11), (16, 3, 3, 3), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),  # stem
        ((1, 20, 8, 8), (20, 1, 3, 3), {"group": 20, "pads": (1, 1, 1, 1)}),  # depthwise
        ((1, 4, 6, 6), (8, 1, 3, 3), {"group": 4, "pads": (1, 1, 1, 1)}),  # multiplier 2
    ],
)
@pytest.mark.parametrize("operands", ["constants", "no bias", "inputs"])
def test_build_conv2d_nhwc(x_shape, w_shape, attrs, operands):
    """``kernels_conv.build_conv2d`` on a ``layout=nhwc`` conv2d: with constant weights
    (prepared at bind time, with or without bias) and with weights as graph inputs (per
    call), against the reference."""
    rng = np.random.default_rng(3)
    full = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}
    full.update(attrs)
    act = {"activation": "hard_swish"}
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = None if operands == "no bias" else rng.standard_normal(w_shape[:1]).astype(np.float32)
    xh = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    graph = Graph()
    xv = graph.add_input("x", TensorType(DType.F32, xh.shape))
    if operands == "inputs":
        wv = graph.add_input("w", TensorType(DType.F32, w.shape))
        bv = graph.add_input("b", TensorType(DType.F32, b.shape))
        args = [w, b]
    else:
        wv = build(graph, "constant", [], {"value": w}).result
        bv = None if b is None else build(graph, "constant", [], {"value": b}).result
        args = [w] if b is None else [w, b]
    operand_list = [xv, wv] + ([] if bv is None else [bv])
    op = build(graph, "conv2d", operand_list, {**full, **act, "layout": "nhwc"})
    kernel = bind_kernel(op)
    multiplier = full["group"] == x_shape[1] and w_shape[0] != x_shape[1]  # nothing to pack
    assert ("packed" in kernel.__code__.co_freevars) == (operands != "inputs" and not multiplier)
    out = np.full(op.result.type.shape, np.nan, np.float32)
    kernel(xh, *args, out)
    expected = np.transpose(conv2d(x, w, b, **full, **act), (0, 2, 3, 1))
    assert_close_to_reference(out, expected, x, w, b, {**full, **act})


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((1, 40, 30, 30), (72, 40, 1, 1), {}),
        ((1, 3, 41, 41), (32, 3, 3, 3), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),
        ((1, 8, 20, 20), (12, 4, 3, 3), {"group": 2, "pads": (1, 1, 1, 1)}),
        ((1, 48, 17, 17), (48, 1, 5, 5), {"group": 48, "pads": (2, 2, 2, 2)}),
    ],
)
def test_conv2d_nhwc_threads_bitwise(x_shape, w_shape, attrs):
    """The register-tile and depthwise kernels give the same bits on one and two threads."""
    rng = np.random.default_rng(11)
    full = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}
    full.update(attrs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[:1]).astype(np.float32)
    xh = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    out_shape = np.transpose(conv2d(x, w, b, **full), (0, 2, 3, 1)).shape
    kernel, params = plan_conv2d_nhwc(xh.shape, w.shape, out_shape, full["strides"],
                                      full["pads"], full["dilations"], full["group"], False,
                                      np.float32(-np.inf), np.float32(np.inf))  # fmt: skip
    packed, args = pack_conv2d_nhwc(kernel, params, w, b)
    results = []
    previous = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            out = np.full(out_shape, np.nan, np.float32)
            packed(xh, out, *args)
            results.append(out)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[-1])
