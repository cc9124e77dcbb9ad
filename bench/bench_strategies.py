"""Every precision strategy on one model, on the same sensitivity table and cost model.

For each model: calibrate on imagenet-calib256 (all 256 images, ``--method``: minmax by
default), measure the
sensitivity table on its first ``--sample`` images (with their labels: Ω is the change of
the cross-entropy) and the cost model on this machine (1 thread), then let each strategy
decide and verify (``irc.decision.choose``; auto's top-1 drop is verified on all 256
calibration images). Each resulting model is compiled and measured: size, batch-1
latency interleaved with irc's uniform INT8 and onnxruntime FP32 / INT8 (quantize_static,
same calibration images) in the same run, and top-1 on imagenet-val1300.

    python bench/bench_strategies.py [--model mobilenetv2_bn] [--sample 32] [--runs 40]
        [--json out.json] [--table-cache DIR]

Budgets: ``auto``, ``sals`` and ``sigma`` get size ≤ FP32 / 6; ``auto`` also latency ≤
1.0× uniform INT8, and once more with a top-1 drop ≤ 1.0 verified on the 256 calibration
images (a budget it may fail: the error is printed below the table), and at size ≤ FP32 / 8;
``quantune`` and ``profile-score`` run as their papers do (no size budget: they only choose
between FP32, FP16 and INT8). ``--rounding gptq`` rounds every integer layer with GPTQ,
its statistics from the calibration images outside the sensitivity sample; ``--rounding
best`` measures the table with both roundings and keeps, per layer and precision, the one
with the lower output NSR (``irc.decision.rounding``), which every strategy's plan then
compiles with.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from eval_accuracy import load_val

from irc.benchmark.peers import ort_int8_model, ort_session
from irc.calibration import load_folder, load_labelled_folder
from irc.decision import BudgetError, Budgets
from irc.decision.choose import choose
from irc.decision.costs_measure import build_cost_model
from irc.decision.rounding import merge, without_statistics
from irc.decision.sensitivity import analyze
from irc.decision.table import SensitivityTable
from irc.measure import accuracy, interleaved
from irc.stages import GPTQ_SAMPLES, build_plan, calibrate, float_graph, layer_hessians

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CALIB = SHARED / "data" / "imagenet-calib256"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


def strategy_runs(fp32_bytes: int):
    """(label, strategy, Budgets) of the table's rows."""
    six = int(fp32_bytes / 6)
    return [
        ("uniform-int8", "uniform-int8", Budgets()),
        ("quantune", "quantune", Budgets()),
        ("sals (size ≤ FP32/6)", "sals", Budgets(max_bytes=six)),
        ("profile-score", "profile-score", Budgets()),
        ("sigma (size ≤ FP32/6)", "sigma", Budgets(max_bytes=six)),
        ("auto (size ≤ FP32/6, ≤ INT8 latency)", "auto",
         Budgets(max_bytes=six, max_latency_ratio=1.0)),
        ("auto (size ≤ FP32/6, ≤ INT8 latency, drop ≤ 1)", "auto",
         Budgets(max_bytes=six, max_drop=1.0, max_latency_ratio=1.0)),
        ("auto (size ≤ FP32/8, ≤ INT8 latency)", "auto",
         Budgets(max_bytes=int(fp32_bytes / 8), max_latency_ratio=1.0)),
        ("auto (size ≤ FP32/6)", "auto", Budgets(max_bytes=six)),
        ("auto (size ≤ FP32/8)", "auto", Budgets(max_bytes=int(fp32_bytes / 8))),
    ]  # fmt: skip


