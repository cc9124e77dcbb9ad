"""Time the channels-last int8 conv (``int_conv_nhwc.qconv_nhwc``) against the NCHW one.

On MobileNetV2's pointwise layers (batch 1, given as output side, K = C_in, O = C_out) and
its stem (224² input, 3 → 32, 3×3, stride 2, pad 1), int8 weights, realistic per-channel
requantization: the old ``int_conv.qconv_gemm`` on NCHW with the tile and pointwise flag
``kernels_quant.build_qconv2d`` would pass, against ``qconv_nhwc`` on the same data in NHWC
(its automatic path; ``--paths`` adds each forced product: GEMM, 8- and 16-lane outer
product and the u8 × s8 ``vpdpbusd`` quad kernel where the host has them). For reference,
``int_pointwise.qpointwise`` (what build_qconv2d runs for NCHW pointwise layers with K ≤ 64
on AVX2) is timed too. Every result is checked equal to the old one. One Numba thread
unless --threads; all runners are called in turn each round (interleaved), median of
--runs rounds. Prints per layer ms and GOP/s (2·MACs / time), and the totals.

    .venv/bin/python bench/bench_conv_nhwc.py [--runs 30] [--threads 1] [--paths] [--bits 8]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from irc import quant
from irc.backends.numba import int_conv_nhwc as nhwc
from irc.backends.numba import kernels_quant
from irc.backends.numba.int_common import weight_sums
from irc.backends.numba.int_conv import qconv_gemm
from irc.backends.numba.int_pointwise import MAX_K, qpointwise
from irc.backends.numba.int_simd import HAVE_AVX2

# (output side, K, O) of MobileNetV2's pointwise convs
POINTWISE = [
    (112, 32, 16), (112, 16, 96), (56, 96, 24), (56, 24, 144), (56, 144, 24), (28, 144, 32),
    (28, 32, 192), (28, 192, 32), (14, 192, 64), (14, 64, 384), (14, 384, 64), (14, 384, 96),
    (14, 96, 576), (14, 576, 96), (7, 576, 160), (7, 160, 960), (7, 960, 160), (7, 960, 320),
    (7, 320, 1280),
]  # fmt: skip
X_ZERO, ZP, LO, HI = -3, -128, -128, 127  # a ReLU6-like clamp: out zero point at -128


def layers():
    """(name, NCHW input shape, weight shape, (kh, kw, sh, sw, top, left, bottom, right))."""
    for side, k, o in POINTWISE:
        yield f"pw {side}²·{k}→{o}", (1, k, side, side), (o, k, 1, 1), (1, 1, 1, 1, 0, 0, 0, 0)
    yield "stem 224²·3→32 3×3/2", (1, 3, 224, 224), (32, 3, 3, 3), (3, 3, 2, 2, 1, 1, 1, 1)


def old_tile(k, pixels):
    """The pixels per product tile ``build_qconv2d`` passes to ``qconv_gemm``."""
    low, high = kernels_quant._CONV_TILE_PIXELS
    tile = max(low, min(high, kernels_quant._CONV_TILE_BYTES // k))
    tile = min(tile, pixels) or 1
    tiles = -(-pixels // tile)
    return -(-pixels // tiles)


def runners(x_shape, w_shape, geometry, bits, rng, paths):
    """Name → (callable, NCHW result getter) for the layer; also its MACs."""
    n, cin, h, w = x_shape
    cout = w_shape[0]
    kh, kw, sh, sw, top, left, bottom, right = geometry
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    k = cin * kh * kw
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    levels = rng.choice(quant.weight_levels(bits), w_shape).astype(np.int8)
    wt = quant.pack(levels, bits) if bits < 8 else levels
    sums = weight_sums(wt, bits, k)
    bias = rng.integers(-20000, 20000, cout).astype(np.int32)
    mult = rng.integers(2**30, 2**31, cout).astype(np.int32)
    shift = np.full(cout, 31 + int(np.log2(np.sqrt(k) * 128 * 60 / 64)), np.int32)
    tail = (bias, mult, shift, sums)
    xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = np.empty((n, cout, oh, ow), np.int8)
    out_n = np.empty((n, oh, ow, cout), np.int8)
    pointwise = kh == kw == 1 and sh == sw == 1 and not any(geometry[4:])
    tile = old_tile(k, oh * ow)
    geo = (kh, kw, sh, sw, top, left, 1, 1)

    def old():
        qconv_gemm(x, wt, bits, *tail, out, *geo, 1, pointwise, tile, X_ZERO, ZP, LO, HI)

    def new(path=0):
        nhwc.qconv_nhwc(xn, wt, bits, *tail, out_n, *geo, 1, X_ZERO, ZP, LO, HI, path, 0)

    def nchw():
        return out

    def nhwc_result():
        return out_n.transpose(0, 3, 1, 2)

    runs = {"old gemm": (old, nchw), "nhwc": (new, nhwc_result)}
    if pointwise and k <= MAX_K and HAVE_AVX2:
        qp_out = np.empty_like(out)

        def old_pointwise():
            qpointwise(x, wt, bits, *tail, qp_out, X_ZERO, ZP, LO, HI)

        runs["old pw"] = (old_pointwise, lambda: qp_out)
    if paths:
        forced = [("nhwc gemm", nhwc.PATH_GEMM)]
        if HAVE_AVX2:
            forced.append(("nhwc o8", nhwc.PATH_OUTER8))
        if nhwc.HAVE_AVX512:
            forced.append(("nhwc o16", nhwc.PATH_OUTER16))
        if nhwc.HAVE_VNNI:
            forced.append(("nhwc vnni", nhwc.PATH_VNNI))
        for name, path in forced:
            runs[name] = (lambda path=path: new(path), nhwc_result)
    return runs, n * oh * ow * k * cout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bits", type=int, default=8, choices=(8, 4, 2))
    parser.add_argument("--paths", action="store_true", help="time each forced nhwc product too")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    totals: dict[str, float] = {}
    total_ops = 0
    header = None
    for name, x_shape, w_shape, geometry in layers():
        runs, macs = runners(x_shape, w_shape, geometry, args.bits, rng, args.paths)
        for fn, _ in runs.values():  # compile and warm up
            fn()
        want = runs["old gemm"][1]().copy()
        for key, (_fn, result) in runs.items():
            assert np.array_equal(result(), want), f"{name}: {key} differs from the old kernel"
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(args.runs):
            for key, (fn, _) in runs.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        medians = {key: float(np.median(ts)) for key, ts in times.items()}
        if header is None:
            keys = ["old gemm", "old pw", "nhwc"] + [k for k in runs if k.startswith("nhwc ")]
            header = keys
            cells = "".join(f"{key + ' ms':>14}{'GOP/s':>7}" for key in keys)
            print(f"{'layer':<24}{cells}{'speedup':>9}")
        total_ops += 2 * macs
        cells = ""
        for key in header:
            if key in medians:
                t = medians[key]
                totals[key] = totals.get(key, 0.0) + t
                cells += f"{t * 1e3:14.3f}{2 * macs / t / 1e9:7.1f}"
            else:
                # no such kernel for this layer: the total counts the old GEMM instead
                totals[key] = totals.get(key, 0.0) + medians["old gemm"]
                cells += f"{'-':>14}{'':>7}"
        print(f"{name:<24}{cells}{medians['old gemm'] / medians['nhwc']:9.2f}")
    cells = "".join(
        f"{totals[key] * 1e3:14.3f}{total_ops / totals[key] / 1e9:7.1f}" for key in header
    )
    print(f"{'total':<24}{cells}{totals['old gemm'] / totals['nhwc']:9.2f}")
    print("(old pw total: qpointwise where it applies, the old GEMM elsewhere, as build_qconv2d)")


if __name__ == "__main__":
    main()
