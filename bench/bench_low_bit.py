"""irc at INT4 and INT2 against irc at INT8: whole models, then layer by layer.

For each model and batch size, in one run: irc's uniform INT8, INT4 and INT2 programs
(``irc.stages``: the float graph calibrated by its compiled program on ``--calib`` images of
imagenet-calib256, then ``build_plan``) run the same input in turn (``interleaved_cpu``,
medians of wall and process CPU time), and their ratios to INT8. Then each layer's kernel
time at every precision (``CompiledModel.profile`` medians) with its ratio to INT8, the
layers ordered by multiply-accumulates per INT8 weight byte: the first rows (the classifier,
the 7×7 layers at batch 1) read the most weight per unit of work, where fewer weight bytes
can pay; the last rows are bound by arithmetic.

    python bench/bench_low_bit.py [--models mobilenetv2_bn efficientnet_lite0_bn]
        [--batches 1] [--threads 1] [--runs 30] [--calib 64] [--rows 12] [--out x.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numba
import numpy as np
from bench_int8_latency import PRESETS, cpu_name, setup

from irc.measure import interleaved_cpu
from irc.stages import build_plan
from irc.stats import op_macs

PRECISIONS = ("int8", "int4", "int2")
LAYERS = ("qconv2d", "qgemm")


def layer_times(model, x, runs: int) -> dict[str, tuple[float, object]]:
    """{layer name: (median kernel seconds, op)} of the model's integer layers."""
    ops = {op.name or op.results[0].name: op for op in model.calls}
    return {t.op: (t.seconds, ops[t.op]) for t in model.profile(x, runs=runs) if t.kind in LAYERS}


def measure(name: str, batch: int, threads: int, runs: int, calib_count: int, rows: int) -> str:
    """One model at one batch size: the markdown of its two tables."""
    s = setup(name, batch, calib_count)
    graph, calibration, x, shape = s.graph, s.calibration, s.x, s.shape
    models = {
        p: build_plan(graph, p, calibration, input_shapes=shape, num_threads=threads)
        for p in PRECISIONS
    }
    times = interleaved_cpu(models, x, runs, warmup=5)
    wall = {p: t[0] for p, t in times.items()}
    cpu = {p: t[1] for p, t in times.items()}
    lines = [
        f"**{name}**, batch {batch}, {threads} thread(s), {runs} interleaved rounds, "
        "medians in ms (wall / process CPU)",
        "",
        "| " + " | ".join(f"irc {p}" for p in PRECISIONS) + " | int4 / int8 | int2 / int8 |",
        "|" + "---:|" * (len(PRECISIONS) + 2),
        "| "
        + " | ".join(f"{wall[p] * 1e3:.2f} / {cpu[p] * 1e3:.2f}" for p in PRECISIONS)
        + f" | **{wall['int4'] / wall['int8']:.2f}** / {cpu['int4'] / cpu['int8']:.2f}"
        f" | {wall['int2'] / wall['int8']:.2f} / {cpu['int2'] / cpu['int8']:.2f} |",
        "",
    ]
    per = {p: layer_times(m, x, runs) for p, m in models.items()}
    layers = []
    for layer, (seconds, op) in per["int8"].items():
        weight_bytes = int(np.prod(op.operands[1].type.shape))
        layers.append((op_macs(op) / weight_bytes, layer, seconds))
    layers.sort()
    lines += [
        f"Layers, fewest multiply-accumulates per INT8 weight byte first ({rows} of "
        f"{len(layers)}, then the sum of all):",
        "",
        "| layer | MAC / weight byte | int8 µs | int4 µs | int2 µs | int4 / int8 | int2 / int8 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    totals = dict.fromkeys(PRECISIONS, 0.0)
    for index, (intensity, layer, seconds) in enumerate(layers):
        t = {p: per[p][layer][0] for p in PRECISIONS}
        for p in PRECISIONS:
            totals[p] += t[p]
        if index < rows:
            lines.append(
                f"| {layer} | {intensity:.0f} | "
                + " | ".join(f"{t[p] * 1e6:.1f}" for p in PRECISIONS)
                + f" | {t['int4'] / seconds:.2f} | {t['int2'] / seconds:.2f} |"
            )
    lines.append(
        "| **all layers** | | "
        + " | ".join(f"{totals[p] * 1e6:.0f}" for p in PRECISIONS)
        + f" | **{totals['int4'] / totals['int8']:.2f}** | {totals['int2'] / totals['int8']:.2f} |"
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calib", type=int, default=64, help="calibration images")
    parser.add_argument("--rows", type=int, default=12, help="layers listed per model")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    parts = [f"CPU: {cpu_name()}; numba {numba.__version__}, numpy {np.__version__}\n"]
    print(parts[0], flush=True)
    for name in args.models:
        for batch in args.batches:
            part = measure(name, batch, args.threads, args.runs, args.calib, args.rows)
            print(part, flush=True)
            parts.append(part)
    if args.out:
        args.out.write_text("\n".join(parts))
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
