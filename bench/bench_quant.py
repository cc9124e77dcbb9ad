"""Latency of irc's integer models against onnxruntime INT8 and FP32, at batch 1.

irc compiles the model at uniform INT8 (and INT4 / INT2) from one calibration on the
calibration images (``irc.stages``: the float graph, calibrated by its compiled program);
onnxruntime runs the FP32 model and an INT8 model made by its own ``quantize_static``
(QDQ format, per-channel weights, the same calibration images). All of them run the same
input alternately, one call each per round, after a warm-up; the tables give medians and
ratios to onnxruntime. A second table compares irc's packed INT4 / INT2 kernels with
its INT8 ones on the same layers (per-kernel medians from ``CompiledModel.profile``).

    python bench/bench_quant.py [--model mobilenetv2_bn] [--threads 1 2] [--runs 30]
        [--calib-limit 32]

Set ``OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4`` for runs with two threads (see
bench_float.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from irc.benchmark.peers import ort_int8_model, ort_session
from irc.calibration import load_folder
from irc.measure import interleaved
from irc.opdef import has_trait
from irc.stages import build, build_plan, calibrate, float_graph

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PRESETS = {"mobilenetv2_bn": "torchvision", "efficientnet_lite0_bn": "efficientnet-lite"}


def layer_times(model, x, runs: int) -> dict[str, float]:
    """Per integer-layer kind and form, the summed median kernel time (seconds)."""
    groups: dict[str, float] = {}
    ops = {op.name or op.results[0].name: op for op in model.calls}
    for row in model.profile(x, runs=runs):
        op = ops.get(row.op)
        if op is None or not has_trait(op.kind, "integer-layer"):
            continue
        if op.kind == "qgemm":
            form = "qgemm"
        elif op.attrs["group"] > 1:
            form = "qconv2d depthwise"
        elif op.operands[1].type.shape[2:] == (1, 1):
            form = "qconv2d pointwise"
        else:
            form = "qconv2d regular"
        groups[form] = groups.get(form, 0.0) + row.seconds
    return groups


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_bn")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib-limit", type=int, default=32)
    args = parser.parse_args(argv)

    path = SHARED / "models" / f"{args.model}.onnx"
    preset = PRESETS[args.model]
    calib = load_folder(SHARED / "data" / "imagenet-calib256", preset, args.calib_limit)
    x = load_folder(SHARED / "data" / "imagenet-val1300", preset, 1)
    print(f"calibration: {len(calib)} images", file=sys.stderr)
    graph = float_graph(path)
    calibration = calibrate(graph, calib, progress=False)
    shape = {graph.inputs[0].name: x.shape}
    with tempfile.TemporaryDirectory() as tmp:
        ort_int8 = ort_int8_model(path, calib, Path(tmp) / "int8.onnx")
        rows, layer_rows = [], {}
        for threads in args.threads:
            models = {
                p: build_plan(graph, p, calibration, input_shapes=shape, num_threads=threads)
                for p in ("int8", "int4", "int2")
            }
            fp32 = build(graph, num_threads=threads)
            ort_fp32 = ort_session(path, threads, spin=False)
            ort_q = ort_session(ort_int8, threads, spin=False)
            runners = {
                "irc int8": lambda a, m=models["int8"]: m(a),
                "ort fp32": lambda a, s=ort_fp32: s.run(None, {"input": a}),
                "ort int8": lambda a, s=ort_q: s.run(None, {"input": a}),
                "irc fp32": lambda a, m=fp32: m(a),
                "irc int4": lambda a, m=models["int4"]: m(a),
                "irc int2": lambda a, m=models["int2"]: m(a),
            }
            medians = interleaved(runners, x, args.runs, args.warmup)
            rows.append((threads, medians))
            for p, model in models.items():
                layer_rows[(threads, p)] = layer_times(model, x, args.runs)
            print(f"  {threads} thread(s): " + ", ".join(
                f"{k} {v * 1e3:.2f} ms" for k, v in medians.items()), file=sys.stderr)  # fmt: skip

    print(f"\n{args.model}, batch 1, {args.runs} interleaved rounds, medians (ms)")
    names = list(rows[0][1])
    print("\n| threads | " + " | ".join(names) + " | irc int8 / ort fp32 | irc int8 / ort int8 |")
    print("|---:|" + "---:|" * (len(names) + 2))
    for threads, m in rows:
        cells = " | ".join(f"{m[n] * 1e3:.2f}" for n in names)
        print(f"| {threads} | {cells} | {m['irc int8'] / m['ort fp32']:.2f} | "
              f"{m['irc int8'] / m['ort int8']:.2f} |")  # fmt: skip
    print("\nirc integer layers by form: summed kernel medians (ms), packed vs int8")
    print("\n| threads | form | int8 | int4 | int2 | int4/int8 | int2/int8 |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        base = layer_rows[(threads, "int8")]
        for form in sorted(base):
            t8, t4, t2 = (layer_rows[(threads, p)].get(form, 0.0) for p in ("int8", "int4", "int2"))
            print(f"| {threads} | {form} | {t8 * 1e3:.2f} | {t4 * 1e3:.2f} | {t2 * 1e3:.2f} | "
                  f"{t4 / t8:.2f} | {t2 / t8:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
