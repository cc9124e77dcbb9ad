"""IR graphs built directly (no ONNX) for tests that need a shape ONNX files rarely have."""

from __future__ import annotations

from irc.ir import Graph
from irc.opdef import build
from irc.types import DType, TensorType


def relu_chain(length: int, width: int = 16) -> Graph:
    """x f32[1, width] -> relu -> relu -> ... (``length`` ops)."""
    g = Graph("chain")
    v = g.add_input("x", TensorType(DType.F32, (1, width)))
    for _ in range(length):
        v = build(g, "relu", [v]).result
    g.outputs = [v]
    return g
