"""The AVX2 integer product ``int_simd.gemm_s8_fast`` against the portable ``gemm_s8``.

Every result must be bit-identical to numpy's int64 matrix product wrapped to int32 and to
``int_gemm.gemm_s8``: hypothesis draws shapes (1..300 on each axis, K mostly not a multiple
of any vector step), weight widths and value mixes that hit the extremes (-128 and 127
activations, each grid's lowest and highest weight levels). Fixed cases cover the K
chunks and N panels of large layers, int32 wrap-around, strided views, the last rows'
padded copy and the portable fallback; one test reads the kernels' assembly.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from irc.backends.numba import int_simd
from irc.backends.numba.int_gemm import gemm_s8
from irc.quant import pack, weight_levels

needs_avx2 = pytest.mark.skipif(not int_simd.HAVE_AVX2, reason="no AVX2 on this CPU / target")
MIXES = ("uniform", "min", "max", "extremes", "sparse")


def activations(rng, m: int, k: int, mix: str) -> np.ndarray:
    """int8 [m, k] activations: uniform, all -128, all 127, only ±extremes, or mostly 0."""
    if mix == "min":
        return np.full((m, k), -128, np.int8)
    if mix == "max":
        return np.full((m, k), 127, np.int8)
    if mix == "extremes":
        return rng.choice(np.array([-128, 127, -127, 0], np.int8), (m, k))
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    if mix == "sparse":
        a[rng.random((m, k)) < 0.8] = 0
    return a


def levels(rng, n: int, k: int, bits: int, mix: str) -> np.ndarray:
    """int8 weight levels of the ``bits`` grid (``irc.quant.weight_levels``: at 8 and 4
    bits every integer in [qmin, qmax], at 2 the odd -3..3): uniform, all qmin, all qmax,
    only the extremes (and 0 where the grid has it), or mostly the level nearest 0."""
    grid = weight_levels(bits).astype(np.int8)
    small = grid[np.argmin(np.abs(grid))]
    if mix == "min":
        return np.full((n, k), grid[0], np.int8)
    if mix == "max":
        return np.full((n, k), grid[-1], np.int8)
    if mix == "extremes":
        return rng.choice(np.unique([grid[0], grid[1], grid[-1], small]).astype(np.int8), (n, k))
    w = rng.choice(grid, (n, k))
    if mix == "sparse":
        w[rng.random((n, k)) < 0.8] = small
    return w


def weights(lv: np.ndarray, bits: int) -> np.ndarray:
    return lv if bits == 8 else pack(lv, bits)


def expected(a: np.ndarray, lv: np.ndarray, k: int) -> np.ndarray:
    """Σ_k a·w in int64, wrapped to int32 like the kernels' int32 accumulation."""
    return (a[:, :k].astype(np.int64) @ lv[:, :k].astype(np.int64).T).astype(np.int32)


def run(fn, a, w, bits, k, rows=None, cols=None) -> np.ndarray:
    acc = np.full((rows or a.shape[0], cols or w.shape[0]), -559038737, np.int32)  # junk
    fn(a, w, bits, k, acc)
    return acc


@needs_avx2
@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 300),
    n=st.integers(1, 300),
    k=st.integers(1, 300),
    bits=st.sampled_from([8, 4, 2]),
    a_mix=st.sampled_from(MIXES),
    w_mix=st.sampled_from(MIXES),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_matches_numpy(m, n, k, bits, a_mix, w_mix, seed):
    rng = np.random.default_rng(seed)
    a = activations(rng, m, k, a_mix)
    lv = levels(rng, n, k, bits, w_mix)
    got = run(int_simd.gemm_s8_fast, a, weights(lv, bits), bits, k)
    np.testing.assert_array_equal(got, expected(a, lv, k))


