"""GPTQ's column loop inside one lazy batch, compiled (``irc.gptq.gptq_levels``).

Within a batch of columns GPTQ rounds one column at a time: each column's targets to the
nearest level, then that column's error fed to the batch's later columns. Done with numpy
that is a handful of small array operations per column, whose call overhead outweighs
their arithmetic; here it is one loop. It computes what the numpy steps did, operation for
operation in the same float32 / float64 arithmetic (no fused multiply-add), so the levels
are the same bits (tested against the numpy loop).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def round_batch(block, target, feedback, safe, row_scale, levels, errors, start, bits,
                qmin, qmax):  # fmt: skip
    """Round columns ``start`` … ``start + B - 1`` (B = ``block.shape[1]``) of every group
    and row. ``block`` [G, B, R] float32: the batch's targets with every earlier column's
    feedback added (updated in place as columns are rounded); ``target`` [G, K, R] the
    weights in act order; ``feedback`` [G, K, K]; ``safe`` / ``row_scale`` [G, R] each
    row's scale (1 where it is 0) and scale; ``levels`` / ``errors`` [G, K, R] written for
    these columns. Levels round as ``irc.quant.round_levels`` does: ``bits`` 2, the odd
    grid {-3, -1, 1, 3} (ties up); else integers in [qmin, qmax], half to even."""
    groups, width, rows = block.shape
    for i in range(width):
        j = start + i
        for g in range(groups):
            for r in range(rows):
                x = np.float64(block[g, i, r] / safe[g, r])
                if bits == 2:
                    q = 2.0 * np.floor(x / 2.0) + 1.0
                else:
                    q = np.rint(x)
                q = min(max(q, qmin), qmax)
                level = np.float32(q)
                levels[g, j, r] = level
                errors[g, j, r] = target[g, j, r] - level * row_scale[g, r]
        for g in range(groups):
            for c in range(i + 1, width):
                f = feedback[g, start + c, j]
                for r in range(rows):
                    block[g, c, r] += f * errors[g, j, r]
