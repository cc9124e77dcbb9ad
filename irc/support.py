"""What runs at which precision: the one table the quantize pass, the cost model and the
decision ask (so no precision is tried by compiling it and catching the failure).

    >>> precision_problem(op, "int4")     # None when layer ``op`` can run at INT4, else why
    >>> allowed_precisions(op)            # ("fp32", "fp16", "int8", "int4", "int2") or fewer
    >>> quantizable_layers(graph)         # the layers a plan may put at an integer precision
    >>> keeps_levels(op)                  # True when ``op`` runs on int8 levels unchanged

Every layer kind of the op table (trait ``layer``) runs at every precision of
``LAYER_PRECISIONS`` on the Numba backend, within the limits ``integer_form_problem``
states for the integer ones (the backend's kernels for ``qconv2d`` / ``qgemm`` take any
lowered layer those limits admit; ``tests/unit/test_cost_model.py`` compiles each).

Between integer layers, the glue runs in integers too: ``add``, ``global_avg_pool`` and
``concat`` have integer kinds (``qadd``, ``qglobal_avg_pool``, ``qconcat``), and the ops
``keeps_levels`` admits (views, max pooling, nearest resize) move or select int8 levels, so
they run on them as they are, their result at the input's scale and zero point (exact:
max commutes with a monotonic quantization, padding being the lowest level).
"""

from __future__ import annotations

import numpy as np

from irc import quant
from irc.ir import Graph, Op, Value
from irc.opdef import has_trait, kinds_with
from irc.precision import PRECISIONS, layers

LAYER_PRECISIONS = PRECISIONS  # fp32, fp16, int8, int4, int2: every layer kind, every one
INTEGER = ("int8", "int4", "int2")
FUSED_INTEGER_ACTIVATIONS = ("none", "relu", "clip")  # those the integer clamp expresses
LEVEL_SELECTING = frozenset({"max_pool"})  # each result level is one of the input's


def _constant(value: Value) -> np.ndarray | None:
    """The array a constant op with real data gives ``value``, else None."""
    op = value.producer
    if op is not None and op.kind == "constant" and isinstance(op.attrs["value"], np.ndarray):
        return op.attrs["value"]
    return None


def integer_form_problem(op: Op) -> str | None:
    """Why layer ``op`` cannot run as an integer layer; None when it can."""
    if _constant(op.operands[1]) is None:
        return "its weight is not a constant"
    if np.prod(op.operands[1].type.shape[1:]) > quant.MAX_REDUCTION:
        return f"it sums more than {quant.MAX_REDUCTION} products per output (int32 bound)"
    if op.attrs["activation"] not in FUSED_INTEGER_ACTIVATIONS:
        return f"its fused {op.attrs['activation']} has no integer form"
    if len(op.operands) > 2 and _constant(op.operands[2]) is None:
        return "its bias is not a constant"
    if op.kind == "gemm":
        a = op.attrs
        if a["trans_a"] or a["alpha"] != 1.0 or (len(op.operands) > 2 and a["beta"] != 1.0):
            return "gemm with trans_a or alpha/beta other than 1"
        if len(op.operands) > 2 and _constant(op.operands[2]).size != op.result.type.shape[1]:
            return "gemm bias is not one value per output feature"
    elif op.operands[0].type.rank != 4:
        return "not a 2-D convolution"
    return None


def precision_problem(op: Op, precision: str) -> str | None:
    """Why ``op`` cannot run at ``precision``; None when it can."""
    if not has_trait(op.kind, "layer"):
        return f"{op.kind} is not a layer (only conv2d and gemm take a precision)"
    if precision not in LAYER_PRECISIONS:
        return f"unknown precision {precision!r}"
    if precision == "fp16" and _constant(op.operands[1]) is None:
        return "its weight is not a constant"
    if precision in INTEGER:
        return integer_form_problem(op)
    return None


def allowed_precisions(op: Op) -> tuple[str, ...]:
    """The precisions layer ``op`` can run at, in ``LAYER_PRECISIONS`` order."""
    return tuple(p for p in LAYER_PRECISIONS if precision_problem(op, p) is None)


def quantizable_layers(graph: Graph) -> list[Op]:
    """The layers a plan may put at an integer precision (the rest stay float)."""
    return [op for op in layers(graph) if integer_form_problem(op) is None]


def keeps_levels(op: Op) -> bool:
    """Whether ``op`` computes the same on int8 levels as on the reals they stand for, its
    result at its input's scale and zero point: a view, max pooling, a nearest resize."""
    if op.kind == "resize":
        return op.attrs["mode"] == "nearest"
    return op.kind in LEVEL_SELECTING or op.kind in kinds_with("view")
