"""The table from op kind to its numpy semantics, filled by ``@semantics`` as modules load."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Semantics = Callable[..., "np.ndarray | list[np.ndarray]"]

REFERENCE: dict[str, Semantics] = {}
TYPED: set[str] = set()  # kinds whose semantics also read the operand types (quantized ops)


def semantics(kind: str, typed: bool = False) -> Callable[[Semantics], Semantics]:
    """Register the decorated function as the meaning of op ``kind``.

    The function takes the op's operands positionally (absent optional operands are simply
    not passed) and its normalised attributes as keyword arguments. A ``typed`` function
    also takes ``types=``, the operands' TensorTypes (quantization parameters live there).
    """

    def register(fn: Semantics) -> Semantics:
        if kind in REFERENCE:
            raise ValueError(f"op {kind} has two reference semantics")
        REFERENCE[kind] = fn
        if typed:
            TYPED.add(kind)
        return fn

    return register
