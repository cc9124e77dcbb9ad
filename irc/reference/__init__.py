"""The reference semantics: the one meaning of every op kind, in numpy.

``irc.opdef`` says what an op *is* (operands, attributes, type rule); this package says
what it *computes*. Every other executor (the interpreter, the backends, quantized
kernels) is checked against these functions, and these are checked against ONNX.

Each op kind maps to a function taking the op's operands positionally (absent optional
operands are simply not passed) and its normalised attributes (all present, defaults
filled, lists as tuples) as keyword arguments. Results keep their inputs' element type.

The functions live by family: ``elementwise``, ``linalg``, ``windows``, ``movement``,
``resize``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from irc.errors import TypeInferenceError
from irc.reference import (  # noqa: F401 (register)
    elementwise,
    linalg,
    movement,
    quantized,
    resize,
    windows,
)
from irc.reference.registry import REFERENCE, TYPED, semantics

__all__ = ["REFERENCE", "evaluate", "evaluate_op", "semantics"]


def evaluate(
    kind: str, inputs: list[np.ndarray], attrs: dict[str, Any], types=None
) -> list[np.ndarray]:
    """Compute op ``kind`` on ``inputs`` with normalised ``attrs``; one array per result.

    ``types`` (the operands' TensorTypes) is needed by quantized ops, whose scales and zero
    points live in the types; ``evaluate_op`` passes them.

    Annotations (``note_*`` attributes) are ignored. Raises TypeInferenceError for an op
    kind that has no reference semantics.
    """
    try:
        fn = REFERENCE[kind]
    except KeyError:
        raise TypeInferenceError(
            f"the reference has no semantics for op kind '{kind}'; known: "
            + ", ".join(sorted(REFERENCE))
        ) from None
    if any(key.startswith("note_") for key in attrs):  # annotations carry no meaning
        attrs = {k: v for k, v in attrs.items() if not k.startswith("note_")}
    if kind in TYPED:
        if types is None:
            raise TypeInferenceError(f"op kind '{kind}' needs its operand types to evaluate")
        results = fn(*inputs, **attrs, types=list(types))
    else:
        results = fn(*inputs, **attrs)
    if not isinstance(results, (list, tuple)):
        results = [results]
    # numpy ufuncs return scalars for 0-d operands; results are always arrays.
    return [np.asarray(r) for r in results]


def evaluate_op(op, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Compute ``op`` (an IR Op) on ``inputs``: its kind, attributes and operand types."""
    return evaluate(op.kind, inputs, op.attrs, [v.type for v in op.operands])
