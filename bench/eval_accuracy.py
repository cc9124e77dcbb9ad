"""Top-1 / top-5 accuracy of irc's compiled models at each precision on ImageNet images.

Each model's float graph is calibrated once on ``../shared/data/imagenet-calib256`` (by
its compiled float program; with ``--rounding gptq`` also GPTQ statistics, from up to 256
of those images) and compiled at every precision asked for (``irc.stages``), then
evaluated on ``../shared/data/imagenet-val1300`` (never the same images), with the
preprocessing ../shared/README.md gives for the model. The compiled model is what runs:
Numba integer kernels on packed weights, not a float simulation. onnxruntime FP32 on the
same images is the reference row. A row's compile time is its quantize and build time;
the shared calibration's time is printed once per model.

    python bench/eval_accuracy.py [--models mobilenetv2_bn efficientnet_lite0_bn]
        [--precisions fp32 int8 int4 int2] [--limit 1300] [--calib-limit 256]
        [--method minmax] [--weights mse] [--rounding nearest] [--batch 50] [--threads 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from irc.benchmark.peers import ort_session
from irc.calibration import load_labelled_folder
from irc.measure import accuracy
from irc.stages import build_plan, calibrate, float_graph, rounding_statistics

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


def load_val(preset: str, limit: int):
    """All evaluation images of val1300 (at most ``limit``) and their labels, in memory."""
    images, labels = [], []
    for batch, label in load_labelled_folder(SHARED / "data" / "imagenet-val1300", preset, limit):
        images.append(batch)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PRESETS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "int4", "int2"])
    parser.add_argument("--limit", type=int, default=1300, help="evaluation images")
    parser.add_argument("--calib-limit", type=int, default=256, help="calibration images")
    parser.add_argument("--method", default="minmax", help="activation calibration method")
    parser.add_argument("--weights", default="mse", help="weight clipping: mse or minmax")
    parser.add_argument(
        "--rounding",
        default="nearest",
        choices=("nearest", "gptq"),
        help="weight rounding (gptq: statistics from the calibration images)",
    )
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    calib = SHARED / "data" / "imagenet-calib256"
    rows = []
    for name in args.models:
        path = SHARED / "models" / f"{name}.onnx"
        preset = PRESETS[name]
        images, labels = load_val(preset, args.limit)
        session = ort_session(path, args.threads)
        top1, top5 = accuracy(lambda x, s=session: s.run(None, {"input": x})[0], images, labels,
                              args.batch)  # fmt: skip
        rows.append(dict(model=name, precision="ort-fp32", top1=top1, top5=top5))
        print(f"{name} onnxruntime fp32: top-1 {top1:.2f} top-5 {top5:.2f}", file=sys.stderr)
        graph = float_graph(path)
        start = time.perf_counter()
        calibration = calibrate(graph, calib, args.method, preprocess=preset,
                                limit=args.calib_limit)  # fmt: skip
        if args.rounding == "gptq":
            statistics = rounding_statistics(graph, calib, preprocess=preset)
            calibration = calibration.with_statistics(statistics)
        print(f"{name}: calibrated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        shape = {graph.inputs[0].name: (args.batch, *images.shape[1:])}
        for precision in args.precisions:
            start = time.perf_counter()
            model = build_plan(graph, precision, calibration, weights=args.weights,
                               input_shapes=shape, num_threads=args.threads)  # fmt: skip
            seconds = time.perf_counter() - start
            top1, top5 = accuracy(lambda x, m=model: m(x)[0], images, labels, args.batch)
            totals = model.report().to_dict()["totals"]
            rows.append(dict(model=name, precision=precision, top1=top1, top5=top5,
                             compile_s=seconds, **totals))  # fmt: skip
            print(f"{name} {precision}: top-1 {top1:.2f} top-5 {top5:.2f} ({seconds:.0f} s)",
                  file=sys.stderr)  # fmt: skip
    print(f"\n{args.limit} val images; calibration {args.calib_limit} images, {args.method}; "
          f"weights {args.weights}, {args.rounding} rounding")  # fmt: skip
    print("\n| model | precision | top-1 | top-5 | Δ top-1 vs fp32 | weights MB | vs FP32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = {r["model"]: r["top1"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        delta = r["top1"] - base.get(r["model"], r["top1"])
        size = f"{r['bytes'] / 1e6:.2f}" if "bytes" in r else ""
        ratio = f"{r['fp32_bytes'] / r['bytes']:.2f}×" if "bytes" in r else ""
        print(f"| {r['model']} | {r['precision']} | {r['top1']:.2f} | {r['top5']:.2f} | "
              f"{delta:+.2f} | {size} | {ratio} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
