"""irc INT8 against onnxruntime INT8 and both FP32s: end-to-end ratios and time per kind.

For each model and batch size, in one run: irc's uniform INT8 (``irc.stages``: the float
graph calibrated by its compiled program on ``--calib`` images of imagenet-calib256, then
``build_plan``), irc FP32, onnxruntime FP32 and onnxruntime INT8 as its documentation
recommends (``quant_pre_process``, then ``quantize_static``: QDQ, per-channel weights, the
same calibration images). The four run the same input in turn, one call each per round
(``irc.measure.interleaved_cpu``), on ``--threads`` threads; the table gives the medians of
wall time and of process CPU time, and the ratios of both (on a shared machine the CPU-time
ratio moves less). Then irc INT8's kernels per kind (``CompiledModel.profile`` medians):
milliseconds, share and GOP/s (2 · multiply-accumulates / time), and the time outside the
kernels (the model's median run alone minus the kernels' sum; a kernel's time includes
its call from the Python driver).

    python bench/bench_int8_latency.py [--models mobilenetv2_bn efficientnet_lite0_bn]
        [--batches 1 8] [--threads 1] [--runs 30] [--calib 64] [--out bench/results/x.md]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from irc.benchmark.peers import ort_int8_model, ort_session
from irc.calibration import load_folder
from irc.measure import interleaved_cpu
from irc.stages import build_plan, calibrate, float_graph
from irc.stats import op_macs

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}
RUNNERS = ("irc int8", "ort int8", "irc fp32", "ort fp32")


def cpu_name() -> str:
    """The CPU's model name, family/model and the vector features that matter here."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""

    def field(name):
        match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.M)
        return match.group(1).strip() if match else "?"

    flags = set(field("flags").split())
    wanted = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    features = ", ".join(f for f in wanted if f in flags) or "no AVX2"
    family = f"family {field('cpu family')} model {field('model')}"
    return f"{field('model name')} ({family}; {features})"


def kind_of(op) -> str:
    """The row of the per-kind table an op's kernel time goes to."""
    if op.kind == "qconv2d":
        cin = op.operands[0].type.shape[3 if op.attrs.get("layout") == "nhwc" else 1]
        if op.attrs["group"] > 1 and op.attrs["group"] == cin:
            return "depthwise"
        if op.operands[1].type.shape[2:] == (1, 1):
            return "pointwise"
        return "regular (stem)"
    return op.kind


def kernel_table(model, x, runs: int) -> list[tuple[str, int, float, float]]:
    """(kind, calls, seconds, multiply-accumulates) per kind, slowest first, and a last row
    for the time outside the kernels: the model's median time run alone (as the profile
    runs it, so both see the same caches) minus the kernels' sum."""
    alone = interleaved_cpu({"alone": model}, x, runs)["alone"][0]
    ops = {op.name or op.results[0].name: op for op in model.calls}
    rows: dict[str, list] = {}
    for timing in model.profile(x, runs=runs):
        op = ops[timing.op]
        row = rows.setdefault(kind_of(op), [0, 0.0, 0])
        row[0] += 1
        row[1] += timing.seconds
        row[2] += op_macs(op)  # the compiled shapes are static: the batch is counted
    table = sorted(((k, c, t, m) for k, (c, t, m) in rows.items()), key=lambda r: -r[2])
    inside = sum(r[2] for r in table)
    return [*table, ("outside the kernels", 0, alone - inside, 0)]


@dataclass
class Setup:
    """A shared model ready to compile: its file, calibration images and ranges, a batch."""

    path: Path
    graph: object  # the float graph
    calib: np.ndarray  # calibration images
    calibration: object  # their ranges (irc.calibrate)
    x: np.ndarray  # the first ``batch`` val images
    shape: dict  # the graph input's name → x's shape


def setup(name: str, batch: int, calib_count: int) -> Setup:
    """Model ``name`` of ../shared/models, calibrated on ``calib_count`` images of
    imagenet-calib256, with a batch of imagenet-val1300."""
    path = SHARED / "models" / f"{name}.onnx"
    preset = PRESETS[name]
    calib = load_folder(SHARED / "data" / "imagenet-calib256", preset, calib_count)
    x = load_folder(SHARED / "data" / "imagenet-val1300", preset, batch)
    graph = float_graph(path)
    calibration = calibrate(graph, calib, progress=False)
    return Setup(path, graph, calib, calibration, x, {graph.inputs[0].name: x.shape})


def measure(name: str, batch: int, threads: int, runs: int, calib_count: int, tmp: Path) -> str:
    """One model at one batch size: the markdown of its two tables."""
    s = setup(name, batch, calib_count)
    path, graph, calib, calibration, x, shape = (
        s.path,
        s.graph,
        s.calib,
        s.calibration,
        s.x,
        s.shape,
    )
    int8 = build_plan(graph, "int8", calibration, input_shapes=shape, num_threads=threads)
    fp32 = build_plan(graph, "fp32", None, input_shapes=shape, num_threads=threads)
    ort_q = ort_session(ort_int8_model(path, calib, tmp / f"{name}.int8.onnx"), threads)
    ort_f = ort_session(path, threads)
    feed = ort_f.get_inputs()[0].name
    runners = {
        "irc int8": int8,
        "ort int8": lambda a: ort_q.run(None, {feed: a}),
        "irc fp32": fp32,
        "ort fp32": lambda a: ort_f.run(None, {feed: a}),
    }
    times = interleaved_cpu(runners, x, runs, warmup=5)
    wall = {k: v[0] for k, v in times.items()}
    cpu = {k: v[1] for k, v in times.items()}
    lines = [
        f"**{name}**, batch {batch}, {threads} thread(s), {runs} interleaved rounds, "
        f"medians in ms (wall / process CPU)",
        "",
        "| " + " | ".join(RUNNERS) + " | irc int8 / ort int8 | irc int8 / irc fp32 |",
        "|" + "---:|" * (len(RUNNERS) + 2),
        "| "
        + " | ".join(f"{wall[r] * 1e3:.2f} / {cpu[r] * 1e3:.2f}" for r in RUNNERS)
        + f" | **{wall['irc int8'] / wall['ort int8']:.2f}** / "
        f"{cpu['irc int8'] / cpu['ort int8']:.2f}"
        f" | {wall['irc int8'] / wall['irc fp32']:.2f} / {cpu['irc int8'] / cpu['irc fp32']:.2f} |",
        "",
        "| irc int8 kernel kind | calls | ms | share | GOP/s |",
        "|---|---:|---:|---:|---:|",
    ]
    table = kernel_table(int8, x, runs)
    total = sum(r[2] for r in table)
    for kind, calls, seconds, macs in table:
        gops = f"{2 * macs / seconds / 1e9:.0f}" if macs and seconds > 0 else ""
        calls_text = str(calls) if calls else ""
        share = f"{100 * seconds / total:.0f}%"
        lines.append(f"| {kind} | {calls_text} | {seconds * 1e3:.3f} | {share} | {gops} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calib", type=int, default=64, help="calibration images (both tools)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    parts = [f"CPU: {cpu_name()}; numba {numba.__version__}, numpy {np.__version__}\n"]
    print(parts[0], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for batch in args.batches:
                part = measure(name, batch, args.threads, args.runs, args.calib, Path(tmp))
                print(part, flush=True)
                parts.append(part)
    if args.out:
        args.out.write_text("\n".join(parts))
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
