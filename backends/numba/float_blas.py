"""Float matrix products for the Numba kernels: numpy's own OpenBLAS, called from njit code.

Numba's ``np.dot`` reaches BLAS only through scipy, which irc does not depend on. numpy's
wheels ship an ILP64 OpenBLAS (``numpy.libs/libscipy_openblas64_*.so``) whose CBLAS entry
points we declare as Numba external functions under names of our own, registered with
llvmlite's symbol table at import. Calls compile to plain symbol references, so kernels that
use them still cache with ``cache=True`` (a raw function-pointer constant would not).

Operands are flat arrays plus an element offset and a leading dimension, so a kernel can
multiply a sub-block of a larger matrix (a column tile of an image, one group's rows) in
place. Without the library a plain loop computes the same product, slowly.

``gemm_flat`` runs OpenBLAS single-threaded on fixed blocks of the product, the blocks over
Numba's threads (``numba.set_num_threads``): one knob sets the threads, and the result is
the same bits at any thread count.

Numba invalidates a cached function when its own source file changes, not when a callee in
another file does: after editing this module, delete the kernel modules' ``*.nbi``/``*.nbc``
cache files (``backends/numba/__pycache__``) or callers keep the old product code.
"""

from __future__ import annotations

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange, types

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _find_openblas() -> ctypes.CDLL | None:
    """numpy's bundled ILP64 OpenBLAS, or None where this numpy build has none."""
    here = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(here, os.pardir, "numpy.libs", "libscipy_openblas64_*"),
        os.path.join(here, ".dylibs", "libscipy_openblas64_*"),
    ]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            if all(hasattr(lib, theirs) for theirs in _SYMBOLS.values()):
                return lib
    return None


# Our symbol names for the library's entry points.
_SYMBOLS = {
    "irc_cblas_sgemm": "scipy_cblas_sgemm64_",
    "irc_cblas_dgemm": "scipy_cblas_dgemm64_",
    "irc_cblas_sgemv": "scipy_cblas_sgemv64_",
    "irc_cblas_dgemv": "scipy_cblas_dgemv64_",
    "irc_blas_set_threads": "scipy_openblas_set_num_threads64_",
    "irc_blas_get_threads": "scipy_openblas_get_num_threads64_",
}
_LIB = _find_openblas()
HAVE_BLAS = _LIB is not None
if HAVE_BLAS:
    for ours, theirs in _SYMBOLS.items():
        llvm.add_symbol(ours, ctypes.cast(getattr(_LIB, theirs), ctypes.c_void_p).value)

_i32, _i64 = types.int32, types.int64


def _gemm_signature(real):
    # Pointers travel as int64: the same registers as a pointer in every 64-bit C ABI.
    return types.void(
        _i32, _i32, _i32, _i64, _i64, _i64, real, _i64, _i64, _i64, _i64, real, _i64, _i64
    )


def _gemv_signature(real):
    return types.void(_i32, _i32, _i64, _i64, real, _i64, _i64, _i64, _i64, real, _i64, _i64)


_sgemm = types.ExternalFunction("irc_cblas_sgemm", _gemm_signature(types.float32))
_dgemm = types.ExternalFunction("irc_cblas_dgemm", _gemm_signature(types.float64))
_sgemv = types.ExternalFunction("irc_cblas_sgemv", _gemv_signature(types.float32))
_dgemv = types.ExternalFunction("irc_cblas_dgemv", _gemv_signature(types.float64))


def blas_threads() -> int:
    """OpenBLAS's current thread count (numpy shares it); 1 when there is no OpenBLAS."""
    return int(getattr(_LIB, _SYMBOLS["irc_blas_get_threads"])()) if HAVE_BLAS else 1


def set_blas_threads(count: int) -> None:
    """Set OpenBLAS's thread count: kernels change it, so callers restore theirs after."""
    if HAVE_BLAS:
        getattr(_LIB, _SYMBOLS["irc_blas_set_threads"])(ctypes.c_int(int(count)))


_set_threads = types.ExternalFunction("irc_blas_set_threads", types.void(_i32))
_get_threads = types.ExternalFunction("irc_blas_get_threads", _i32())


# gemm_flat's fixed blocks of c: one per BLOCK_WORK multiply-adds, at most MAX_BLOCKS, cut
# along c's longer side in multiples of BLOCK_ALIGN (see its docstring)
BLOCK_WORK = 1 << 21
MAX_BLOCKS = 8
BLOCK_ALIGN = 16