def calibrated(name: str, sample: int, rounding: str = "nearest", method: str = "minmax",
               split: int = 0):  # fmt: skip
    """Float graph, calibration images, their ``Calibration`` (with GPTQ statistics from
    the images after the ``sample`` first unless ``rounding`` is nearest), the labelled
    images and a tag naming how many statistics images there were ("" for none).
    ``split`` k rotates the labelled images by k·``sample`` first, so that another
    ``sample`` of them is the sensitivity sample and the rest feed the statistics (the
    activation ranges always come from all of them; the compiled float program runs them)."""
    preset = PRESETS[name]
    graph = float_graph(SHARED / "models" / f"{name}.onnx")
    t = time.perf_counter()
    calib = load_folder(CALIB, preset)
    calibration = calibrate(graph, calib, method)
    print(f"calibrated on {len(calib)} images in {time.perf_counter() - t:.1f} s", flush=True)
    xs, ys = zip(*load_labelled_folder(CALIB, preset))
    images, labels = np.concatenate(xs), np.concatenate(ys)
    if split:
        images, labels = np.roll(images, -split * sample, 0), np.roll(labels, -split * sample)
    statistics = ""
    if rounding != "nearest":  # statistics from other images than the sensitivity sample
        rest = images[sample : sample + GPTQ_SAMPLES]
        t = time.perf_counter()
        calibration = calibration.with_statistics(layer_hessians(graph, rest))
        statistics = str(len(rest))  # the tables' cache names say how many images
        print(f"gptq statistics on {len(rest)} images in {time.perf_counter() - t:.1f} s",
              flush=True)  # fmt: skip
    return graph, calib, calibration, images, labels, statistics


