"""``auto`` under size budgets alone (FP32/6, FP32/8), one rounding: top-1 on val1300.

The sensitivity table, calibration and cost model are ``bench_strategies.prepare``'s (the
same ``--table-cache`` files, so a table measured there is reused here); each plan is
chosen and verified by ``irc.decision.choose`` with no latency budget, compiled, and
scored on all 1300 images of imagenet-val1300 at batch 1. This is issue 7's measure:
``auto`` at ≥ 6× within 0.5 points of FP32, at ≥ 8× within 1.0.

    python bench/bench_size_budgets.py --model mobilenetv2_bn --rounding gptq
        [--method minmax] [--sizes 6 8] [--table-cache DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_strategies import PRESETS, prepare
from eval_accuracy import load_val

from irc.benchmark.measure import accuracy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn", choices=sorted(PRESETS))
    parser.add_argument("--rounding", default="gptq", choices=("nearest", "gptq", "best"))
    parser.add_argument("--method", default="minmax", help="activation calibration method")
    parser.add_argument("--sizes", type=float, nargs="+", default=[6, 8],
                        help="budgets as FP32 bytes / N")  # fmt: skip
    parser.add_argument("--sample", type=int, default=32, help="sensitivity images")
    parser.add_argument("--table-cache", type=Path, help="reuse / keep sensitivity tables here")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    import irc
    from irc.decision import Budgets
    from irc.decision.choose import choose

    graph, _, calibration, images, labels, table, cost = prepare(
        args.model, args.sample, args.table_cache, args.rounding, args.method
    )
    float_model = irc.compile(graph, pipeline="", num_threads=1)
    fp32 = float_model.report().totals.fp32_bytes
    val, val_labels = load_val(PRESETS[args.model], 1300)
    base = accuracy(lambda x: float_model(x)[0], val, val_labels, 1)[0]
    rows = {"fp32": {"top1": base}}
    for ratio in args.sizes:
        start = time.perf_counter()
        choice = choose(graph, calibration, images[: args.sample], strategy="auto",
                        budgets=Budgets(max_bytes=int(fp32 / ratio)),
                        labels=labels[: args.sample], table=table, cost=cost, num_threads=1,
                        progress=False)  # fmt: skip
        counts: dict[str, int] = {}
        for p in choice.decision.plan.values():
            counts[p] = counts.get(p, 0) + 1
        top1 = accuracy(lambda x, m=choice.model: m(x)[0], val, val_labels, 1)[0]
        size = choice.model.report().totals
        rows[str(ratio)] = dict(top1=top1, ratio=size.ratio, counts=counts,
                                plan=choice.decision.plan)  # fmt: skip
        print(f"{args.model} {args.rounding} {args.method} FP32/{ratio:g}: top-1 {top1:.2f} "
              f"({top1 - base:+.2f} against FP32), "
              f"{size.ratio:.3f}×, {counts}, {time.perf_counter() - start:.0f} s",
              flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