@njit(cache=True, parallel=True)
def gemm_flat(a, a_off, lda, trans_a, b, b_off, ldb, trans_b, c, c_off, ldc, m, n, k, alpha, beta):
    """c[m×n] = alpha · op(a)[m×k] @ op(b)[k×n] + beta · c, row-major blocks of flat arrays.

    Each matrix starts at its element offset with its leading dimension (row stride);
    ``op`` transposes the stored matrix when ``trans_*`` is true. beta = 0 ignores c's
    previous contents (even nan). a, b and c share one float element type.

    The same bits at every thread count: c is cut into blocks by the product's shape
    alone (one per ``BLOCK_WORK`` multiply-adds, at most ``MAX_BLOCKS``, along its longer
    side, so the operand each block copies again is the smaller), each block one
    single-threaded OpenBLAS call, the blocks spread over Numba's threads. OpenBLAS's own
    threads split a product by their number, and its kernels round differently per split
    (up to 5e-5 on MobileNetV2's 960→160 convs), so a model's float layers, and the int8
    roundings after them, changed with ``num_threads``.
    """
    if m == 0 or n == 0:
        return
    lda, ldb, ldc = max(1, lda), max(1, ldb), max(1, ldc)  # BLAS rejects 0 even when k = 0
    if not HAVE_BLAS:
        _gemm_loops(a, a_off, lda, trans_a, b, b_off, ldb, trans_b, c, c_off, ldc, m, n, k,
                    alpha, beta)  # fmt: skip
        return
    if _get_threads() != 1:
        _set_threads(1)  # the driver restores the caller's count after the run
    by_columns = n >= m
    side = n if by_columns else m
    wanted = min(MAX_BLOCKS, max(1, m * n * max(k, 1) // BLOCK_WORK))
    size = -(-side // wanted)
    size = min(side, -(-size // BLOCK_ALIGN) * BLOCK_ALIGN)
    blocks = -(-side // size)
    for block in prange(blocks):
        first = block * size
        if by_columns:
            width = min(size, n - first)
            _product(a, a_off, lda, trans_a,
                     b, b_off + (first * ldb if trans_b else first), ldb, trans_b,
                     c, c_off + first, ldc, m, width, k, alpha, beta)  # fmt: skip
        else:
            height = min(size, m - first)
            _product(a, a_off + (first if trans_a else first * lda), lda, trans_a,
                     b, b_off, ldb, trans_b,
                     c, c_off + first * ldc, ldc, height, n, k, alpha, beta)  # fmt: skip


@njit(cache=True)
def _product(a, a_off, lda, trans_a, b, b_off, ldb, trans_b, c, c_off, ldc, m, n, k, alpha, beta):
    """One block of ``gemm_flat``: one OpenBLAS call (gemv for a single row or column)."""
    ta = _TRANS if trans_a else _NO_TRANS
    tb = _TRANS if trans_b else _NO_TRANS
    size = c.itemsize
    pa = a.ctypes.data + a_off * size
    pb = b.ctypes.data + b_off * size
    pc = c.ctypes.data + c_off * size
    # A single row or column of c is a matrix-vector product: sgemm would first copy
    # (pack) the whole matrix, which for a classifier's weights costs more than the
    # product itself.
    if m == 1 and k > 0:  # c row = op(b)ᵀ · (row of op(a))
        tv = _NO_TRANS if trans_b else _TRANS
        rows, cols = (n, k) if trans_b else (k, n)
        _gemv(size, tv, rows, cols, alpha, pb, ldb, pa, lda if trans_a else 1, beta, pc, 1)
        return
    if n == 1 and k > 0:  # c column = op(a) · (column of op(b))
        tv = _TRANS if trans_a else _NO_TRANS
        rows, cols = (k, m) if trans_a else (m, k)
        _gemv(size, tv, rows, cols, alpha, pa, lda, pb, 1 if trans_b else ldb, beta, pc, ldc)
        return
    if size == 4:
        _sgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), pa, lda, pb, ldb,
               np.float32(beta), pc, ldc)  # fmt: skip
    else:
        _dgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), pa, lda, pb, ldb,
               np.float64(beta), pc, ldc)  # fmt: skip


@njit(cache=True)
def _gemv(size, trans, rows, cols, alpha, pa, lda, px, incx, beta, py, incy):
    """y = alpha · op(A) x + beta · y by CBLAS gemv on raw pointers; A is rows×cols."""
    if size == 4:
        _sgemv(_ROW_MAJOR, trans, rows, cols, np.float32(alpha), pa, lda, px, incx,
               np.float32(beta), py, incy)  # fmt: skip
    else:
        _dgemv(_ROW_MAJOR, trans, rows, cols, np.float64(alpha), pa, lda, px, incx,
               np.float64(beta), py, incy)  # fmt: skip


@njit(cache=True)
def _gemm_loops(
    a, a_off, lda, trans_a, b, b_off, ldb, trans_b, c, c_off, ldc, m, n, k, alpha, beta
):
    """The product of ``gemm_flat`` as plain loops: the fallback without OpenBLAS."""
    row = np.zeros(n, dtype=c.dtype)
    for i in range(m):
        row[:] = 0
        for p in range(k):
            av = a[a_off + p * lda + i] if trans_a else a[a_off + i * lda + p]
            if trans_b:
                for j in range(n):
                    row[j] += av * b[b_off + j * ldb + p]
            else:
                base = b_off + p * ldb
                for j in range(n):
                    row[j] += av * b[base + j]
        start = c_off + i * ldc
        for j in range(n):
            c[start + j] = alpha * row[j] + (beta * c[start + j] if beta != 0 else 0)
