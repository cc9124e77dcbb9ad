"""Constant tensor payloads: numpy arrays, or placeholders for data elided from a dump."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irc.errors import ElidedConstantError
from irc.types import TensorType, type_of_array


@dataclass(frozen=True)
class ElidedTensor:
    """A constant whose data was not printed; it keeps only its type."""

    type: TensorType

    def require(self, where: str) -> np.ndarray:
        raise ElidedConstantError(
            f"constant {where} was dumped without its data; print with full constants "
            "(irc dump --full) to get a graph that runs"
        )


def tensor_value_type(value) -> TensorType:
    """The type of a constant payload."""
    if isinstance(value, ElidedTensor):
        return value.type
    return type_of_array(value)
