"""The integer lookup kernel: qlut maps every int8 level through its 256-entry table
(``int_elementwise.lookup``), in any layout (an elementwise op)."""

from __future__ import annotations

import numpy as np

from irc.backends.numba.int_elementwise import lookup
from irc.backends.numba.kernel_table import BackendError, KernelFn, kernel_builder
from irc.ir import Op


@kernel_builder("qlut")
def build_qlut(op: Op) -> KernelFn:
    """qlut: the op's table, bound once, looked up per element."""
    table = op.attrs["table"]
    if not isinstance(table, np.ndarray):
        raise BackendError(f"op {op.label()}: its table was elided")
    table = np.ascontiguousarray(table, np.int8)

    def qlut_kernel(x, out):
        lookup(x, out, table)

    return qlut_kernel
