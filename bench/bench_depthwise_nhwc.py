"""Time the int8 depthwise kernels: NCHW ``qdepthwise`` vs channels-last ``qdepthwise_nhwc``.

On MobileNetV2's depthwise 3×3 layers (C channels, H = W input, stride 1 or 2, pads 1)
and EfficientNet-Lite0's 5×5 ones (pads 2, or 1 before and 2 after at stride 2), one
image, with 8-bit weights, per-channel realistic multipliers and a relu6-style clamp,
prints per layer the median time of each kernel (ms) and its GOP/s = 2·MACs / time, then
the totals over the network's layers. One Numba thread; the two kernels are called
interleaved round-robin, so a noisy neighbour hits both alike. Outputs are checked to agree
bit for bit (NHWC against the transposed NCHW result) before timing.

    python bench/bench_depthwise_nhwc.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402

from irc import quant  # noqa: E402
from irc.backends.numba.int_depthwise import qdepthwise  # noqa: E402
from irc.backends.numba.int_depthwise_nhwc import qdepthwise_nhwc  # noqa: E402
from irc.measure import interleaved  # noqa: E402

# (channels, input height = width, stride, kernel, pad before, pad after): MobileNetV2's
# depthwise 3×3 layers, then EfficientNet-Lite0's 5×5 ones
SHAPES = [(32, 112, 1, 3, 1, 1), (96, 112, 2, 3, 1, 1), (144, 56, 1, 3, 1, 1),
          (144, 56, 2, 3, 1, 1), (192, 28, 1, 3, 1, 1), (192, 28, 2, 3, 1, 1),
          (384, 14, 1, 3, 1, 1), (576, 14, 1, 3, 1, 1), (576, 14, 2, 3, 1, 1),
          (960, 7, 1, 3, 1, 1),
          (144, 56, 2, 5, 1, 2), (240, 28, 1, 5, 2, 2), (480, 14, 1, 5, 2, 2),
          (672, 14, 1, 5, 2, 2), (672, 14, 2, 5, 1, 2), (1152, 7, 1, 5, 2, 2)]  # fmt: skip
X_ZERO, ZP, LO, HI = -3, -128, -128, 60  # relu6-style: [0, 6] at the output scale


def out_size(size: int, stride: int, k: int, pad0: int, pad1: int) -> int:
    """Output height (= width) of a k×k convolution with these pads and stride."""
    return (size + pad0 + pad1 - k) // stride + 1


def operands(c: int, size: int, stride: int, k: int = 3, pad0: int = 1, pad1: int = 1,
             seed: int = 0):  # fmt: skip
    """NCHW and NHWC inputs, the weight rows, bias, multiplier, shift and both outputs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, c, size, size)).astype(np.int8)
    w = rng.integers(-127, 128, (c, k * k)).astype(np.int8)
    w_scales = (rng.random(c) * 0.05 + 1e-3).astype(np.float32)
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    mult, shift = quant.layer_multipliers(0.02, w_scales, 0.05)
    osize = out_size(size, stride, k, pad0, pad1)
    out = np.zeros((1, c, osize, osize), np.int8)
    out_nhwc = np.zeros((1, osize, osize, c), np.int8)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    mult, shift = np.asarray(mult, np.int32), np.asarray(shift, np.int32)
    return x, x_nhwc, w, bias, mult, shift, out, out_nhwc


def bind(kernel, x, w, bias, mult, shift, out, params):
    """A call of ``kernel`` on these operands (8-bit weights), as ``interleaved`` makes it
    (its one argument unused)."""
    return lambda _: kernel(x, w, 8, bias, mult, shift, out, *params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    numba.set_num_threads(1)
    print(f"{'C':>5} {'HxW':>8} {'k':>2} {'s':>2} {'NCHW ms':>9} {'GOP/s':>7} {'NHWC ms':>9}"
          f" {'GOP/s':>7} {'speedup':>8}")  # fmt: skip
    total = {"nchw": 0.0, "nhwc": 0.0}
    total_ops = 0.0
    for c, size, stride, k, pad0, pad1 in SHAPES:
        x, x_nhwc, w, bias, mult, shift, out, out_nhwc = operands(c, size, stride, k, pad0, pad1)
        params = (k, k, stride, stride, pad0, pad0, 1, 1, X_ZERO, ZP, LO, HI)
        calls = {
            "nchw": bind(qdepthwise, x, w, bias, mult, shift, out, params),
            "nhwc": bind(qdepthwise_nhwc, x_nhwc, w, bias, mult, shift, out_nhwc, params),
        }
        for fn in calls.values():
            fn(None)
        np.testing.assert_array_equal(out_nhwc, out.transpose(0, 2, 3, 1))
        t = interleaved(calls, None, args.runs)
        ops = 2.0 * c * out.shape[2] * out.shape[3] * k * k
        total_ops += ops
        for name in total:
            total[name] += t[name]
        nchw, nhwc = t["nchw"], t["nhwc"]
        print(f"{c:>5} {size:>4}x{size:<3} {k:>2} {stride:>2} {nchw * 1e3:>9.3f}"
              f" {ops / nchw / 1e9:>7.2f} {nhwc * 1e3:>9.3f} {ops / nhwc / 1e9:>7.2f}"
              f" {nchw / nhwc:>7.2f}x")  # fmt: skip
    print(f"{'total':>22} {total['nchw'] * 1e3:>9.3f} {total_ops / total['nchw'] / 1e9:>7.2f}"
          f" {total['nhwc'] * 1e3:>9.3f} {total_ops / total['nhwc'] / 1e9:>7.2f}"
          f" {total['nchw'] / total['nhwc']:>7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
