"""How long the sensitivity table takes: ``rounding.analyze_best`` on a shared model, as a
strategy compile runs it (16 sample images, nearest and GPTQ columns), timed alone.

The calibration, GPTQ statistics and sample are made first (not timed), then the table is
measured ``--runs`` times, each with a fresh rounding memo, and each run's seconds printed.
Pin it to one core with one BLAS thread, as the issue's goal is stated:

    OPENBLAS_NUM_THREADS=1 taskset -c 1 python bench/bench_sensitivity_time.py --runs 3
"""

from __future__ import annotations

import argparse
import time

from bench_strategies import PRESETS
from eval_accuracy import SHARED

from irc.calibration.data import sample_inputs
from irc.decision.rounding import analyze_best
from irc.stages import calibrate, float_graph, rounding_statistics

CALIB = SHARED / "data" / "imagenet-calib256"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--sample", type=int, default=16, help="sensitivity images")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    preprocess = PRESETS[args.model]
    graph = float_graph(SHARED / "models" / f"{args.model}.onnx")
    calibration = calibrate(graph, CALIB, preprocess=preprocess, num_threads=1, progress=False)
    statistics = rounding_statistics(graph, CALIB, preprocess=preprocess, skip=args.sample,
                                     progress=False, num_threads=1)  # fmt: skip
    calibration = calibration.with_statistics(statistics)
    images, labels = sample_inputs(graph, CALIB, preprocess, args.sample)
    for run in range(args.runs):
        start = time.perf_counter()
        analyze_best(graph, calibration, images, labels=labels, num_threads=1, progress=False,
                     rounding_memo={})  # fmt: skip
        print(f"{args.model}, {args.sample} images, run {run + 1}: "
              f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
