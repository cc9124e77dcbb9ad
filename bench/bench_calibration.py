"""Calibration time: the reference interpreter against the compiled float program.

Both engines calibrate the same float graph (after the default float pipeline) on the
same preprocessed images, in turn, ``--rounds`` times; the medians of wall and process
CPU time are printed, and how far apart the two engines' ranges are (the compiled
kernels round floats in another order than numpy's reference, so ranges may differ in
their last bits).

    python bench/bench_calibration.py [--model mobilenetv2_bn] [--images 256] [--rounds 3]
        [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np

from irc.calibration import calibrate as reference_calibrate
from irc.calibration import load_folder
from irc.stages import calibrate, float_graph

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


def timed(run) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def range_difference(a, b) -> float:
    """The largest difference between two calibrations' range ends, relative to the
    range's width."""
    worst = 0.0
    for name in a:
        (lo_a, hi_a), (lo_b, hi_b) = a[name], b[name]
        width = max(hi_a - lo_a, 1e-30)
        worst = max(worst, abs(lo_a - lo_b) / width, abs(hi_a - hi_b) / width)
    return worst


def cpu_name() -> str:
    """The CPU's model name, for the report."""
    if os.path.isfile("/proc/cpuinfo"):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--images", type=int, default=256, help="calibration images")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each engine")
    parser.add_argument("--threads", type=int, default=1, help="Numba (and BLAS) threads")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the shared models and images")
    numba.set_num_threads(args.threads)
    graph = float_graph(SHARED / "models" / f"{args.model}.onnx")
    images = load_folder(SHARED / "data" / "imagenet-calib256", PRESETS[args.model],
                         limit=args.images)  # fmt: skip
    engines = {
        "reference": lambda: reference_calibrate(graph, images, progress=False),
        "compiled": lambda: calibrate(graph, images, progress=False, num_threads=args.threads),
    }
    engines["compiled"]()  # compiles (or loads) the kernels once, outside the timing
    times = {name: [] for name in engines}
    results = {}
    for _ in range(args.rounds):
        for name, run in engines.items():
            wall, cpu, results[name] = timed(run)
            times[name].append((wall, cpu))
    rows = {name: {"wall_s": float(np.median([w for w, _ in t])),
                   "cpu_s": float(np.median([c for _, c in t]))}
            for name, t in times.items()}  # fmt: skip
    difference = range_difference(results["reference"], results["compiled"])
    identical = all(results["reference"][n] == results["compiled"][n] for n in results["reference"])
    print(f"{args.model}, {len(images)} images, {args.threads} thread(s), {cpu_name()}")
    for name, row in rows.items():
        print(f"  {name:<9} {row['wall_s']:7.2f} s wall  {row['cpu_s']:7.2f} s CPU")
    ratio = rows["reference"]["wall_s"] / rows["compiled"]["wall_s"]
    print(f"  compiled is {ratio:.1f}× faster; ranges identical: {identical}; largest "
          f"difference {difference:.2e} of a range's width")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "images": len(images),
                                               "threads": args.threads, "cpu": cpu_name(),
                                               "engines": rows, "identical": identical,
                                               "difference": difference}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
