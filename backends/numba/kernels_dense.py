"""Float gemm, matmul and batchnorm kernels.

gemm and matmul are OpenBLAS products (``float_blas.gemm_flat``) written straight into the
result; gemm then adds beta·c, broadcast through element strides bound at compile time,
and applies its fused activation in the same pass. matmul follows numpy: 1-D operands are
promoted and the batch axes broadcast, each output matrix one product whose operand
matrices the builder has already picked. batchnorm is one per-channel affine pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from irc.backends.numba.float_activation import activation_args, hard_swish_gate
from irc.backends.numba.float_blas import gemm_flat
from irc.backends.numba.float_common import element_strides, float_dtype, static_shape
from irc.backends.numba.kernel_table import KernelFn, kernel_builder
from irc.ir import Op


@kernel_builder("gemm")
def build_gemm(op: Op) -> KernelFn:
    """gemm: alpha·op(a) @ op(b) + beta·c, then the fused activation (ONNX Gemm)."""
    dtype = float_dtype(op)
    a_shape = static_shape(op, op.operands[0], "a")
    b_shape = static_shape(op, op.operands[1], "b")
    m, n = static_shape(op, op.results[0], "result")
    trans_a, trans_b = bool(op.attrs["trans_a"]), bool(op.attrs["trans_b"])
    k = a_shape[0] if trans_a else a_shape[1]
    alpha, beta = dtype.type(op.attrs["alpha"]), dtype.type(op.attrs["beta"])
    hard_swish, lo, hi = activation_args(op, dtype)
    params = (a_shape[1], trans_a, b_shape[1], trans_b, m, n, k, alpha)
    if len(op.operands) == 3:
        c_shape = static_shape(op, op.operands[2], "c")
        c_row, c_col = element_strides(c_shape, (m, n))

        def gemm(a, b, c, out):
            _gemm(a, b, c, out, *params, beta, c_row, c_col, hard_swish, lo, hi)

        return gemm
    no_c = np.zeros(1, dtype)  # beta·0 with strides 0: one specialisation for both forms

    def gemm_no_c(a, b, out):
        _gemm(a, b, no_c, out, *params, dtype.type(0), 0, 0, hard_swish, lo, hi)

    return gemm_no_c


@njit(cache=True)
def _gemm(a, b, c, out, lda, trans_a, ldb, trans_b, m, n, k, alpha, beta, c_row, c_col, hs, lo,
          hi):  # fmt: skip
    """out = act(alpha·op(a) @ op(b) + beta·c[i·c_row + j·c_col]) (c read flat; a shell
    per rank of c over one 2-D kernel)."""
    _gemm_2d(a, b, c.reshape(c.size), out, lda, trans_a, ldb, trans_b, m, n, k, alpha, beta,
             c_row, c_col, hs, lo, hi)  # fmt: skip


@njit(cache=True)
def _gemm_2d(a, b, cf, out, lda, trans_a, ldb, trans_b, m, n, k, alpha, beta, c_row, c_col, hs,
             lo, hi):  # fmt: skip
    """``_gemm`` with c flat."""
    of = out.reshape(out.size)
    gemm_flat(a.reshape(a.size), 0, lda, trans_a, b.reshape(b.size), 0, ldb, trans_b,
              of, 0, n, m, n, k, alpha, 0.0)  # fmt: skip
    for i in range(m):
        row = of[i * n : (i + 1) * n]
        base = uint64(i * c_row)
        step = uint64(c_col)
        for j in range(uint64(n)):
            v = row[j] + beta * cf[base + j * step]
            if hs:
                v = v * hard_swish_gate(v)
            v = lo if v < lo else v
            row[j] = hi if v > hi else v


@kernel_builder("matmul")
def build_matmul(op: Op) -> KernelFn:
    """matmul: numpy semantics (1-D promotion, broadcast batch axes), one product each."""
    float_dtype(op)
    a_shape = static_shape(op, op.operands[0], "a")
    b_shape = static_shape(op, op.operands[1], "b")
    a2 = a_shape if len(a_shape) > 1 else (1,) + a_shape
    b2 = b_shape if len(b_shape) > 1 else b_shape + (1,)
    m, k, n = a2[-2], a2[-1], b2[-1]
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])

    def batch_index(shape):
        """Per output matrix, which of the operand's matrices it multiplies."""
        count = int(np.prod(shape, dtype=np.int64))
        ids = np.arange(count, dtype=np.int64).reshape(shape)
        return np.ascontiguousarray(np.broadcast_to(ids, batch).reshape(-1))

    a_index, b_index = batch_index(a2[:-2]), batch_index(b2[:-2])

    def matmul(a, b, out):
        _matmul(a, b, out, a_index, b_index, m, n, k)

    return matmul


@njit(cache=True)
def _matmul(a, b, out, a_index, b_index, m, n, k):
    """out[i] = a[a_index[i]] @ b[b_index[i]], all read as flat stacks of m×k, k×n, m×n."""
    af, bf, of = a.reshape(a.size), b.reshape(b.size), out.reshape(out.size)
    for i in range(a_index.size):
        gemm_flat(af, a_index[i] * m * k, k, False, bf, b_index[i] * k * n, n, False,
                  of, i * m * n, n, m, n, k, 1.0, 0.0)  # fmt: skip


@kernel_builder("batchnorm")
def build_batchnorm(op: Op) -> KernelFn:
    """batchnorm: (x - mean) · scale / sqrt(var + epsilon) + bias per channel (axis 1)."""
    dtype = float_dtype(op)
    shape = static_shape(op, op.operands[0], "input")
    images, channels = shape[0], shape[1]
    plane = int(np.prod(shape[2:], dtype=np.int64))
    planes = (images, channels, plane)
    epsilon = dtype.type(op.attrs["epsilon"])

    def batchnorm(x, scale, bias, mean, var, out):
        _batchnorm(x, scale, bias, mean, var, epsilon, out, planes)

    return batchnorm


@njit(cache=True)
def _batchnorm(x, scale, bias, mean, var, epsilon, out, planes):
    """out[i, c] = (x[i, c] - mean[c]) · (scale[c] / sqrt(var[c] + epsilon)) + bias[c], x and
    out read as ``planes`` = (images, channels, pixels) (a shell per rank)."""
    _batchnorm_planes(x.reshape(planes), scale, bias, mean, var, epsilon, out.reshape(planes))


@njit(cache=True)  # serial: batchnorm is normally folded into the conv before this
def _batchnorm_planes(xs, scale, bias, mean, var, epsilon, outs):
    """``_batchnorm`` on the 3-D views."""
    images, channels, plane = xs.shape
    for task in range(images * channels):
        i, c = task // channels, task % channels
        factor = scale[c] / np.sqrt(var[c] + epsilon)
        shift, centre = bias[c], mean[c]
        src, dst = xs[i, c], outs[i, c]
        for p in range(plane):
            dst[p] = (src[p] - centre) * factor + shift
