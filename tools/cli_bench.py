"""``irc bench MODEL --data DIR``: FP32, every strategy and onnxruntime, measured alike.

Writes ``OUT/STEM.md`` (the markdown table, also printed), ``OUT/STEM.json`` and the
Pareto plots ``OUT/STEM-size.png`` and ``OUT/STEM-latency.png`` (size and latency against
top-1). See ``irc.benchmark`` for what each row is and how it is measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from irc.benchmark import STRATEGIES, load_data, markdown, run_bench, write_json, write_plots
from irc.calibration.images import PRESETS
from irc.cli_io import positive_count
from irc.errors import InputError

EXAMPLES = """examples:
  irc bench mobilenetv2.onnx --data val/ --calib calib/ --preprocess torchvision
  irc bench model.onnx --data photos/ --labels photos/labels.txt --preprocess imagenet \\
      --strategies uniform-int8 auto --sizes 6 -o out/
"""


def add_bench_parser(sub) -> None:
    """The ``bench`` subcommand's parser."""
    p = sub.add_parser(
        "bench",
        help="measure FP32, every precision strategy and onnxruntime on labelled images",
        description=(
            "Compile MODEL at FP32 and with every precision strategy, quantize it with "
            "onnxruntime's quantize_static too, and measure each: top-1 on the labelled "
            "images, stored size, batch-1 latency (interleaved medians) and compile time. "
            "Prints a markdown table and writes it with JSON and Pareto plots to --out."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="an ONNX image classifier (input NCHW float32, logits out)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of labelled images")
    p.add_argument(
        "--labels", metavar="FILE", help="'file label' per line (default DIR/labels.txt)"
    )
    p.add_argument(
        "--calib",
        metavar="DIR",
        help="labelled calibration images (default: every other image of --data; the rest "
        "evaluate)",
    )
    p.add_argument("--preprocess", required=True, choices=sorted(PRESETS),
                   help="how images become input arrays")  # fmt: skip
    p.add_argument("--limit", type=positive_count, metavar="N", help="evaluate at most N images")
    p.add_argument("--calib-limit", type=positive_count, default=256, metavar="N",
                   help="calibrate on at most N images (default 256)")  # fmt: skip
    p.add_argument("--sample", type=positive_count, default=16, metavar="N",
                   help="calibration images for the sensitivity table (default 16)")  # fmt: skip
    p.add_argument("--strategies", nargs="*", default=list(STRATEGIES), choices=STRATEGIES,
                   metavar="NAME",
                   help=f"strategies to run (default: {', '.join(STRATEGIES)})")  # fmt: skip
    p.add_argument("--sizes", nargs="+", type=_ratio, default=[6.0, 8.0], metavar="X",
                   help="auto runs once per size budget FP32/X, with latency ≤ uniform INT8; "
                   "sals and sigma get the first (default 6 8)")  # fmt: skip
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="auto's top-1 drop budget, verified on the calibration images")  # fmt: skip
    p.add_argument("--auto-latency", type=float, default=1.0, metavar="RATIO",
                   help="auto's latency budget as a ratio to uniform INT8 (default 1.0; 0: "
                   "none)")  # fmt: skip
    p.add_argument("--rounding", default="best", choices=("nearest", "gptq", "best"),
                   help="weight rounding of the integer layers (default best: per layer and "
                   "precision the better of nearest and GPTQ, as measured, like irc compile "
                   "--strategy)")  # fmt: skip
    p.add_argument("--runs", type=positive_count, default=30, metavar="N",
                   help="latency rounds, each configuration once a round (default 30)")  # fmt: skip
    p.add_argument("--threads", type=positive_count, default=1, metavar="N",
                   help="threads of every runtime (default 1)")  # fmt: skip
    p.add_argument("--no-peers", action="store_true", help="leave onnxruntime out")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default bench-STEM)")


def cmd_bench(args) -> int:
    """Run the benchmark, print the table and write the files."""
    model = Path(args.model)
    if not model.is_file():
        raise InputError(f"bench: model {str(model)!r} does not exist")
    stem = model.stem
    out = Path(args.out or f"bench-{stem}")
    start = time.perf_counter()
    data = load_data(args.data, args.preprocess, args.labels, args.calib, args.limit,
                     args.calib_limit)  # fmt: skip
    _log(f"{len(data.eval)} evaluation and {len(data.calib)} calibration images")
    result = run_bench(model, data, strategies=args.strategies, sizes=args.sizes,
                       max_drop=args.max_drop, auto_latency=args.auto_latency or None,
                       sample=args.sample, rounding=args.rounding,
                       runs=args.runs, threads=args.threads, peers=not args.no_peers,
                       log=_log)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    (out / f"{stem}.md").write_text(table)
    write_json(result, out / f"{stem}.json")
    plots, why_not = write_plots(result, out, stem)
    print("\n" + table)
    written = [out / f"{stem}.md", out / f"{stem}.json", *plots]
    print("wrote " + ", ".join(str(p) for p in written))
    if why_not:
        print(f"no plots: {why_not}")
    _log(f"bench took {time.perf_counter() - start:.0f} s")
    return 0


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _ratio(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = 0.0
    if x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a compression ratio > 1, got '{text}'")
    return x
