"""The default thread setting against one thread, on an idle and on a busy machine.

A compiled MobileNetV2 INT8 (calibrated on ``--calib`` images of imagenet-calib256) is
saved, then loaded by one worker process per setting: the default (each call on 1 or all
threads, whichever was faster lately), ``num_threads=1`` and all threads fixed. Separate
processes, because OpenMP's thread pool is per process: an all-thread model's spinning
threads would slow a one-thread model beside it. The workers take turns, ``--block`` calls
each, in an order rotated every turn, for ``--rounds`` calls in all, so that the machine's
load falls on all of them alike; each reports its mean, median and 90th percentile wall time
and its calls per thread count. Workers run with irc's OpenMP spin count and with libgomp's
default (``GOMP_SPINCOUNT=300000``, what irc used before), on the machine as it is ("as is",
its load average noted) and with one busy-looping process per core beside them ("busy").

    python bench/bench_threads.py [--rounds 400] [--block 20] [--calib 16]
        [--out bench/results/threads.md]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_int8_latency import cpu_name

import irc
from irc.calibration import load_folder

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SETTINGS = ("default", "1 thread", "all threads")
SPINS = {"irc (10000)": None, "libgomp default (300000)": "300000"}


def compile_model(path: Path, images: int) -> None:
    """MobileNetV2 INT8, calibrated on ``images`` calibration images, saved to ``path``."""
    data = load_folder(SHARED / "data" / "imagenet-calib256", "torchvision", limit=images)
    model = irc.compile(SHARED / "models" / "mobilenetv2_bn.onnx", precision="int8",
                        calibration=data, progress=False)  # fmt: skip
    model.save(path)


SETTING_THREADS = {"default": None, "1 thread": 1, "all threads": "all"}


def worker(path: str, setting: str) -> None:
    """Serve one setting: for each line ``N`` on stdin run N calls and print their wall
    times (ms) and the model's calls per thread count as one JSON line; stop at EOF."""
    threads = SETTING_THREADS[setting]
    if threads == "all":
        threads = irc.load(path, warmup=False).num_threads
    model = irc.load(path, num_threads=threads)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for _ in range(3):
        model(x)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
        counts = {str(k): v for k, v in model.calls_by_threads.items()}
        print(json.dumps({"times": times, "calls_by_threads": counts}), flush=True)


def _spin() -> None:
    while True:
        pass


def start_worker(path: Path, setting: str, spin: str | None) -> subprocess.Popen:
    """A worker process for ``setting``, with ``GOMP_SPINCOUNT=spin`` when given, ready."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if spin is not None:
        env["GOMP_SPINCOUNT"] = spin
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", str(path), "--setting", setting],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    json.loads(process.stdout.readline())  # {"ready": true}
    return process


def run_settings(path: Path, rounds: int, block: int, spin: str | None) -> dict:
    """Each setting's statistics over ``rounds`` calls made in turns of ``block``."""
    workers = {s: start_worker(path, s, spin) for s in SETTINGS}
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    counts: dict[str, dict] = {}
    try:
        for turn in range(rounds // block):
            order = SETTINGS[turn % len(SETTINGS) :] + SETTINGS[: turn % len(SETTINGS)]
            for setting in order:  # rotated: no setting always follows the same one
                process = workers[setting]
                process.stdin.write(f"{block}\n")
                process.stdin.flush()
                reply = json.loads(process.stdout.readline())
                times[setting] += reply["times"]
                counts[setting] = reply["calls_by_threads"]
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait()
    return {
        s: {"mean": float(np.mean(t)), "median": float(np.median(t)),
            "p90": float(np.percentile(t, 90)), "calls_by_threads": counts[s]}
        for s, t in times.items()
    }  # fmt: skip


def measure(path: Path, rounds: int, block: int) -> dict:
    """{(machine, spin): statistics per setting} for the machine as is and busy."""
    results = {}
    for machine in ("as is", "busy"):
        hogs = []
        if machine == "busy":
            hogs = [multiprocessing.Process(target=_spin, daemon=True)
                    for _ in range(os.cpu_count() or 1)]  # fmt: skip
            for hog in hogs:
                hog.start()
        try:
            for spin_name, spin in SPINS.items():
                load = os.getloadavg()[0]
                results[(machine, spin_name)] = run_settings(path, rounds, block, spin)
                print(f"{machine} (load {load:.1f}), spin {spin_name}: done", file=sys.stderr)
                results[(machine, spin_name)]["load"] = load
        finally:
            for hog in hogs:
                hog.terminate()
    return results


def table(results: dict, rounds: int, block: int) -> str:
    """The results as a Markdown table, with the ratio of each setting's mean to one
    thread's."""
    lines = [
        f"MobileNetV2 INT8, batch 1, {rounds} calls per setting in turns of {block}, one "
        f"process per setting; {cpu_name()}, {os.cpu_count()} cores. Wall time in ms. "
        "'busy': one busy-looping process per core beside the workers.",
        "",
        "| machine (load) | OpenMP spin | setting | mean | mean / 1 thread | median | p90 "
        "| calls per thread count |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for (machine, spin), result in results.items():
        one = result["1 thread"]["mean"]
        for setting in SETTINGS:
            r = result[setting]
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(r["calls_by_threads"].items()))
            lines.append(
                f"| {machine} ({result['load']:.1f}) | {spin} | {setting} | {r['mean']:.2f} | "
                f"{r['mean'] / one:.2f} | {r['median']:.2f} | {r['p90']:.2f} | {counts} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=400, help="calls per setting")
    parser.add_argument("--block", type=int, default=20, help="calls per turn")
    parser.add_argument("--calib", type=int, default=16, help="calibration images")
    parser.add_argument("--out", type=Path, help="write the table here too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.setting)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenetv2-int8.ircm"
        compile_model(path, args.calib)
        text = table(measure(path, args.rounds, args.block), args.rounds, args.block)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
