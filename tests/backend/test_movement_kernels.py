"""Property tests of the movement, reduction and resize kernels against ``irc.reference``.

Each test draws shapes, attributes and element types, binds the op's Numba kernel, runs it
into a result buffer pre-filled with junk (so an element left unwritten shows), and
compares with the reference: exactly for data movement and resize, to float rounding for
the reductions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irc.backends.numba.kernel_table import bind_kernel
from irc.ir import Graph
from irc.opdef import build
from irc.reference import evaluate
from irc.types import tensor_type

EXAMPLES = settings(max_examples=30, deadline=None)
DTYPES = st.sampled_from([np.float32, np.int32, np.int8])
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def array(seed: int, shape, dtype) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)
    return (rng.standard_normal(shape) * 4).astype(dtype)


def run_both(kind: str, arrays: list[np.ndarray], attrs: dict):
    """(kernel result, reference result) of one ``kind`` op on ``arrays``."""
    g = Graph()
    inputs = [g.add_input(f"x{i}", tensor_type(a.dtype, a.shape)) for i, a in enumerate(arrays)]
    op = build(g, kind, inputs, attrs)
    out = np.full(op.result.type.shape, 77, op.result.type.dtype.numpy)
    bind_kernel(op)(*arrays, out)
    (want,) = evaluate(kind, arrays, op.attrs)
    assert out.shape == want.shape and out.dtype == want.dtype
    return out, want


@EXAMPLES
@given(shapes, st.data(), DTYPES, st.integers(0, 99))
def test_concat(shape, data, dtype, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    parts = [
        array(seed + i, shape[:axis] + (n,) + shape[axis + 1 :], dtype) for i, n in enumerate(sizes)
    ]
    np.testing.assert_array_equal(*run_both("concat", parts, {"axis": axis - len(shape)}))


@EXAMPLES
@given(shapes, st.data(), DTYPES, st.integers(0, 99))
def test_transpose_and_reshape(shape, data, dtype, seed):
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    x = array(seed, shape, dtype)
    np.testing.assert_array_equal(*run_both("transpose", [x], {"perm": perm}))
    np.testing.assert_array_equal(*run_both("reshape", [x], {"shape": (-1,)}))


@pytest.mark.parametrize(
    "shape", [(1, 3, 13, 11), (2, 5, 9, 15), (3, 70, 1, 1), (1, 1, 8, 8), (2, 2, 5, 7),
              (1, 4, 6, 6), (2, 3, 4, 4), (1, 2, 1, 40), (2, 9, 11, 70), (1, 33, 65, 5)],
)  # fmt: skip
@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2)])
@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_layout_transposes(shape, perm, dtype):
    """NCHW <-> NHWC (the channels-last pass's transposes): several 64-column blocks,
    square tiles with tails both ways where rows outnumber columns, and 2-4 byte planes
    interleaved 16 columns at a time (with a tail)."""
    x = array(7, shape, dtype)
    np.testing.assert_array_equal(*run_both("transpose", [x], {"perm": perm}))


@EXAMPLES
@given(shapes, st.data(), DTYPES, st.integers(0, 99))
def test_pad(shape, data, dtype, seed):
    mode = data.draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    begins, ends = [], []
    for n in shape:  # crops keep at least one element, which reflect and wrap need
        b = data.draw(st.integers(-(n - 1), 4))
        begins.append(b)
        ends.append(data.draw(st.integers(-(n - 1 - max(0, -b)), 4)))
    value = data.draw(st.sampled_from([0.0, 1.5, -3.0]))
    attrs = {"pads": tuple(begins + ends), "mode": mode, "value": value}
    np.testing.assert_array_equal(*run_both("pad", [array(seed, shape, dtype)], attrs))


@EXAMPLES
@given(shapes, st.data(), DTYPES, st.integers(0, 99))
def test_slice(shape, data, dtype, seed):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    bound = st.integers(-6, 6)
    attrs = {
        "starts": tuple(data.draw(bound) for _ in axes),
        "ends": tuple(data.draw(bound) for _ in axes),
        "axes": tuple(axes),
        "steps": tuple(data.draw(st.sampled_from([-3, -1, 1, 2])) for _ in axes),
    }
    np.testing.assert_array_equal(*run_both("slice", [array(seed, shape, dtype)], attrs))


@EXAMPLES
@given(shapes, st.data(), DTYPES, st.integers(0, 99))
def test_gather(shape, data, dtype, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    index_shape = data.draw(st.lists(st.integers(1, 3), max_size=2).map(tuple))
    index_type = data.draw(st.sampled_from([np.int64, np.int32]))
    indices = np.random.default_rng(seed).integers(-n, n, index_shape).astype(index_type)
    x = array(seed, shape, dtype)
    np.testing.assert_array_equal(*run_both("gather", [x, indices], {"axis": axis}))


@EXAMPLES
@given(shapes, st.data(), st.integers(0, 99))
def test_shape_and_cast(shape, data, seed):
    start, end = data.draw(st.integers(-5, 5)), data.draw(st.integers(-5, 5))
    x = array(seed, shape, np.float32)
    np.testing.assert_array_equal(*run_both("shape", [x], {"start": start, "end": end}))
    source = data.draw(st.sampled_from([np.float32, np.int32, np.bool_]))
    targets = ["f32", "i32", "i8", "bool", "f16", "i4"] + ([] if source == np.float32 else ["u8"])
    to = data.draw(st.sampled_from(targets))
    np.testing.assert_array_equal(*run_both("cast", [array(seed, shape, source)], {"to": to}))


@EXAMPLES
@given(shapes, st.data(), st.integers(0, 99))
def test_softmax_and_reduce_mean(shape, data, seed):
    x = array(seed, shape, np.float32)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    np.testing.assert_allclose(*run_both("softmax", [x], {"axis": axis}), rtol=1e-6, atol=1e-7)
    axes = tuple(data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True)))
    attrs = {"axes": axes, "keepdims": data.draw(st.integers(0, 1))}
    np.testing.assert_allclose(*run_both("reduce_mean", [x], attrs), rtol=1e-5, atol=1e-6)


@EXAMPLES
@given(
    st.lists(st.integers(1, 7), min_size=3, max_size=4).map(tuple), st.data(), st.integers(0, 99)
)
def test_lrn(shape, data, seed):
    attrs = {
        "size": data.draw(st.integers(1, 6)),
        "alpha": data.draw(st.sampled_from([1e-4, 0.01, 0.5])),
        "beta": data.draw(st.sampled_from([0.75, 1.0, 0.5])),
        "bias": data.draw(st.sampled_from([1.0, 2.0])),
    }
    got, want = run_both("lrn", [array(seed, shape, np.float32)], attrs)
    np.testing.assert_allclose(got, want, rtol=1e-6)


MODES = [
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=4, max_size=4).map(tuple), st.data(), st.integers(0, 99)
)
def test_resize_matches_the_reference_exactly(shape, data, seed):
    factors = st.sampled_from([0.5, 0.6, 1.0, 1.5, 2.0, 3.0])
    scales = (1.0, data.draw(st.sampled_from([1.0, 2.0])), data.draw(factors), data.draw(factors))
    mode = data.draw(st.sampled_from(["nearest", "linear"]))
    attrs = {
        "mode": mode,
        "scales": scales,
        "coordinate_transformation_mode": data.draw(st.sampled_from(MODES)),
        "nearest_mode": data.draw(st.sampled_from(NEAREST)),
    }
    dtype = np.float32 if mode == "linear" else data.draw(DTYPES)
    np.testing.assert_array_equal(*run_both("resize", [array(seed, shape, dtype)], attrs))
