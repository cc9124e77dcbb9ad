"""The cost model: what each layer costs at each precision on this machine.

Per layer and precision (``PRECISIONS``: fp32, fp16, int8, int4, int2):

- ``latency`` (seconds, batch 1): the layer's own kernel, measured by running its layer
  program (``layer_programs``) — median of K runs — or, where nothing was measured, a
  roofline estimate (``measured`` says which);
- ``bytes``: what a saved model stores for the layer at that precision (as
  ``irc.report`` counts it: payload, scales, bias, requantization tables);
- ``allowed``: the backend has a kernel for it (the support table the strategies obey);

and per layer the ``transition`` cost (seconds): quantizing its input and dequantizing
its output, paid where an integer layer meets a float one. ``other_bytes`` and
``other_latency`` are the parts of the model that belong to no layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8", "int4", "int2")
INTEGER = ("int8", "int4", "int2")


@dataclass
class CostModel:
    """Measured (or estimated) costs; arrays are [layers, len(precisions)]."""

    layers: list[str]
    precisions: tuple[str, ...]
    latency: np.ndarray  # seconds
    bytes: np.ndarray  # int64
    allowed: np.ndarray  # bool
    measured: np.ndarray  # bool: latency measured here (else the roofline estimate)
    transition: np.ndarray  # [layers, 2]: seconds to quantize the input, dequantize the output
    other_bytes: int = 0
    other_latency: float = 0.0
    machine: str = ""
    extra: dict = field(default_factory=dict)

    def column(self, precision: str) -> int:
        """The column of ``precision``."""
        return self.precisions.index(precision)

    def plan_bytes(self, plan: dict[str, str]) -> int:
        """Stored bytes of the whole model under ``plan`` (layer → precision; missing: fp32)."""
        total = self.other_bytes
        for i, name in enumerate(self.layers):
            total += int(self.bytes[i, self.column(plan.get(name, "fp32"))])
        return total

    def plan_latency(self, plan: dict[str, str]) -> float:
        """Predicted batch-1 seconds under ``plan``: layer kernels, the rest of the model,
        and a transition wherever an integer layer's neighbour in layer order is float
        (the model's first and last layers count their input / output as float)."""
        total = self.other_latency
        chosen = [plan.get(name, "fp32") for name in self.layers]
        for i, p in enumerate(chosen):
            total += float(self.latency[i, self.column(p)])
            if p in INTEGER:
                if i == 0 or chosen[i - 1] not in INTEGER:
                    total += float(self.transition[i, 0])
                if i == len(chosen) - 1 or chosen[i + 1] not in INTEGER:
                    total += float(self.transition[i, 1])
        return total
