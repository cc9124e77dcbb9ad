"""Where a plan's top-1 loss is: one saved plan, recompiled with single-layer changes.

Reads a plan from ``bench_size_budgets.py``'s JSON (``--json``: budget → row with its
``plan``), compiles it as it is and once per ``--variant`` (a JSON object of layer →
precision overrides) with the same calibration (min-max, all of imagenet-calib256) and
GPTQ statistics (the 224 calibration images after the 32-image sensitivity sample:
``bench_strategies.calibrated``), and prints each model's top-1 on
imagenet-val1300 and its compression. ``--flip-statistics`` adds each statistics image's
horizontal mirror (in the same batch, so the held-out damping choice never sees an
image's twin). ``--without-pooled-statistics`` drops the per-position statistics of the
classifier's pool input (``InputStatistics.spatial`` and ``spatial_halves``), as before
they were kept. Beside top-1, each model's agreement with FP32's top-1 and its output SQNR
against FP32 on the same images (less noisy than top-1: one image is 0.077 points), and
its output SQNR on the 32-image sensitivity sample. ``--rounding nearest`` compiles a
nearest-rounding plan; ``--threads`` sets the compiled models' thread count.

    python bench/bench_plan_variants.py --plans results/rounding/mobilenetv2_bn-gptq-sizeonly.json
        --budget 8 --variant '{"/classifier/classifier.1/Gemm": "int4"}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from bench_strategies import PRESETS, calibrated
from eval_accuracy import load_val

from irc.measure import sqnr_db
from irc.stages import GPTQ_SAMPLES, build, build_plan, layer_hessians

SAMPLE = 32  # the sensitivity images bench_strategies keeps out of the GPTQ statistics


def with_mirrors(images: np.ndarray) -> np.ndarray:
    """Each of ``images`` followed by its horizontal mirror (twins in one batch)."""
    pairs = np.stack([images, images[..., ::-1]], axis=1)  # [N, 2, ...]
    return np.ascontiguousarray(pairs.reshape(-1, *images.shape[1:]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--plans", type=Path, required=True, help="bench_size_budgets JSON")
    parser.add_argument("--budget", default="8", help="the JSON's row (FP32 bytes / N)")
    parser.add_argument("--variant", action="append", default=[], type=json.loads,
                        help="JSON layer → precision overrides (repeatable)")  # fmt: skip
    parser.add_argument(
        "--flip-statistics",
        action="store_true",
        help="GPTQ statistics on each image and its mirror (measured twice)",
    )
    parser.add_argument("--rounding", default="gptq", choices=("gptq", "nearest"),
                        help="the plan's weight rounding")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="the models' num_threads (default: Numba's)")  # fmt: skip
    parser.add_argument(
        "--without-pooled-statistics",
        action="store_true",
        help="GPTQ statistics without the pooled layers' per-position ones",
    )
    args = parser.parse_args(argv)
    rows = json.loads(args.plans.read_text())
    key = next((k for k in rows if k != "fp32" and float(k) == float(args.budget)), None)
    if key is None:
        parser.error(f"{args.plans} has no budget {args.budget} (it has {', '.join(rows)})")
    plan = rows[key]["plan"]
    unknown = sorted({name for v in args.variant for name in v} - set(plan))
    if unknown:
        parser.error(f"no such layer in the plan: {', '.join(unknown)}")
    # statistics only for GPTQ rounding, and once: the mirrored ones replace calibrated's
    own_statistics = args.rounding == "gptq" and not args.flip_statistics
    graph, _, calibration, images, _, _ = calibrated(
        args.model, SAMPLE, "gptq" if own_statistics else "nearest"
    )
    if args.rounding == "gptq" and args.flip_statistics:
        rest = images[SAMPLE : SAMPLE + GPTQ_SAMPLES]
        statistics = layer_hessians(graph, with_mirrors(rest), progress=False)
        calibration = calibration.with_statistics(statistics)
    if args.rounding == "gptq" and args.without_pooled_statistics:
        calibration = calibration.with_statistics({
            name: dataclasses.replace(s, spatial=None, spatial_halves=None)
            for name, s in calibration.hessians.items()
        })  # fmt: skip
    val, val_labels = load_val(PRESETS[args.model], 1300)
    fp32 = build(graph, num_threads=1)
    reference, sample_reference = logits(fp32, val), logits(fp32, images[:SAMPLE])
    for override in [{}] + args.variant:
        start = time.perf_counter()
        model = build_plan(graph, {**plan, **override}, calibration, num_threads=args.threads)
        out = logits(model, val)
        on_sample = sqnr_db(logits(model, images[:SAMPLE]), sample_reference)
        top1 = 100 * np.mean(out.argmax(1) == val_labels)
        agree = 100 * np.mean(out.argmax(1) == reference.argmax(1))
        ratio = model.report().totals.ratio
        label = json.dumps(override) if override else "the plan"
        print(f"{label}: top-1 {top1:.2f}, agrees with FP32 on {agree:.2f}%, output SQNR "
              f"{sqnr_db(out, reference):.2f} dB (on the sample: {on_sample:.2f} dB), "
              f"{ratio:.3f}× ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


def logits(model, images: np.ndarray) -> np.ndarray:
    """``model``'s first output on each image at batch 1, stacked (float64)."""
    return np.concatenate([model(images[i : i + 1])[0] for i in range(len(images))]).astype(
        np.float64
    )


if __name__ == "__main__":
    main()
