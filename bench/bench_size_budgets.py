"""``auto`` under size budgets alone (FP32/6, FP32/8), one rounding: top-1 on val1300.

The sensitivity table, calibration and cost model are ``bench_strategies.prepare``'s (the
same ``--table-cache`` files, so a table measured there is reused here); each plan is
chosen and verified by ``irc.decision.choose`` with no latency budget, compiled, and
scored on all 1300 images of imagenet-val1300 at batch 1. This is issue 7's measure:
``auto`` at ≥ 6× within 0.5 points of FP32, at ≥ 8× within 1.0.

One image is 0.077 points, and a plan that disagrees with FP32 on 7% of the images has a
top-1 difference from FP32 whose noise is about ±0.5 points. So beside the difference,
each row gives its paired bootstrap 90% interval (the same resampled images for FP32 and
the plan), the agreement with FP32's top-1 and the output SQNR against FP32's logits.
``--split k`` rotates the calibration images by k·``--sample`` (another sensitivity sample,
other statistics images; the activation ranges still come from all 256): averaging a few
splits measures the method rather than one draw of images.

    python bench/bench_size_budgets.py --model mobilenetv2_bn --rounding gptq
        [--method minmax] [--sizes 6 8] [--split 0] [--table-cache DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from bench_plan_variants import logits
from bench_strategies import PRESETS, prepare
from eval_accuracy import load_val

from irc.decision import Budgets
from irc.decision.choose import choose
from irc.measure import sqnr_db
from irc.stages import build

BOOTSTRAP_DRAWS = 2000


def paired_interval(plan_right: np.ndarray, fp32_right: np.ndarray, seed: int = 0):
    """The 5th and 95th percentile of the plan's top-1 minus FP32's (points) over
    ``BOOTSTRAP_DRAWS`` resamplings of the images, both scored on the same draw."""
    rng = np.random.default_rng(seed)
    n = len(plan_right)
    draws = rng.integers(0, n, size=(BOOTSTRAP_DRAWS, n))
    deltas = 100.0 * (plan_right[draws].mean(axis=1) - fp32_right[draws].mean(axis=1))
    return float(np.percentile(deltas, 5)), float(np.percentile(deltas, 95))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax of each row of ``logits`` (float64)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def score(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1, its difference from FP32 with the paired 90% interval, agreement with FP32's
    top-1 (%), output SQNR against FP32 (dB) and the mean KL divergence of the plan's
    softmax from FP32's (nats per image): the last three far less noisy than top-1."""
    right, ref_right = out.argmax(1) == labels, ref.argmax(1) == labels
    low, high = paired_interval(right, ref_right)
    p, q = log_softmax(ref), log_softmax(out)
    kl = float(np.mean(np.sum(np.exp(p) * (p - q), axis=1)))
    return dict(top1=100.0 * right.mean(), delta=100.0 * (right.mean() - ref_right.mean()),
                delta_90=[low, high], agreement=100.0 * np.mean(out.argmax(1) == ref.argmax(1)),
                sqnr_db=sqnr_db(out, ref), kl=kl)  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--rounding", default="gptq", choices=("nearest", "gptq", "best"))
    parser.add_argument("--method", default="minmax", help="activation calibration method")
    parser.add_argument("--sizes", type=float, nargs="+", default=[6, 8],
                        help="budgets as FP32 bytes / N")  # fmt: skip
    parser.add_argument("--sample", type=int, default=32, help="sensitivity images")
    parser.add_argument("--split", type=int, default=0,
                        help="rotate the calibration images by this many samples")  # fmt: skip
    parser.add_argument("--table-cache", type=Path, help="reuse / keep sensitivity tables here")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    graph, _, calibration, images, labels, table, cost = prepare(
        args.model, args.sample, args.table_cache, args.rounding, args.method, args.split
    )
    float_model = build(graph, num_threads=1)
    fp32 = float_model.report().totals.fp32_bytes
    val, val_labels = load_val(PRESETS[args.model], 1300)
    ref = logits(float_model, val)
    base = 100.0 * np.mean(ref.argmax(1) == val_labels)
    rows = {"fp32": {"top1": base}, "split": args.split}
    for ratio in args.sizes:
        start = time.perf_counter()
        choice = choose(graph, calibration, images[: args.sample], strategy="auto",
                        budgets=Budgets(max_bytes=int(fp32 / ratio)),
                        labels=labels[: args.sample], table=table, cost=cost, num_threads=1,
                        progress=False)  # fmt: skip
        counts = dict(Counter(choice.decision.plan.values()))
        scored = score(logits(choice.model, val), ref, val_labels)
        size = choice.model.report().totals
        rows[str(ratio)] = dict(**scored, ratio=size.ratio, counts=counts,
                                plan=choice.decision.plan)  # fmt: skip
        low, high = scored["delta_90"]
        print(f"{args.model} {args.rounding} split {args.split} FP32/{ratio:g}: top-1 "
              f"{scored['top1']:.2f} ({scored['delta']:+.2f} against FP32, 90% "
              f"[{low:+.2f}, {high:+.2f}]), agreement {scored['agreement']:.2f}%, SQNR "
              f"{scored['sqnr_db']:.2f} dB, {size.ratio:.3f}×, {counts}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
