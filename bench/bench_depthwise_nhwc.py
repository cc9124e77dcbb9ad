"""Time the int8 depthwise kernels: NCHW ``qdepthwise`` vs channels-last ``qdepthwise_nhwc``.

On MobileNetV2's depthwise 3×3 layers (C channels, H = W input, stride 1 or 2, pads 1,
one image), with 8-bit weights, per-channel realistic multipliers and a relu6-style clamp,
prints per layer the median time of each kernel (ms) and its GOP/s = 2·MACs / time, then
the totals over the network's layers. One Numba thread; the two kernels are called
interleaved round-robin, so a noisy neighbour hits both alike. Outputs are checked to agree
bit for bit (NHWC against the transposed NCHW result) before timing.

    python bench/bench_depthwise_nhwc.py [--runs 40] [--budget 2.0]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from irc import quant  # noqa: E402
from irc.backends.numba.int_depthwise import qdepthwise  # noqa: E402
from irc.backends.numba.int_depthwise_nhwc import qdepthwise_nhwc  # noqa: E402

# (channels, input height = width, stride) of MobileNetV2's depthwise 3×3 layers
SHAPES = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2),
          (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]  # fmt: skip
X_ZERO, ZP, LO, HI = -3, -128, -128, 60  # relu6-style: [0, 6] at the output scale


def operands(c: int, size: int, stride: int, seed: int = 0):
    """NCHW and NHWC inputs, the weight rows, bias, multiplier, shift and both outputs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, c, size, size)).astype(np.int8)
    w = rng.integers(-127, 128, (c, 9)).astype(np.int8)
    w_scales = (rng.random(c) * 0.05 + 1e-3).astype(np.float32)
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    mult, shift = quant.layer_multipliers(0.02, w_scales, 0.05)
    osize = (size + 2 - 3) // stride + 1
    out = np.zeros((1, c, osize, osize), np.int8)
    out_nhwc = np.zeros((1, osize, osize, c), np.int8)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    mult, shift = np.asarray(mult, np.int32), np.asarray(shift, np.int32)
    return x, x_nhwc, w, bias, mult, shift, out, out_nhwc


def bind(kernel, x, w, bias, mult, shift, out, params):
    """A zero-argument call of ``kernel`` on these operands (8-bit weights)."""
    return lambda: kernel(x, w, 8, bias, mult, shift, out, *params)


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
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per kernel and layer")
    args = parser.parse_args()
    numba.set_num_threads(1)
    print(f"{'C':>5} {'HxW':>8} {'s':>2} {'NCHW ms':>9} {'GOP/s':>7} {'NHWC ms':>9} {'GOP/s':>7}"
          f" {'speedup':>8}")  # fmt: skip
    total = {"nchw": 0.0, "nhwc": 0.0}
    total_ops = 0.0
    for c, size, stride in SHAPES:
        x, x_nhwc, w, bias, mult, shift, out, out_nhwc = operands(c, size, stride)
        params = (3, 3, stride, stride, 1, 1, 1, 1, X_ZERO, ZP, LO, HI)
        calls = {
            "nchw": bind(qdepthwise, x, w, bias, mult, shift, out, params),
            "nhwc": bind(qdepthwise_nhwc, x_nhwc, w, bias, mult, shift, out_nhwc, params),
        }
        for fn in calls.values():
            fn()
        np.testing.assert_array_equal(out_nhwc, out.transpose(0, 2, 3, 1))
        t = median_seconds(calls, args.runs, args.budget)
        ops = 2.0 * c * out.shape[2] * out.shape[3] * 9
        total_ops += ops
        for name in total:
            total[name] += t[name]
        nchw, nhwc = t["nchw"], t["nhwc"]
        print(f"{c:>5} {size:>4}x{size:<3} {stride:>2} {nchw * 1e3:>9.3f} {ops / nchw / 1e9:>7.2f}"
              f" {nhwc * 1e3:>9.3f} {ops / nhwc / 1e9:>7.2f} {nchw / nhwc:>7.2f}x")  # fmt: skip
    print(f"{'total':>19} {total['nchw'] * 1e3:>9.3f} {total_ops / total['nchw'] / 1e9:>7.2f}"
          f" {total['nhwc'] * 1e3:>9.3f} {total_ops / total['nhwc'] / 1e9:>7.2f}"
          f" {total['nchw'] / total['nhwc']:>7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
