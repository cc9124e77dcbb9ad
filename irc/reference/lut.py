"""Lookup tables of the smooth activations that run on int8 levels (``qlut``).

An int8 value has 256 levels, so any unary function of it is one table: entry ``q + 128``
holds the output level of input level ``q``, the activation computed in float32 on the
level's real value (``irc.quant.dequantize``) by this package's float semantics and
quantized to the output's scale and zero point (``irc.quant.quantize``, half to even).
The reference, the kernels and the ONNX export (DequantizeLinear → the float activation →
QuantizeLinear) all read the one table this makes.
"""

from __future__ import annotations

import numpy as np

from irc import quant
from irc.ops.quant import LUT_FUNCTIONS
from irc.reference.elementwise import gelu, hard_sigmoid, hard_swish, sigmoid, tanh


def activation(function: str, x: np.ndarray, alpha: float = 0.2, beta: float = 0.5):
    """``function`` of float32 ``x`` as irc's float ops compute it (``silu``: x · sigmoid(x),
    the mul of the two; ``gelu_tanh``: gelu's tanh approximation; ``affine``: x · alpha +
    beta, a mul and an add by scalars; ``alpha`` and ``beta`` are also hard_sigmoid's)."""
    x = np.asarray(x, np.float32)
    if function == "sigmoid":
        return sigmoid(x)
    if function == "tanh":
        return tanh(x)
    if function == "hard_sigmoid":
        return hard_sigmoid(x, alpha=alpha, beta=beta)
    if function == "hard_swish":
        return hard_swish(x)
    if function in ("gelu", "gelu_tanh"):
        return gelu(x, approximate="tanh" if function == "gelu_tanh" else "none")
    if function == "affine":  # the float ops' own rounding: the product, then the sum
        return x * np.float32(alpha) + np.float32(beta)
    if function == "silu":
        return x * sigmoid(x)
    raise ValueError(f"no lookup table for {function!r}; one of {LUT_FUNCTIONS}")


def lut_table(function: str, in_scale: float, in_zero: int, out_scale: float, out_zero: int,
              alpha: float = 0.2, beta: float = 0.5) -> np.ndarray:  # fmt: skip
    """int8 [256]: entry ``q + 128`` is quantize_out(function(dequantize_in(q)))."""
    levels = np.arange(quant.ACT_QMIN, quant.ACT_QMAX + 1)
    reals = quant.dequantize(levels, in_scale, in_zero)
    return quant.quantize(activation(function, reals, alpha, beta), out_scale, out_zero)
