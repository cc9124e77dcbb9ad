"""Kernel-table patches for backend tests: kernels that run the numpy reference.

With every op computed by its reference semantics, a compiled model tests the driver and
the memory plan alone. The compile cache is cleared on entry and exit, so no program bound
to patched kernels outlives the patch (or predates it).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from irc.backends.numba import kernel_table
from irc.compile import clear_cache
from irc.reference import REFERENCE, evaluate


def reference_builder(op):
    """A kernel function that computes ``op`` with the numpy reference and copies it out."""
    count, kind, attrs = len(op.operands), op.kind, op.attrs

    def run(*arrays):
        for out, result in zip(arrays[count:], evaluate(kind, list(arrays[:count]), attrs)):
            np.copyto(out, result)

    return run


@contextmanager
def patched_kernels(table: dict):
    """Run the block with ``table`` as the kernel table."""
    kernel_table._load_kernel_modules()
    saved = kernel_table.KERNEL_BUILDERS
    kernel_table.KERNEL_BUILDERS = table
    clear_cache()
    try:
        yield table
    finally:
        kernel_table.KERNEL_BUILDERS = saved
        clear_cache()


def reference_kernels():
    """Every op kind runs its reference semantics."""
    return patched_kernels({kind: reference_builder for kind in REFERENCE})


def without_kernel(kind: str):
    """The real kernel table less ``kind``."""
    kernel_table._load_kernel_modules()
    return patched_kernels({k: b for k, b in kernel_table.KERNEL_BUILDERS.items() if k != kind})


@contextmanager
def blas_threads_kept():
    """Restore OpenBLAS's thread count on exit.

    The float kernels set it to one thread (they spread fixed blocks over Numba's
    threads), and numpy shares that OpenBLAS, so without this a test's model would change
    the summation order of the reference's matrix products in every later test of the
    same worker.
    """
    from irc.backends.numba import float_blas

    lib = getattr(float_blas, "_LIB", None)  # no public handle on it yet
    if lib is None:
        yield
        return
    count = lib.scipy_openblas_get_num_threads64_()
    try:
        yield
    finally:
        lib.scipy_openblas_set_num_threads64_(count)