@needs_avx2
@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 40),
    n=st.integers(1, 40),
    k=st.integers(1, 200),
    bits=st.sampled_from([8, 4, 2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_matches_portable(m, n, k, bits, seed):
    rng = np.random.default_rng(seed)
    a = activations(rng, m, k, "extremes" if seed % 2 else "uniform")
    w = weights(levels(rng, n, k, bits, "uniform"), bits)
    np.testing.assert_array_equal(
        run(int_simd.gemm_s8_fast, a, w, bits, k), run(gemm_s8, a, w, bits, k)
    )


@needs_avx2
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize(
    "m, n, k",
    [
        (7, 300, 3000),  # K in chunks (scratch budget), N in panels at 8 and 4 bits
        (3, 600, 3001),  # N in panels at 2 bits too
        (1, 1000, 1280),  # single-row tiles
        (13, 5, 1),  # K = 1
        (6, 2, 16),  # exactly one 8-bit tile and step
        (1, 1, 33),  # one row, one channel: the last-rows copy is the whole matrix
    ],
)
def test_large_and_edge_shapes(bits, m, n, k):
    rng = np.random.default_rng(m * n * k + bits)
    a = activations(rng, m, k, "uniform")
    lv = levels(rng, n, k, bits, "extremes")
    got = run(int_simd.gemm_s8_fast, a, weights(lv, bits), bits, k)
    np.testing.assert_array_equal(got, expected(a, lv, k))


@needs_avx2
@pytest.mark.parametrize("bits, k", [(8, 140_000), (4, 2_400_128), (2, 8_400_000)])
def test_int32_wraps_like_portable(bits, k):
    """Sums past int32 wrap exactly as gemm_s8's (int64 total stored into int32)."""
    a = np.full((1, k), -128, np.int8)
    lv = np.full((2, k), weight_levels(bits)[0], np.int8)
    lv[1, ::2] = weight_levels(bits)[-1]
    got = run(int_simd.gemm_s8_fast, a, weights(lv, bits), bits, k)
    want = expected(a, lv, k)
    assert abs(int(a[0].astype(np.int64) @ lv[0].astype(np.int64))) > 2**31
    np.testing.assert_array_equal(got, want)


@needs_avx2
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_views_and_wider_arrays(bits):
    """k below the arrays' widths, row strides above them, a larger acc: in place."""
    rng = np.random.default_rng(bits)
    m, n, k = 9, 11, 77
    a_big = activations(rng, m + 2, k + 40, "uniform")
    lv_big = levels(rng, n + 3, k + 50, bits, "uniform")
    w_big = weights(lv_big, bits)
    a, w = a_big[1 : m + 1], w_big[2 : n + 2]  # row views: strides wider than k
    acc = np.full((m + 4, n + 5), 7, np.int32)
    int_simd.gemm_s8_fast(a, w, bits, k, acc[2 : m + 2, 1 : n + 1])
    np.testing.assert_array_equal(acc[2 : m + 2, 1 : n + 1], expected(a, lv_big[2 : n + 2], k))
    untouched = np.full_like(acc, 7)
    untouched[2 : m + 2, 1 : n + 1] = acc[2 : m + 2, 1 : n + 1]
    np.testing.assert_array_equal(acc, untouched)


@needs_avx2
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_unsupported_layouts_take_the_portable_path(bits):
    rng = np.random.default_rng(3)
    m, n, k = 5, 6, 40
    a_wide = activations(rng, m, 2 * k, "uniform")
    a = a_wide[:, ::2]  # non-unit element stride
    lv = levels(rng, n, k, bits, "uniform")
    got = run(int_simd.gemm_s8_fast, a, weights(lv, bits), bits, k)
    np.testing.assert_array_equal(got, expected(np.ascontiguousarray(a), lv, k))


def test_best_is_fast_exactly_when_avx2():
    want = int_simd.gemm_s8_fast if int_simd.HAVE_AVX2 else gemm_s8
    assert int_simd.gemm_s8_best is want
    assert int_simd.HAVE_AVX2 <= int_simd.has_avx2()


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_best_matches_portable(bits):
    """The dispatcher the backend binds gives the portable results on any CPU."""
    rng = np.random.default_rng(bits + 10)
    a = activations(rng, 8, 45, "extremes")
    w = weights(levels(rng, 7, 45, bits, "extremes"), bits)
    np.testing.assert_array_equal(
        run(int_simd.gemm_s8_best, a, w, bits, 45), run(gemm_s8, a, w, bits, 45)
    )


def test_has_avx2_follows_numba_target_and_host(monkeypatch):
    from numba.core import config

    monkeypatch.setattr(int_simd, "_host_features", lambda: {"avx2", "fma"})
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    assert int_simd.has_avx2() is int_simd._is_x86_64()
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,-avx2")
    assert not int_simd.has_avx2()
    monkeypatch.setattr(config, "CPU_FEATURES", "")  # NUMBA_CPU_NAME=generic
    assert not int_simd.has_avx2()
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(int_simd, "_host_features", lambda: {"sse2", "avx"})
    assert not int_simd.has_avx2()


@needs_avx2
def test_kernels_use_vpmaddwd_and_vpmaddubsw():
    """The inner loops are the intended instructions (compiled here uncached to read them)."""

    @njit
    def tile8(a, w, out):
        int_simd._k8_6_2(a.ctypes.data, 64, w.ctypes.data, 32, 1, 2, 0, out.ctypes.data, 8, 0, 0)

    @njit
    def tile4(a, w, out, corr):
        int_simd._k4_6(
            a.ctypes.data, 64, w.ctypes.data, 32, 1, 1, 0, out.ctypes.data, 4, corr.ctypes.data, 0
        )

    a16 = np.zeros((6, 32), np.int16)
    out = np.zeros((6, 2), np.int32)
    tile8(a16, np.zeros((2, 32), np.int8), out)
    asm8 = tile8.inspect_asm(tile8.signatures[0])
    assert "vpmaddwd" in asm8 and "vpmovsxbw" in asm8

    corr = np.zeros(6, np.int32)
    tile4(np.zeros((6, 64), np.int8), np.zeros((1, 32), np.uint8), out[:, 0].copy(), corr)
    asm4 = tile4.inspect_asm(tile4.signatures[0])
    assert "vpmaddubsw" in asm4 and "vpmaddwd" in asm4
