"""The user's budgets, and the error when they cannot all be met.

    >>> Budgets(max_bytes=parse_size("2.5MB"), max_drop=1.0)

Size is the stored bytes of the whole model (``CompiledModel.report().totals.bytes``).
Latency is a batch-1 time in seconds, or a ratio to the same model at uniform INT8
(``max_latency_ratio=0.9``: 10% faster than INT8). Accuracy is a minimum SQNR (dB) of
the model's output against FP32, or a maximum drop of top-1 in points (needs labelled
data or an evaluation function to verify).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from irc.errors import IrcError
from irc.report import format_bytes

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
          "gib": 2**30}  # fmt: skip


class BudgetError(IrcError):
    """A budget is malformed, or cannot be met: the message names the constraint.

    ``partial``: when the budgets were missed after measuring, what was reached
    (``irc.decision.choose.PartialChoice``: the verified attempts, the best of them, the
    sensitivity table, the cost model and the calibration); None otherwise.
    """

    partial = None


@dataclass(frozen=True)
class Budgets:
    """Upper bounds on size and latency, lower bounds on accuracy; None: no bound."""

    max_bytes: int | None = None
    max_latency: float | None = None  # seconds, batch 1
    max_latency_ratio: float | None = None  # to uniform INT8
    min_sqnr: float | None = None  # dB, model output against FP32
    max_drop: float | None = None  # top-1 points against FP32

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is not None and (not isinstance(value, (int, float)) or value != value):
                raise BudgetError(f"budget {name} must be a number, got {value!r}")
        for name in ("max_bytes", "max_latency", "max_latency_ratio"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BudgetError(f"budget {name} must be positive, got {value}")
        if self.max_drop is not None and self.max_drop < 0:
            raise BudgetError(f"budget max_drop must be at least 0, got {self.max_drop}")

    @property
    def empty(self) -> bool:
        """No budget at all."""
        return all(v is None for v in asdict(self).values())

    def describe(self) -> str:
        """The budgets as a short phrase (for messages and reports)."""
        parts = []
        if self.max_bytes is not None:
            parts.append(f"size ≤ {format_bytes(self.max_bytes)}")
        if self.max_latency is not None:
            parts.append(f"latency ≤ {self.max_latency * 1e3:.3g} ms")
        if self.max_latency_ratio is not None:
            parts.append(f"latency ≤ {self.max_latency_ratio:g}× uniform INT8")
        if self.min_sqnr is not None:
            parts.append(f"output SQNR ≥ {self.min_sqnr:g} dB")
        if self.max_drop is not None:
            parts.append(f"top-1 drop ≤ {self.max_drop:g} points")
        return ", ".join(parts) or "no budget"


def parse_size(text) -> int:
    """Bytes from ``"2.5MB"``, ``"800kB"``, ``"3MiB"`` or a plain number of bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise BudgetError(f"cannot read size {text!r}: write it like 2.5MB, 800kB or 3MiB")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_latency(text) -> tuple[float | None, float | None]:
    """(seconds, ratio to INT8) from ``"12ms"``, ``"0.012s"`` or ``"0.9x"``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text), None
    s = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(ms|s|us|x|×)", s)
    if not match:
        raise BudgetError(
            f"cannot read latency {text!r}: write it like 12ms, 0.012s, or 0.9x (ratio to INT8)"
        )
    value, unit = float(match.group(1)), match.group(2)
    if unit in ("x", "×"):
        return None, value
    return value * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit], None
