"""Strategies (``auto``, ``search``, the papers') under size budgets through the user's path,
scored on val1300.

Each plan is made by ``irc.compile`` (what ``irc compile`` runs) with its default options,
calibrated on imagenet-calib256 as an ``irc.calibration.ImageSet`` rotated by
``split`` × 16 images (another sensitivity sample and other GPTQ statistics images; the
activation ranges still come from all 256), and scored on all 1300 images of
imagenet-val1300 at batch 1 against the FP32 model: top-1, its paired difference with a
bootstrap 90% interval (``bench_size_budgets.score``), agreement and output SQNR.

``--strategy search`` runs ``search`` from ``auto``'s plan with ``holdout=0`` (the same
calibration as ``auto``, so it starts from ``auto``'s plan; it scores candidates on the
256 calibration images) for ``--evaluations``, and scores on val1300 the best plan after
each count of ``--checkpoints`` too (a shorter search with the same seed ends there).

    python bench/bench_user_path.py --model mobilenetv2_bn --sizes 6 8 --splits 0 1 2
    python bench/bench_user_path.py --strategy search --evaluations 300 --checkpoints 100
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from bench_plan_variants import logits
from bench_size_budgets import score
from bench_strategies import PRESETS
from eval_accuracy import SHARED, load_val

import irc
from irc.calibration import ImageSet, image_set
from irc.decision import Budgets
from irc.decision.rounding import plan_calibration
from irc.stages import build_plan, float_graph
from irc.tools.cli_decision import STRATEGY_NAMES

SAMPLE = 16  # irc.compile's default sensitivity sample


def rotated(split: int) -> ImageSet:
    """imagenet-calib256 rotated by ``split`` × ``SAMPLE`` images."""
    whole = image_set(SHARED / "data" / "imagenet-calib256")
    k = (split * SAMPLE) % len(whole)
    return ImageSet(whole.folder, whole.names[k:] + whole.names[:k],
                    whole.labels[k:] + whole.labels[:k])  # fmt: skip


def run(model: str, strategy: str, ratio: float, split: int, fp32_bytes: int, args) -> tuple:
    """(the compiled model, its compile seconds) of one budget and split."""
    budgets = Budgets(max_bytes=int(fp32_bytes / ratio)) if ratio else Budgets()
    options = dict(strategy=strategy, budgets=budgets,
                   calibration=rotated(split), preprocess=PRESETS[model], num_threads=1,
                   progress=args.progress)  # fmt: skip
    if strategy == "search":
        options.update(holdout=0, strategy_options={"evaluations": args.evaluations})
    start = time.perf_counter()
    compiled = irc.compile(SHARED / "models" / f"{model}.onnx", **options)
    return compiled, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--strategy", default="auto", choices=STRATEGY_NAMES)
    parser.add_argument("--sizes", type=float, nargs="+", default=[6, 8],
                        help="size budgets as FP32 bytes / N; 0: no budget")  # fmt: skip
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[100])
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    onnx_path = SHARED / "models" / f"{args.model}.onnx"
    float_model = irc.compile(onnx_path, num_threads=1, progress=False)
    fp32 = float_model.report().totals.fp32_bytes
    val, labels = load_val(PRESETS[args.model], 1300)
    ref = logits(float_model, val)
    rows = {"model": args.model, "strategy": args.strategy,
            "fp32_top1": 100.0 * float(np.mean(ref.argmax(1) == labels)), "runs": []}  # fmt: skip
    for split in args.splits:
        for ratio in args.sizes:
            compiled, seconds = run(args.model, args.strategy, ratio, split, fp32, args)
            plan = compiled.choice.decision.plan
            row = dict(split=split, ratio_asked=ratio, seconds=seconds,
                       compile_seconds=compiled.compile_seconds,
                       ratio=compiled.report().totals.ratio, counts=dict(Counter(plan.values())),
                       **score(logits(compiled, val), ref, labels))  # fmt: skip
            if args.strategy == "search":
                row["checkpoints"] = checkpoints(compiled, args, val, ref, labels)
            rows["runs"].append(row)
            low, high = row["delta_90"]
            print(f"{args.model} {args.strategy} split {split} FP32/{ratio:g}: top-1 "
                  f"{row['top1']:.2f} ({row['delta']:+.2f}, 90% [{low:+.2f}, {high:+.2f}]), "
                  f"{row['ratio']:.2f}×, {row['counts']}, {seconds:.0f} s", flush=True)  # fmt: skip
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))


def checkpoints(compiled, args, val, ref, labels) -> dict:
    """Val1300 scores of the best plan a search of each ``--checkpoints`` count ends with."""
    details = compiled.choice.decision.details
    graph = float_graph(SHARED / "models" / f"{args.model}.onnx")
    out = {}
    for count in args.checkpoints:
        earlier = [i for i in details["improvements"] if i["evaluation"] <= count]
        plan = {"default": "fp32", **earlier[-1]["plan"]}
        rounded = plan_calibration(compiled.calibration, compiled.choice.table, plan)
        model = build_plan(graph, plan, rounded, num_threads=1)
        out[str(count)] = dict(ratio=model.report().totals.ratio,
                               **score(logits(model, val), ref, labels))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
