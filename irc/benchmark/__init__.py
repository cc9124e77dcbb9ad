"""Benchmarks of compiled models against each other and onnxruntime (``irc bench``).

>>> data = load_data("val/", "torchvision", calib="calib/")
>>> result = run_bench("mobilenetv2.onnx", data)
>>> print(markdown(result)); write_plots(result, "out", "mobilenetv2")
"""

from irc.benchmark.plots import pareto, write_plots
from irc.benchmark.report import markdown, write_json
from irc.benchmark.runner import STRATEGIES, BenchData, BenchResult, Row, load_data, run_bench

__all__ = ["STRATEGIES", "BenchData", "BenchResult", "Row", "load_data", "markdown", "pareto",
           "run_bench", "write_json", "write_plots"]  # fmt: skip
