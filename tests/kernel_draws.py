"""What the kernel property tests draw alike: int8 activations and convolution geometry."""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st


def activations(rng, shape, mode) -> np.ndarray:
    """int8 levels: uniform, only -128/127 ("extremes"), or near zero ("small")."""
    if mode == "extremes":
        return rng.choice(np.array([-128, 127], np.int8), shape)
    if mode == "small":
        return rng.integers(-3, 4, shape).astype(np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


def conv_geometry(draw, pointwise: bool, max_side: int):
    """(kernel, strides, dilations, pads, height, width) of a conv: 1×1 and unpadded when
    ``pointwise``, else kernels 1-5, strides 1-3, dilations 1-2, pads 0-2 a side (an input
    plane at least as large as the dilated kernel once padded)."""
    if pointwise:
        kernel, strides, dilations, pads = (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)
    else:
        kernel = tuple(draw(st.integers(1, 5)) for _ in range(2))
        strides = tuple(draw(st.integers(1, 3)) for _ in range(2))
        dilations = tuple(draw(st.integers(1, 2)) for _ in range(2))
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    for axis, size in enumerate((height, width)):
        span = dilations[axis] * (kernel[axis] - 1) + 1
        assume(size + pads[axis] + pads[axis + 2] >= span)
    return kernel, strides, dilations, pads, height, width
