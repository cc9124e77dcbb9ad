"""The fused activation of conv2d, gemm and add, as the float kernels apply it.

Every fused activation is a clamp to [lo, hi] optionally followed by hard swish: ``none`` is
the clamp to [-inf, inf], ``relu`` to [0, inf], ``clip`` to [act_min, act_max]. So each
kernel compiles one specialisation that takes (hard_swish flag, lo, hi) at run time instead
of one per activation. The clamp keeps nan, as numpy's maximum/minimum do.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from irc.ir import Op

_SIX = np.float32(6.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


def activation_args(op: Op, dtype: np.dtype) -> tuple[bool, np.generic, np.generic]:
    """(hard_swish, lo, hi) for ``op``'s fused activation, bounds in ``dtype`` as the
    reference casts clip bounds to the element type."""
    activation = op.attrs.get("activation", "none")
    lo, hi = -np.inf, np.inf
    if activation == "relu":
        lo = 0.0
    elif activation == "clip":
        lo, hi = op.attrs["act_min"], op.attrs["act_max"]
    return activation == "hard_swish", dtype.type(lo), dtype.type(hi)


@njit(cache=True)
def hard_swish_gate(v):
    """Hard swish's gate clamp(v/6 + 1/2, 0, 1), keeping nan as np.clip does."""
    g = v / _SIX + _HALF
    g = _ZERO if g < _ZERO else g
    return _ONE if g > _ONE else g


@njit(cache=True)
def bias_activate_rows(c, c_off, ldc, rows, cols, bias, bias_off, hard_swish, lo, hi):
    """c[r, j] = act(c[r, j] + bias[bias_off + r]) for a rows×cols block of flat ``c``.

    The block starts at element ``c_off`` with row stride ``ldc``. The two loop bodies are
    spelled out so each inner loop is branch-free and vectorises.
    """
    for r in range(rows):
        row = c[c_off + r * ldc : c_off + r * ldc + cols]  # a view: indices provably >= 0
        b = bias[bias_off + r]
        if hard_swish:
            for j in range(cols):
                v = row[j] + b
                row[j] = v * hard_swish_gate(v)
        else:
            for j in range(cols):
                v = row[j] + b
                v = lo if v < lo else v
                row[j] = hi if v > hi else v


@njit(cache=True)
def activate_inplace(buf, start, count, hard_swish, lo, hi):
    """buf[start:start+count] = act(buf[start:start+count]) on a flat array.

    The clamp is np.maximum / np.minimum, not ``lo if v < lo else v``: stored back over
    its own input, that form becomes a masked store, slow on this CPU (measured 3×).
    """
    d = buf[start : start + count]
    if hard_swish:
        for j in range(count):
            v = d[j]
            d[j] = v * hard_swish_gate(v)
    else:
        for j in range(count):
            d[j] = np.minimum(np.maximum(d[j], lo), hi)