def prepare(name: str, sample: int, cache: Path | None, rounding: str = "nearest",
            method: str = "minmax", split: int = 0):  # fmt: skip
    """Float graph, calibration, labelled sample, sensitivity table and cost model
    (``split``: ``calibrated``'s rotation of the calibration images)."""
    graph, calib, calibration, images, labels, statistics = calibrated(name, sample, rounding,
                                                                        method, split)  # fmt: skip

    def measured(tag: str, calibration) -> SensitivityTable:
        ranges = "" if method == "minmax" else f"-{method}"  # tables depend on the ranges
        rotated = f"-split{split}" if split else ""
        file = f"sensitivity-{name}-{sample}{ranges}{rotated}{tag}.json"
        cached = cache / file if cache else None
        if cached and cached.exists():
            return SensitivityTable.from_dict(json.loads(cached.read_text()))
        table = analyze(graph, calibration, images[:sample], labels=labels[:sample],
                        num_threads=1)  # fmt: skip
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            table.save(cached)
        return table

    if rounding == "best":  # both tables (each cached as its own rounding's), merged
        table = merge(measured("", without_statistics(calibration)),
                      measured(f"-gptq{statistics}", calibration))  # fmt: skip
        kept = np.mean(table.rounding == "gptq", axis=0)
        print("gptq kept: " + ", ".join(f"{p} {100 * f:.0f}%"
                                        for p, f in zip(table.precisions, kept)))  # fmt: skip
    else:
        table = measured("" if rounding == "nearest" else f"-gptq{statistics}", calibration)
    print(f"sensitivity: {len(table.layers)} layers × {len(table.precisions)} precisions on "
          f"{table.images} images in {table.seconds:.1f} s", flush=True)  # fmt: skip
    t = time.perf_counter()
    cost = build_cost_model(graph, calibration, num_threads=1)
    print(f"cost model in {time.perf_counter() - t:.1f} s", flush=True)
    return graph, calib, calibration, images, labels, table, cost


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--sample", type=int, default=32, help="sensitivity images")
    parser.add_argument("--runs", type=int, default=40, help="latency rounds (interleaved)")
    parser.add_argument("--val-limit", type=int, default=1300)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--table-cache", type=Path, help="reuse / keep sensitivity tables here")
    parser.add_argument("--rounding", default="nearest", choices=("nearest", "gptq", "best"),
                        help="weight rounding of every integer layer (gptq: statistics from "
                        "the calibration images outside the sensitivity sample; best: per "
                        "layer and precision, the one the table measures better)")  # fmt: skip
    parser.add_argument("--method", default="minmax", help="activation calibration method "
                        "(minmax, percentile, entropy, mse)")  # fmt: skip
    parser.add_argument("--strategies", nargs="+", metavar="NAME",
                        help="only these strategies' rows (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    if not CALIB.is_dir():
        sys.exit(f"needs {CALIB}")
    graph, calib, calibration, images, labels, table, cost = prepare(
        args.model, args.sample, args.table_cache, args.rounding, args.method
    )
    sample, sample_labels = images[: args.sample], labels[: args.sample]

    def calib_top1(model):
        return accuracy(lambda x: model(x)[0], images, labels, 1)[0]

    models, rows, failed = {}, [], []
    fp32 = build_plan(graph, "fp32", None, num_threads=1)  # as irc.compile deploys it
    fp32_bytes = fp32.report().totals.fp32_bytes
    models["irc fp32"] = fp32
    for label, strategy, budgets in strategy_runs(fp32_bytes):
        if args.strategies and strategy not in args.strategies:
            continue
        t = time.perf_counter()
        try:
            choice = choose(graph, calibration, sample, strategy=strategy, budgets=budgets,
                            labels=sample_labels, evaluate=calib_top1, table=table, cost=cost,
                            num_threads=1, progress=False)  # fmt: skip
        except BudgetError as e:
            print(f"{label}: BudgetError: {e}", flush=True)
            failed.append((label, str(e)))
            continue
        counts = dict(Counter(choice.decision.plan.values()))
        gptq = dict(choice.model.stats)["quantize"].get("gptq", 0)
        print(f"{label}: {counts} ({gptq} layers GPTQ-rounded) in "
              f"{time.perf_counter() - t:.1f} s, {len(choice.attempts)} tries",
              flush=True)  # fmt: skip
        models[label] = choice.model
        rows.append({"label": label, "strategy": strategy, "counts": counts, "gptq_layers": gptq,
                     "tries": len(choice.attempts), **choice.summary()})  # fmt: skip
    val, val_labels = load_val(PRESETS[args.model], args.val_limit)
    top1 = {name: accuracy(lambda x, m=m: m(x)[0], val, val_labels, 1)[0]
            for name, m in models.items()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = SHARED / "models" / f"{args.model}.onnx"
        ort_q = ort_int8_model(onnx_path, calib[:256], Path(tmp) / "int8.onnx")
        sessions = {"ort fp32": ort_session(onnx_path, 1, False),
                    "ort int8": ort_session(ort_q, 1, False)}  # fmt: skip
        runners = {name: (lambda x, m=m: m(x)) for name, m in models.items()}
        for name, s in sessions.items():
            runners[name] = lambda x, s=s: s.run(None, {"input": x})
            top1[name] = accuracy(lambda x, s=s: s.run(None, {"input": x})[0], val,
                                  val_labels, 1)[0]  # fmt: skip
        latency = interleaved(runners, np.ascontiguousarray(val[:1]), args.runs, 3)
    if args.json:  # first, so that the numbers outlive a failure to print them
        Path(args.json).write_text(json.dumps({"rows": rows, "top1": top1,
                                               "latency": latency}, indent=1))  # fmt: skip
    print_table(args, models, rows, top1, latency, fp32_bytes)
    for label, message in failed:
        print(f"\n{label}: no plan — {message}")


def print_table(args, models, rows, top1, latency, fp32_bytes) -> None:
    """The markdown table of the README."""
    int8 = latency.get("uniform-int8", float("nan"))  # nan: that row was not run
    print(f"\n{args.model} ({args.rounding} rounding): top-1 on {args.val_limit} val images; "
          "batch-1 latency, 1 thread, "
          f"medians of {args.runs} interleaved rounds\n")  # fmt: skip
    print(
        "| configuration | size (MB) | vs FP32 | latency (ms) | / irc INT8 | / ort INT8 "
        "| top-1 | Δ top-1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = top1["irc fp32"]
    names = ["irc fp32"] + [r["label"] for r in rows] + ["ort fp32", "ort int8"]
    for name in names:
        size = models[name].report().totals.bytes if name in models else None
        size_text = f"{size / 1e6:.2f}" if size else "-"
        ratio = f"{fp32_bytes / size:.2f}×" if size else "-"
        t = latency[name]
        print(
            f"| {name} | {size_text} | {ratio} | {t * 1e3:.2f} | {t / int8:.2f} | "
            f"{t / latency['ort int8']:.2f} | {top1[name]:.2f} | {top1[name] - base:+.2f} |"
        )


if __name__ == "__main__":
    main()
