"""``CompileOptions``: every setting of ``irc.compile`` in one value.

    >>> options = CompileOptions(precision="int8", calibration="calib/",
    ...                          preprocess="torchvision", num_threads=1)
    >>> model = irc.compile("model.onnx", options=options)
    >>> model = irc.compile("model.onnx", precision="int8", calibration="calib/")  # the same

The fields are ``irc.compile``'s keyword arguments; ``replace`` gives a changed copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from irc.calibration import COMPILE_METHOD
from irc.errors import InputError
from irc.pipelines import DEFAULT_FLOAT_PIPELINE

ROUNDINGS = ("nearest", "gptq", "best")
CALIBRATION_ENGINES = ("compiled", "reference")


@dataclass(frozen=True)
class CompileOptions:
    """How to compile a model; see ``irc.compile`` for what each field means."""

    pipeline: str = DEFAULT_FLOAT_PIPELINE
    num_threads: int | None = None
    warmup: bool = True
    precision: Any = "fp32"
    calibration: Any = None
    calibration_method: str = COMPILE_METHOD
    calibration_engine: str = "compiled"
    weight_clipping: str = "mse"
    preprocess: Any = None
    calibration_limit: int | None = None
    progress: bool = True
    cache: bool = True
    strategy: str | None = None
    budgets: Any = None
    labels: Any = None
    evaluate: Any = None
    sensitivity_limit: int = 16
    strategy_options: dict | None = None
    rounding: str | None = None  # None: "best" with a strategy, else "nearest"
    stage_cache: Any = True  # True: $IRC_CACHE_DIR/stages (~/.cache/irc); a folder; False: off
    sensitivity_table: Any = None  # a SensitivityTable, or a .json/.csv file to reuse or write
    holdout: Any = None  # images top-1 is scored on (irc.decision.holdout)
    executor: Any = None  # runs strategy="search"'s evaluations (irc.decision.search)

    def __post_init__(self):
        if self.rounding is not None and self.rounding not in ROUNDINGS:
            raise InputError(
                f"rounding must be one of {', '.join(ROUNDINGS)}; got {self.rounding!r}"
            )
        if self.calibration_engine not in CALIBRATION_ENGINES:
            raise InputError(
                f"calibration_engine must be one of {', '.join(CALIBRATION_ENGINES)}; "
                f"got {self.calibration_engine!r}"
            )
        if self.sensitivity_table is not None and self.strategy is None:
            raise InputError(
                "sensitivity_table is read or written by a strategy compile: give a strategy"
            )
        if self.rounding == "best" and self.strategy is None:
            raise InputError(
                "rounding='best' chooses per layer from the sensitivity table: give a "
                "strategy, or use rounding='nearest' or 'gptq'"
            )

    @property
    def weight_rounding(self) -> str:
        """The rounding used: ``rounding``, or by default ``best`` with a strategy (each
        layer and precision as measured best) and ``nearest`` without."""
        if self.rounding is not None:
            return self.rounding
        return "best" if self.strategy is not None else "nearest"

    @classmethod
    def of(cls, options: CompileOptions | None, settings: dict) -> CompileOptions:
        """``options`` (default: the defaults) with ``settings`` (field name → value)
        applied; InputError naming an unknown setting."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise InputError(
                f"irc.compile: unknown option(s) {', '.join(unknown)}; options: "
                + ", ".join(sorted(names))
            )
        return dataclasses.replace(options or cls(), **settings)

    def replace(self, **settings) -> CompileOptions:
        """A copy with ``settings`` changed."""
        return CompileOptions.of(self, settings)
