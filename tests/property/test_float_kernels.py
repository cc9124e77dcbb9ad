"""Property: the Numba float kernels agree with the numpy reference (allclose).

Each kernel family draws random shapes and attributes, builds the op on a throwaway graph
(so attributes are normalised and the result type inferred exactly as in a model), runs
the bound kernel into a preallocated result and compares with ``irc.reference.evaluate``.
Examples run on one or two Numba threads. Product tiles are sometimes shrunk so that small
shapes cross tile boundaries too.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from irc.backends.numba import float_blas, kernels_conv
from irc.backends.numba.kernel_table import BackendError, bind_kernel
from irc.errors import TypeInferenceError
from irc.ir import Graph
from irc.opdef import build
from irc.ops.shape_rules import check_pool_pads
from irc.reference import evaluate
from irc.types import DType, TensorType

RTOL, ATOL = 1e-4, 1e-5
THREADS = st.sampled_from(sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}))
ACTIVATION_LIST = [
    {},
    {"activation": "relu"},
    {"activation": "hard_swish"},
    {"activation": "clip", "act_min": 0.0, "act_max": 6.0},
    {"activation": "clip", "act_min": -0.3, "act_max": 0.4},
]
ACTIVATIONS = st.sampled_from(ACTIVATION_LIST)


def make_op(kind, shapes, attrs, dtype=np.float32):
    graph = Graph()
    operands = [
        graph.add_input(f"in{i}", TensorType(DType.from_numpy(dtype), shape))
        for i, shape in enumerate(shapes)
    ]
    return build(graph, kind, operands, attrs)


def check(kind, arrays, attrs=None, threads=1):
    """Run ``kind`` through its Numba kernel and the reference; assert they agree."""
    op = make_op(kind, [a.shape for a in arrays], attrs or {}, arrays[0].dtype)
    kernel = bind_kernel(op)
    dtype = op.result.type.dtype.numpy
    out = np.full(op.result.type.shape, np.nan if dtype.kind == "f" else 77, dtype=dtype)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernel(*arrays, out)
    finally:
        numba.set_num_threads(previous)
    expected = evaluate(kind, arrays, op.attrs)[0]
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL, equal_nan=True)


def normal(rng, shape, dtype=np.float32):
    return np.asarray(rng.standard_normal(shape), dtype=dtype)  # 0-d stays an array


seeds = st.integers(0, 2**32 - 1)


@st.composite
def conv_cases(draw):
    form = draw(st.sampled_from(["general", "grouped", "depthwise", "pointwise"]))
    group = draw(st.integers(2, 3)) if form in ("grouped", "depthwise") else 1
    cin_g = 1 if form == "depthwise" else draw(st.integers(1, 4))
    cout = group * draw(st.integers(1, 3))
    if form == "pointwise":
        kernel, strides, dilations, pads = (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)
        group = draw(st.sampled_from([1, 2]))
        cout = group * draw(st.integers(1, 4))
    else:
        kernel = tuple(draw(st.integers(1, 5)) for _ in range(2))
        strides = tuple(draw(st.integers(1, 3)) for _ in range(2))
        dilations = tuple(draw(st.integers(1, 2)) for _ in range(2))
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    height, width = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    for axis, size in enumerate((height, width)):
        span = dilations[axis] * (kernel[axis] - 1) + 1
        assume(size + pads[axis] + pads[axis + 2] >= span)
    batch = draw(st.sampled_from([1, 3]))
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    attrs.update(draw(ACTIVATIONS))
    x_shape = (batch, cin_g * group, height, width)
    return x_shape, (cout, cin_g) + kernel, attrs, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(conv_cases(), seeds, THREADS, st.booleans())
def test_conv2d(case, seed, threads, small_tiles):
    x_shape, w_shape, attrs, with_bias = case
    rng = np.random.default_rng(seed)
    arrays = [normal(rng, x_shape), normal(rng, w_shape)]
    if with_bias:
        arrays.append(normal(rng, w_shape[:1]))
    with pytest.MonkeyPatch.context() as patch:
        if small_tiles:  # a few output rows per product tile
            patch.setattr(kernels_conv, "_TILE_BYTES", 64)
            patch.setattr(kernels_conv, "_TILE_MIN_COLUMNS", 1)
        check("conv2d", arrays, attrs, threads)


@pytest.mark.parametrize(
    "x_shape, w_shape, attrs",
    [
        ((1, 16, 96, 96), (24, 16, 1, 1), {"activation": "relu"}),  # several product tiles
        ((1, 3, 100, 90), (8, 3, 3, 3), {"strides": (2, 2), "pads": (0, 0, 1, 1)}),
        # depthwise over many accumulator blocks
        (
            (1, 4, 70, 70),
            (4, 1, 3, 3),
            {"group": 4, "pads": (1, 1, 1, 1), "activation": "hard_swish"},
        ),
        ((2, 3, 71, 66), (6, 1, 5, 5), {"group": 3, "strides": (2, 2), "pads": (2, 1, 2, 2)}),
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_conv2d_large_planes(x_shape, w_shape, attrs, threads):
    rng = np.random.default_rng(7)
    arrays = [normal(rng, x_shape), normal(rng, w_shape) * 0.3, normal(rng, w_shape[:1])]
    check("conv2d", arrays, attrs, min(threads, numba.config.NUMBA_NUM_THREADS))


@st.composite
def gemm_cases(draw):
    m, n, k = (draw(st.integers(1, 7)) for _ in range(3))
    trans_a, trans_b = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    a_shape = (k, m) if trans_a else (m, k)
    b_shape = (n, k) if trans_b else (k, n)
    c_shape = draw(st.sampled_from([None, (), (1,), (n,), (1, n), (m, 1), (m, n)]))
    attrs = {"trans_a": trans_a, "trans_b": trans_b}
    attrs["alpha"] = draw(st.sampled_from([1.0, 0.5, -2.0]))
    attrs["beta"] = draw(st.sampled_from([1.0, 0.0, 3.0]))
    attrs.update(draw(ACTIVATIONS))
    return [a_shape, b_shape] + ([c_shape] if c_shape is not None else []), attrs


@settings(max_examples=30, deadline=None)
@given(gemm_cases(), seeds)
def test_gemm(case, seed):
    shapes, attrs = case
    rng = np.random.default_rng(seed)
    check("gemm", [normal(rng, s) for s in shapes], attrs)


@st.composite
def matmul_shapes(draw):
    m, n, k = (draw(st.integers(1, 5)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))) :]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))) :]
    a = (k,) if draw(st.integers(0, 4)) == 0 else tuple(a_batch) + (m, k)
    b = (k,) if draw(st.integers(0, 4)) == 0 else tuple(b_batch) + (k, n)
    return a, b


@settings(max_examples=30, deadline=None)
@given(matmul_shapes(), seeds)
def test_matmul(shapes, seed):
    rng = np.random.default_rng(seed)
    check("matmul", [normal(rng, s) for s in shapes])


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=5), seeds, THREADS)
def test_batchnorm(shape, seed, threads):
    rng = np.random.default_rng(seed)
    channels = (shape[1],)
    params = [normal(rng, channels), normal(rng, channels), normal(rng, channels)]
    var = np.abs(normal(rng, channels)) + 0.1
    attrs = {"epsilon": 1e-3}
    check("batchnorm", [normal(rng, tuple(shape))] + params + [var], attrs, threads)


@st.composite
def pool_cases(draw):
    kind = draw(st.sampled_from(["max_pool", "avg_pool"]))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    attrs = {
        "kernel": kernel,
        "strides": tuple(draw(st.integers(1, 3)) for _ in range(2)),
        "dilations": tuple(draw(st.integers(1, 2)) for _ in range(2)),
        # ONNX requires each pad to be smaller than the kernel
        "pads": tuple(draw(st.integers(0, kernel[i % 2] - 1)) for i in range(4)),
        "ceil_mode": draw(st.integers(0, 1)),
    }
    if kind == "avg_pool":
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    shape = (draw(st.sampled_from([1, 3])), draw(st.integers(1, 3)))
    shape += (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    for axis in range(2):
        span = attrs["dilations"][axis] * (kernel[axis] - 1) + 1
        assume(shape[2 + axis] + attrs["pads"][axis] + attrs["pads"][axis + 2] >= span)
    try:  # the op table refuses a window of padding only (max -inf, mean 0/0)
        check_pool_pads(shape[2:], kernel, attrs["strides"], attrs["pads"], attrs["dilations"],
                        attrs["ceil_mode"], kind)  # fmt: skip
    except TypeInferenceError:
        assume(False)
    dtype = np.int8 if kind == "max_pool" and draw(st.booleans()) else np.float32
    return kind, shape, attrs, dtype


@settings(max_examples=40, deadline=None)
@given(pool_cases(), seeds, THREADS)
def test_pool(case, seed, threads):
    kind, shape, attrs, dtype = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, shape).astype(dtype) if dtype == np.int8 else normal(rng, shape)
    check(kind, [x], attrs, threads)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(["global_avg_pool", "global_max_pool"]),
    st.lists(st.integers(1, 6), min_size=3, max_size=5),
    seeds,
    THREADS,
)
def test_global_pool(kind, shape, seed, threads):
    check(kind, [normal(np.random.default_rng(seed), tuple(shape))], threads=threads)


UNARY = {
    "relu": st.just({}),
    "sigmoid": st.just({}),
    "tanh": st.just({}),
    "hard_swish": st.just({}),
    "leaky_relu": st.fixed_dictionaries({"alpha": st.sampled_from([0.01, 0.2, -1.5])}),
    "hard_sigmoid": st.fixed_dictionaries(
        {"alpha": st.sampled_from([0.2, 1 / 6, -0.7]), "beta": st.sampled_from([0.5, 0.1])}
    ),
    "clip": st.sampled_from([{}, {"min": -0.5}, {"max": 0.3}, {"min": 0.0, "max": 6.0}]),
}


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(sorted(UNARY)).flatmap(lambda k: st.tuples(st.just(k), UNARY[k])),
    st.lists(st.integers(1, 6), max_size=4),
    seeds,
)
def test_unary(kind_attrs, shape, seed):
    kind, attrs = kind_attrs
    x = np.asarray(normal(np.random.default_rng(seed), tuple(shape)) * 4)  # reaches clamps
    check(kind, [x], attrs)


@st.composite
def broadcast_pairs(draw):
    out = draw(st.lists(st.integers(1, 4), max_size=4))

    def operand():
        dims = [d if draw(st.booleans()) else 1 for d in out]
        return tuple(dims[draw(st.integers(0, len(dims))) :])

    a, b = operand(), operand()
    if draw(st.booleans()):
        a = tuple(out)  # the common case: one full operand
    return a, b


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["add", "sub", "mul", "div"]), broadcast_pairs(), ACTIVATIONS, seeds)
def test_binary(kind, shapes, activation, seed):
    rng = np.random.default_rng(seed)
    a, b = (normal(rng, s) for s in shapes)
    if kind == "div":  # keep quotients of a sane size
        b = np.where(b < 0, b - 0.5, b + 0.5).astype(np.float32)
    try:
        check(kind, [a, b], activation if kind == "add" else {})
    except BackendError as e:  # a broadcast too tangled for the 4-axis loop nest
        assert "loop axes" in str(e)
        assume(False)


@pytest.mark.parametrize("activation", ACTIVATION_LIST)
@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (3, 1, 1))])
def test_add_fused_activation(shapes, activation):
    rng = np.random.default_rng(3)
    check("add", [normal(rng, s) * 4 for s in shapes], activation)


# c wide (two column blocks, ragged), tall (two row blocks), at the block cap, one row or
# column (gemv), and the two late MobileNetV2 products whose bits OpenBLAS's own threads
# used to change (m·n·k against float_blas.BLOCK_WORK = 2^21 sets the blocks)
BLOCKED_SHAPES = [(8, 64, 9000), (2000, 64, 40), (64, 576, 3136), (1, 1280, 1000),
                  (1000, 1280, 1), (160, 960, 49), (1280, 320, 49)]  # fmt: skip


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
@pytest.mark.parametrize("m, k, n", BLOCKED_SHAPES)
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, True)])
def test_gemm_flat_blocks_give_the_same_bits_at_every_thread_count(m, k, n, trans_a, trans_b):
    """``gemm_flat`` on sub-blocks of larger arrays (offsets, leading dimensions, beta):
    within float32 rounding of the float64 product, and the same bits on 1 and 2 threads."""
    rng = np.random.default_rng(m + n)
    a = normal(rng, (k, m + 2) if trans_a else (m, k + 2))  # padded rows: lda ≠ width
    b = normal(rng, (n, k + 1) if trans_b else (k, n + 1))
    c0 = normal(rng, (m, n + 3))
    op_a = (a[:, 1 : m + 1].T if trans_a else a[:, 1 : k + 1]).astype(np.float64)
    op_b = (b[:, :k].T if trans_b else b[:, :n]).astype(np.float64)
    want = 0.5 * op_a @ op_b + 2.0 * c0[:, 2 : n + 2]
    got = {}
    previous = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            c = c0.copy()
            float_blas.gemm_flat(a.reshape(-1), 1, a.shape[1], trans_a, b.reshape(-1), 0,
                                 b.shape[1], trans_b, c.reshape(-1), 2, c.shape[1], m, n, k,
                                 0.5, 2.0)  # fmt: skip
            got[threads] = c
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_allclose(got[1][:, 2 : n + 2], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_array_equal(got[1][:, :2], c0[:, :2])  # outside the block: untouched
    np.testing.assert_array_equal(got[1][:, n + 2 :], c0[:, n + 2 :])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 6), st.booleans(), st.booleans(), seeds)
def test_gemm_fallback_loops(m, n, k, trans_a, trans_b, seed):
    """The plain-loop product used where numpy ships no OpenBLAS."""
    rng = np.random.default_rng(seed)
    a = normal(rng, (k, m) if trans_a else (m, k))
    b = normal(rng, (n, k) if trans_b else (k, n))
    c = normal(rng, (m, n))
    expected = 2.0 * ((a.T if trans_a else a) @ (b.T if trans_b else b)) + 0.5 * c
    flat = c.reshape(-1)
    float_blas._gemm_loops(a.reshape(-1), 0, a.shape[1], trans_a, b.reshape(-1), 0, b.shape[1],
                           trans_b, flat, 0, n, m, n, k, 2.0, 0.5)  # fmt: skip
    np.testing.assert_allclose(c, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "kind, shapes, attrs, dtype, message",
    [
        ("conv2d", [(1, 2, 4, 4), (2, 2, 1, 1)], {}, np.float16, "f32 or f64"),
        ("add", [(2,), (2,)], {}, np.int32, "f32 or f64"),
        (
            "max_pool",
            [(1, 1, 4, 4, 4)],
            {"kernel": (2, 2, 2), "strides": (1,) * 3, "pads": (0,) * 6, "dilations": (1,) * 3},
            np.float32,
            "2-D",
        ),
        ("add", [(2, 1, 2, 1, 2, 1), (1, 2, 1, 2, 1, 2)], {}, np.float32, "loop axes"),
    ],
)
def test_unsupported_forms_name_the_op(kind, shapes, attrs, dtype, message):
    op = make_op(kind, shapes, attrs, dtype)
    op.name = "node_7"
    with pytest.raises(BackendError, match=f"'node_7' \\({kind}\\).*{message}"):
        bind_kernel(op)
