"""Time the integer products: portable ``gemm_s8`` vs AVX2 ``gemm_s8_fast``, per weight width.

For each shape (M activation rows, N output channels, K reduction) prints GOPS = 2·M·N·K /
median time, single thread, for numpy's float32 matmul of the same shape (OpenBLAS sgemm, the
reference point) and for the portable and the SIMD integer products at 8, 4 and 2 bits.
Calls are interleaved round-robin so a noisy neighbour hits every column alike.

    python bench/bench_int_gemm.py [--runs 30] [--shapes 3136x24x144,1x1000x1280]
                                   [--no-portable] [--check]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from irc.backends.numba.int_gemm import gemm_s8  # noqa: E402
from irc.backends.numba.int_simd import HAVE_AVX2, gemm_s8_fast  # noqa: E402
from irc.quant import pack  # noqa: E402

SHAPES = [(3136, 24, 144), (196, 960, 160), (1, 1000, 1280), (49, 1280, 320), (196, 2304, 256)]
QMAX = {8: 127, 4: 7, 2: 1}


def operands(m: int, n: int, k: int, bits: int, seed: int = 0):
    """Random int8 activations, weight levels at ``bits`` and the kernel's weight array."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    levels = rng.integers(-QMAX[bits], QMAX[bits] + 1, (n, k)).astype(np.int8)
    w = levels if bits == 8 else pack(levels, bits)
    return a, levels, w


def median_seconds(calls: dict, runs: int, budget: float) -> dict:
    """Median wall time of each zero-argument call, interleaved, at most ``budget`` s each."""
    times = {name: [] for name in calls}
    for fn in calls.values():  # warm up (compile, caches)
        fn()
    for _ in range(runs):
        for name, fn in calls.items():
            if times[name] and sum(times[name]) > budget:
                continue
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--shapes", default=None, help="MxNxK,MxNxK,...")
    parser.add_argument("--no-portable", action="store_true", help="skip the slow portable loops")
    parser.add_argument("--check", action="store_true", help="compare results with numpy too")
    args = parser.parse_args()
    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    if not HAVE_AVX2:
        print("this CPU (or Numba target) has no AVX2: only the portable product runs")

    cols = ["f32 BLAS"]
    for bits in (8, 4, 2):
        if not args.no_portable:
            cols.append(f"port {bits}b")
        if HAVE_AVX2:
            cols.append(f"simd {bits}b")
    print(f"{'M x N x K':>18} " + " ".join(f"{c:>9}" for c in cols) + "   (GOPS, median)")
    for m, n, k in shapes:
        ops = 2.0 * m * n * k
        af = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
        bf = np.random.default_rng(2).standard_normal((k, n), dtype=np.float32)
        calls = {"f32 BLAS": lambda af=af, bf=bf: af @ bf}
        for bits in (8, 4, 2):
            a, levels, w = operands(m, n, k, bits)
            acc = np.zeros((m, n), np.int32)
            if not args.no_portable:
                calls[f"port {bits}b"] = lambda a=a, w=w, b=bits, k=k, acc=acc: gemm_s8(
                    a, w, b, k, acc
                )
            if HAVE_AVX2:
                calls[f"simd {bits}b"] = lambda a=a, w=w, b=bits, k=k, acc=acc: gemm_s8_fast(
                    a, w, b, k, acc
                )
                if args.check:
                    gemm_s8_fast(a, w, bits, k, acc)
                    ref = (a.astype(np.int64) @ levels.astype(np.int64).T).astype(np.int32)
                    assert np.array_equal(acc, ref), (m, n, k, bits)
        secs = median_seconds(calls, args.runs, budget=3.0)
        row = " ".join(f"{ops / secs[c] / 1e9:9.1f}" for c in cols)
        print(f"{f'{m} x {n} x {k}':>18} {row}", flush=True)


if __name__ == "__main__":
    main()
