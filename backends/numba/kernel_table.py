"""Which Numba kernel runs each op kind.

A *builder* is registered per op kind. Given an op, it binds the op's attributes once and
returns a *kernel function* called as ``fn(*operand_arrays, *result_arrays)``: operands are
C-contiguous arrays (constants, graph inputs or views into the arena), results are
preallocated arrays of the result types' exact shapes, written in place. Builders run at
compile time; kernel functions run on every call, so they do no Python-level work beyond
calling ``@njit(cache=True)`` kernels.
"""

from __future__ import annotations

from collections.abc import Callable

from irc.errors import IrcError
from irc.ir import Op
from irc.registry import import_submodules

KernelFn = Callable[..., None]
KernelBuilder = Callable[[Op], KernelFn]

KERNEL_BUILDERS: dict[str, KernelBuilder] = {}


class BackendError(IrcError):
    """The backend cannot compile an op (no kernel for its kind, dtype or form)."""


def kernel_builder(*kinds: str):
    """Register the decorated builder for op ``kinds``."""

    def register(builder: KernelBuilder) -> KernelBuilder:
        for kind in kinds:
            if kind in KERNEL_BUILDERS:
                raise ValueError(f"op kind {kind} has two kernel builders")
            KERNEL_BUILDERS[kind] = builder
        return builder

    return register


def bind_kernel(op: Op) -> KernelFn:
    """The kernel function for ``op``; BackendError naming the op when there is none."""
    _load_kernel_modules()
    try:
        builder = KERNEL_BUILDERS[op.kind]
    except KeyError:
        raise BackendError(
            f"the Numba backend has no kernel for op {op.label()}; it has kernels for "
            + ", ".join(sorted(KERNEL_BUILDERS))
        ) from None
    return builder(op)


def _load_kernel_modules() -> None:
    """Import every ``kernels_*`` module of this package once (they register builders)."""
    import_submodules("irc.backends.numba", "kernels_")
