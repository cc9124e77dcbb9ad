"""Choosing each layer's precision: sensitivity, cost model, strategies, verification.

    >>> from irc.decision import Budgets, parse_size
    >>> model = irc.compile("model.onnx", calibration="calib/", preprocess="torchvision",
    ...                     strategy="auto", budgets=Budgets(max_bytes=parse_size("2.3MB")))
    >>> print(model.choice.decision.plan)

Modules: ``table`` (the sensitivity table), ``sensitivity`` (measuring it),
``layer_programs`` (one layer compiled alone), ``cost`` / ``costs_measure`` (the cost
model), ``budgets``, ``strategies`` (the papers' methods and irc's ``auto``), ``rounding``
(``rounding="best"``: nearest or GPTQ per layer and precision, by measurement), ``choose``
(decide, verify, back off), ``api`` (the ``irc.compile`` entry).
"""

from irc.decision.budgets import BudgetError, Budgets, parse_latency, parse_size

__all__ = ["BudgetError", "Budgets", "parse_latency", "parse_size"]
