"""Comparison and selection kernels: equal (a bool result) and where (a bool condition).

Both take any element type. Broadcasting is solved in the builder, as for the float binary
ops: each operand's element strides against the result shape, size-1 axes dropped and runs
merged, so the kernels walk at most a 4-D loop nest over flat arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.backends.numba.float_common import element_strides, static_shape
from irc.backends.numba.kernel_table import BackendError, KernelFn, kernel_builder
from irc.ir import Op

_RANK = 4  # loop nest depth


def nary_plan(out_shape, shapes) -> tuple | None:
    """(shape, strides per operand as a (n, _RANK) array) walking the C-contiguous result;
    None when the broadcast needs more than _RANK axes after merging."""
    strides = [element_strides(s, out_shape) for s in shapes]
    axes = [(d, [st[a] for st in strides]) for a, d in enumerate(out_shape) if d != 1]
    merged: list[tuple[int, list[int]]] = []
    for d, st in axes:
        if merged and all(p == s * d for p, s in zip(merged[-1][1], st)):
            merged[-1] = (merged[-1][0] * d, st)
            continue
        merged.append((d, st))
    if len(merged) > _RANK:
        return None
    merged = [(1, [0] * len(shapes))] * (_RANK - len(merged)) + merged
    shape = np.array([d for d, _ in merged], np.int64)
    table = np.array([[st[k] for _, st in merged] for k in range(len(shapes))], np.int64)
    return shape, table


def _plan_for(op: Op):
    """The op's broadcast plan; BackendError when it needs too many loop axes."""
    out_shape = static_shape(op, op.results[0], "result")
    shapes = [static_shape(op, v, "operand") for v in op.operands]
    plan = nary_plan(out_shape, shapes)
    if plan is None:
        raise BackendError(f"op {op.label()}: this broadcast needs more than {_RANK} loop axes")
    return plan


@njit(cache=True)
def equal_kernel(af, bf, of, shape, st):
    """of = af == bf over the broadcast plan (flat arrays)."""
    o = 0
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                ao = i0 * st[0, 0] + i1 * st[0, 1] + i2 * st[0, 2]
                bo = i0 * st[1, 0] + i1 * st[1, 1] + i2 * st[1, 2]
                for i3 in range(shape[3]):
                    of[o] = af[ao + i3 * st[0, 3]] == bf[bo + i3 * st[1, 3]]
                    o += 1


@njit(cache=True)
def where_kernel(cf, xf, yf, of, shape, st):
    """of = xf if cf else yf over the broadcast plan (flat arrays)."""
    o = 0
    for i0 in range(shape[0]):
        for i1 in range(shape[1]):
            for i2 in range(shape[2]):
                co = i0 * st[0, 0] + i1 * st[0, 1] + i2 * st[0, 2]
                xo = i0 * st[1, 0] + i1 * st[1, 1] + i2 * st[1, 2]
                yo = i0 * st[2, 0] + i1 * st[2, 1] + i2 * st[2, 2]
                for i3 in range(shape[3]):
                    if cf[co + i3 * st[0, 3]]:
                        of[o] = xf[xo + i3 * st[1, 3]]
                    else:
                        of[o] = yf[yo + i3 * st[2, 3]]
                    o += 1


@kernel_builder("equal")
def build_equal(op: Op) -> KernelFn:
    """a == b with numpy broadcasting, any element type, a bool result."""
    shape, strides = _plan_for(op)

    def equal(a, b, out):
        equal_kernel(a.reshape(-1), b.reshape(-1), out.reshape(-1), shape, strides)

    return equal


@kernel_builder("where")
def build_where(op: Op) -> KernelFn:
    """x where cond else y, all three broadcast, any element type."""
    shape, strides = _plan_for(op)

    def where(cond, x, y, out):
        flat = (cond.reshape(-1), x.reshape(-1), y.reshape(-1), out.reshape(-1))
        where_kernel(*flat, shape, strides)

    return where
