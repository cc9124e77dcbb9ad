"""Float32 latency of irc's compiled models against onnxruntime, and irc's compile time.

For each model × batch × thread count, irc (``irc.compile`` with the default pipeline and
``num_threads``) and onnxruntime (CPU provider, ``intra_op_num_threads`` the same count,
``inter_op_num_threads`` 1, all graph optimisations) run the same input alternately, one
call each per round, after a warm-up; the table shows medians and the ratio irc/ort.
onnxruntime's idle threads sleep rather than spin (``--ort-spin`` for its default): in
alternating calls a spinning pool takes the cores from the other library's next call.
Compile time of the first model (one thread, so the warm-up run inside it does not depend
on the thread count) is measured in fresh processes, first with an empty Numba
cache (``NUMBA_CACHE_DIR`` pointed at a new directory: every kernel compiles), then again
with that cache filled; and in-process, a second compile of the same graph (a driver cache
hit).

    python bench/bench_float.py [--models mobilenetv2_bn efficientnet_lite0_bn]
        [--batches 1 8] [--threads 1 2] [--runs 20] [--profile]

With more than one thread, irc runs two thread pools (Numba's OpenMP workers and
OpenBLAS's), and by default both spin while idle, taking the cores from each other: set
``OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4`` in the environment (both are read as
the libraries load, so they cannot be set from here) to make them sleep. The table's
header shows what was set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np

import irc
from irc.benchmark.peers import ort_session
from irc.compile import format_profile
from irc.measure import interleaved

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO.parent / "shared" / "models"

COMPILE_SNIPPET = """
import json, sys, time
start = time.perf_counter()
import irc
imported = time.perf_counter()
first = irc.compile(sys.argv[1], num_threads=1)
again = irc.compile(sys.argv[1], num_threads=1)
print(json.dumps({"import_irc": imported - start, "first": first.compile_seconds,
                  "second": again.compile_seconds, "hit": again.cache_hit}))
"""


def model_path(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    path = MODELS_DIR / (name if name.endswith(".onnx") else name + ".onnx")
    if not path.exists():
        sys.exit(f"model {name} not found (looked in {MODELS_DIR})")
    return path


def time_pair(irc_model, session, x: np.ndarray, runs: int, warmup: int):
    """Median seconds of irc and of onnxruntime, called alternately, and their max diff."""
    name = session.get_inputs()[0].name
    runners = {"irc": irc_model, "ort": lambda a: session.run(None, {name: a})}
    medians = interleaved(runners, x, runs, warmup)
    (ours,), (theirs,) = irc_model(x), runners["ort"](x)
    diff = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    return medians["irc"], medians["ort"], diff


def compile_times(path: Path) -> dict:
    """Compile ``path`` in fresh processes: empty Numba cache, then the filled one."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="irc-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            out = subprocess.run(
                [sys.executable, "-c", COMPILE_SNIPPET, str(path)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_bn", "efficientnet_lite0_bn"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument(
        "--ort-spin",
        action="store_true",
        help="let onnxruntime's idle threads spin (its default; they then slow irc's next call)",
    )
    parser.add_argument("--no-compile-time", action="store_true", help="skip the subprocesses")
    parser.add_argument("--profile", action="store_true", help="per-op medians at batch 1")
    args = parser.parse_args(argv)

    rows = []
    for name in args.models:
        path = model_path(name)
        for batch in args.batches:
            shape = (batch, 3, 224, 224)
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            for threads in args.threads:
                model = irc.compile(path, {"input": shape}, num_threads=threads)
                session = ort_session(path, threads, spin=args.ort_spin)
                ours, theirs, diff = time_pair(model, session, x, args.runs, args.warmup)
                rows.append((path.stem, batch, threads, ours, theirs, diff))
                print(
                    f"  {path.stem} b{batch} t{threads}: irc {ours * 1e3:.2f} ms, "
                    f"ort {theirs * 1e3:.2f} ms",
                    file=sys.stderr,
                )
                if args.profile and batch == 1:
                    print(f"\nprofile {path.stem} batch 1, {threads} thread(s):")
                    print(format_profile(model.profile(x, runs=args.runs), top=8))

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel ran
        layer = "(not started)"
    knobs = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    setting = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in knobs)
    print(f"\n{args.runs} interleaved runs, medians; Numba threading layer {layer}; {setting}")
    print("\n| model | batch | threads | irc ms | ort ms | irc/ort | max rel diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, batch, threads, ours, theirs, diff in rows:
        print(
            f"| {name} | {batch} | {threads} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} "
            f"| {ours / theirs:.2f} | {diff:.1e} |"
        )
    if not args.no_compile_time:
        path = model_path(args.models[0])
        times = compile_times(path)
        print(f"\ncompile time of {path.stem} (batch 1, default pipeline), fresh process:")
        print("| numba cache | import irc s | load s | passes+plan+bind s | warm-up s | total s |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, t in times.items():
            first = t["first"]
            warm = first["total"] - first["load"] - first["build"]
            print(
                f"| {label} | {t['import_irc']:.2f} | {first['load']:.2f} | "
                f"{first['build']:.2f} | {warm:.2f} | {first['total']:.2f} |"
            )
        second = times["warm"]["second"]
        print(
            f"\nsecond compile in the same process (driver cache hit: {times['warm']['hit']}): "
            f"{second['total']:.3f} s, of which loading the ONNX file {second['load']:.3f} s"
        )


if __name__ == "__main__":
    main()
