"""Property: the channels-last float conv2d kernels agree with the numpy reference.

Random small convs of every form (depthwise with depth multiplier 1 or 2, pointwise, grouped,
general with strides, dilations and asymmetric pads) and every fused activation run through
``float_conv_nhwc.plan_conv2d_nhwc``'s kernel on NHWC data and are compared with the NCHW
reference (``irc.reference.linalg.conv2d``, bias and activation included) transposed to NHWC,
with ``test_float_kernels``' tolerance, on one or two Numba threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_draws import conv_geometry

from irc.backends.numba import float_conv_nhwc
from irc.backends.numba.float_conv_nhwc import plan_conv2d_nhwc
from irc.reference.linalg import conv2d

RTOL, ATOL = 1e-4, 1e-5  # as test_float_kernels
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


def check(x, w, b, attrs, threads=1):
    """Run the NHWC kernel on NCHW ``x`` transposed; compare with the reference."""
    expected = np.transpose(conv2d(x, w, b, **attrs), (0, 2, 3, 1))
    xh = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    out = np.full(expected.shape, np.nan, dtype=x.dtype)
    bias = b if b is not None else np.zeros(w.shape[0], x.dtype)
    hs, lo, hi = activation_args(attrs, x.dtype)
    kernel, params = plan_conv2d_nhwc(xh.shape, w.shape, out.shape, attrs["strides"],
                                      attrs["pads"], attrs["dilations"], attrs["group"], hs, lo,
                                      hi, x.dtype.itemsize)  # fmt: skip
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernel(xh, w, bias, out, *params)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


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
@given(conv_cases(), st.integers(0, 2**32 - 1), THREADS, st.booleans(), st.booleans())
def test_conv2d_nhwc(case, seed, threads, small_tiles, float64):
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
        check(x, w, b, attrs, threads)


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
def test_conv2d_nhwc_large_planes(x_shape, w_shape, attrs, threads):
    rng = np.random.default_rng(7)
    full = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}
    full.update(attrs)
    full.update({"activation": "clip", "act_min": 0.0, "act_max": 6.0})
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    b = rng.standard_normal(w_shape[:1]).astype(np.float32)
    check(x, w, b, full, min(threads, numba.config.NUMBA_NUM_THREADS))


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
def test_depthwise_nhwc_vectors(channels, side, kernel, strides, pads, dilations, act, dtype):
    """Depthwise channel counts around the micro-kernel's vectors (16 float32, 8 float64
    lanes) and blocks of two, on rows wide enough for its pixel tiles, with borders."""
    rng = np.random.default_rng(channels)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": channels}
    attrs.update(act)
    x = rng.standard_normal((2, channels) + side).astype(dtype)
    w = rng.standard_normal((channels, 1) + kernel).astype(dtype)
    b = rng.standard_normal(channels).astype(dtype)
    check(x, w, b, attrs, min(2, numba.config.NUMBA_NUM_THREADS))
