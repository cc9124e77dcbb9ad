"""Time the channels-last float conv2d kernels against the NCHW ones on MobileNetV2's convs.

For each of MobileNetV2's distinct conv shapes (or with ``--model`` EfficientNet-Lite0's;
batch 1, relu6 = clip 0..6 fused): the NCHW
kernel as ``kernels_conv.build_conv2d`` binds it (on NCHW data, column ``nchw``) and the
NHWC kernels of ``float_conv_nhwc`` on the same data channels last: forced onto OpenBLAS
(``PATH_BLAS``, column ``blas``), as planned with the weights prepared per call
(``per-call``) and as planned with them packed once (``pack_conv2d_nhwc``, as bound for
constant weights: column ``nhwc``, the "new" of the ratios); plus with ``--ort``
onnxruntime on a single-Conv+Clip ONNX model (NCHW) of every shape. One Numba thread
unless --threads, calls interleaved, median of --runs each; per shape ms, GFLOP/s (2 flops
per multiply-add) of ``nhwc``, its time ratios to NCHW and to onnxruntime, then totals per
form and overall. Each NHWC result is checked against the NCHW one first (the largest abs
difference printed).

    .venv/bin/python bench/bench_float_nhwc.py [--runs 50] [--threads 1] [--ort]
        [--model mobilenetv2|efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import os

import numba
import numpy as np

from irc.backends.numba.float_conv_nhwc import (
    PATH_AUTO,
    PATH_BLAS,
    pack_conv2d_nhwc,
    plan_conv2d_nhwc,
)
from irc.backends.numba.kernel_table import bind_kernel
from irc.ir import Graph
from irc.measure import interleaved
from irc.opdef import build
from irc.types import DType, TensorType

# (C, H, stride) of the 3×3 depthwise convs, (side, K, O) of the pointwise ones
DEPTHWISE = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2),
             (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]  # fmt: skip
POINTWISE = [(112, 32, 16), (112, 16, 96), (56, 24, 144), (56, 144, 24), (28, 32, 192),
             (14, 64, 384), (14, 576, 96), (7, 960, 320), (7, 320, 1280)]  # fmt: skip
# EfficientNet-Lite0: (C, H, stride, kernel) of the depthwise convs, pointwise as above; its
# stride-2 convs pad as TensorFlow's SAME (the extra row and column at the end)
LITE0_DEPTHWISE = [(32, 112, 1, 3), (96, 112, 2, 3), (144, 56, 1, 3), (144, 56, 2, 5),
                   (240, 28, 1, 5), (240, 28, 2, 3), (480, 14, 1, 3), (480, 14, 1, 5),
                   (672, 14, 1, 5), (672, 14, 2, 5), (1152, 7, 1, 5), (1152, 7, 1, 3)]  # fmt: skip
LITE0_POINTWISE = [(112, 32, 16), (112, 16, 96), (56, 96, 24), (56, 24, 144), (56, 144, 24),
                   (28, 144, 40), (28, 40, 240), (28, 240, 40), (14, 240, 80), (14, 80, 480),
                   (14, 480, 80), (14, 480, 112), (14, 112, 672), (14, 672, 112),
                   (7, 672, 192), (7, 192, 1152), (7, 1152, 192), (7, 1152, 320),
                   (7, 320, 1280)]  # fmt: skip
RELU6 = {"activation": "clip", "act_min": 0.0, "act_max": 6.0}


def cases(model="mobilenetv2"):
    """(form, x shape NCHW, w shape, attrs) of every benchmarked conv of ``model``
    (mobilenetv2 or efficientnet-lite0)."""
    lite = model == "efficientnet-lite0"
    stem = {"strides": (2, 2), "pads": (0, 0, 1, 1) if lite else (1, 1, 1, 1),
            "dilations": (1, 1), "group": 1}  # fmt: skip
    out = [("stem", (1, 3, 224, 224), (32, 3, 3, 3), stem)]
    depthwise = LITE0_DEPTHWISE if lite else [d + (3,) for d in DEPTHWISE]
    for c, h, s, k in depthwise:
        pads = (k // 2,) * 4
        if lite and s == 2:
            pads = (k // 2 - 1, k // 2 - 1, k // 2, k // 2)
        attrs = {"strides": (s, s), "pads": pads, "dilations": (1, 1), "group": c}
        out.append(("depthwise", (1, c, h, h), (c, 1, k, k), attrs))
    for side, k, o in LITE0_POINTWISE if lite else POINTWISE:
        attrs = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1}
        out.append(("pointwise", (1, k, side, side), (o, k, 1, 1), attrs))
    return out


def nchw_kernel(x_shape, w_shape, attrs):
    """The NCHW kernel ``build_conv2d`` binds for the conv (with bias and relu6), its op."""
    graph = Graph()
    operands = [
        graph.add_input("x", TensorType(DType.F32, x_shape)),
        graph.add_input("w", TensorType(DType.F32, w_shape)),
        graph.add_input("b", TensorType(DType.F32, (w_shape[0],))),
    ]
    op = build(graph, "conv2d", operands, {**attrs, **RELU6})
    return bind_kernel(op), op


def ort_session(x_shape, w, b, attrs, threads):
    """onnxruntime on one Conv + Clip(0, 6) (``bench_conv_kernels.ort_session``)."""
    from bench_conv_kernels import ort_session as make  # optional: needs onnxruntime

    return make(x_shape, w, b, attrs, True, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ort", action="store_true", help="also time onnxruntime")
    parser.add_argument("--model", default="mobilenetv2",
                        choices=["mobilenetv2", "efficientnet-lite0"])  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    totals: dict = {}
    names = ["old", "blas", "call", "new"] + (["ort"] if args.ort else [])
    heads = {"old": "nchw", "blas": "blas", "call": "per-call", "new": "nhwc", "ort": "ort"}
    print(f"{'form':>9} {'input NCHW':>18} {'weight':>16} {'s':>2} {'MFLOP':>7} "
          + " ".join(f"{heads[n] + ' ms':>11}" for n in names)
          + f" {'GF/s new':>8} {'new/old':>7}" + (f" {'new/ort':>7}" if args.ort else "")
          + f" {'maxdiff':>8}")  # fmt: skip
    for form, x_shape, w_shape, attrs in cases(args.model):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        old, op = nchw_kernel(x_shape, w_shape, attrs)
        out_nchw = np.empty(op.result.type.shape, np.float32)
        nhwc_shape = tuple(np.array(out_nchw.shape)[[0, 2, 3, 1]])
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        outs = {name: np.empty(nhwc_shape, np.float32) for name in ("blas", "call", "new")}

        geometry = (attrs["strides"], attrs["pads"], attrs["dilations"], attrs["group"])
        relu6 = (False, np.float32(0), np.float32(6), 4)
        blas, blas_params = plan_conv2d_nhwc(xh.shape, w.shape, nhwc_shape, *geometry, *relu6,
                                             PATH_BLAS)  # fmt: skip
        kernel, params = plan_conv2d_nhwc(xh.shape, w.shape, nhwc_shape, *geometry, *relu6,
                                          PATH_AUTO)  # fmt: skip
        prepared = pack_conv2d_nhwc(kernel, params, w, b)
        if prepared is None:  # nothing to prepare: as per call
            prepared = (lambda x, o, k, w, b, p: k(x, w, b, o, *p)), (kernel, w, b, params)
        packed, packed_params = prepared
        runners = {
            "old": lambda _, k=old, x=x, w=w, b=b, o=out_nchw: k(x, w, b, o),
            "blas": lambda _, k=blas, w=w, b=b, o=outs["blas"], p=blas_params: k(_, w, b, o, *p),
            "call": lambda _, k=kernel, w=w, b=b, o=outs["call"], p=params: k(_, w, b, o, *p),
            "new": lambda _, k=packed, o=outs["new"], p=packed_params: k(_, o, *p),
        }
        old(x, w, b, out_nchw)
        diff = 0.0
        for name in ("blas", "call", "new"):
            runners[name](xh)
            got = outs[name] - out_nchw.transpose(0, 2, 3, 1)
            diff = max(diff, float(np.abs(got).max()))
        if args.ort:
            session = ort_session(x_shape, w, b, attrs, args.threads)
            runners["ort"] = lambda _, s=session, x=x: s.run(None, {"x": x})
        calls = {}
        for name, run in runners.items():
            data = x if name in ("old", "ort") else xh
            calls[name] = lambda _, r=run, v=data: r(v)
        medians = interleaved(calls, x, args.runs, warmup=2)
        flops = 2.0 * out_nchw.size * int(np.prod(w_shape[1:]))
        ms = {name: t * 1e3 for name, t in medians.items()}
        for name, t in ms.items():
            totals.setdefault(form, {}).setdefault(name, 0.0)
            totals[form][name] += t
            totals.setdefault("all", {}).setdefault(name, 0.0)
            totals["all"][name] += t
        ort_col = f" {ms['new'] / ms['ort']:7.2f}" if args.ort else ""
        print(f"{form:>9} {str(list(x_shape)):>18} {str(list(w_shape)):>16} "
              f"{attrs['strides'][0]:>2} {flops / 1e6:7.1f} "
              + " ".join(f"{ms[n]:11.3f}" for n in names)
              + f" {flops / ms['new'] / 1e6:8.1f} {ms['new'] / ms['old']:7.2f}{ort_col}"
              f" {diff:8.1e}")  # fmt: skip
    print()
    for form, t in totals.items():
        line = f"total {form:>9}: " + ", ".join(f"{heads[n]} {t[n]:7.3f} ms" for n in names)
        line += f"; new/old {t['new'] / t['old']:.2f}"
        if "ort" in t:
            line += f", new/ort {t['new'] / t['ort']:.2f}"
        print(line)


if __name__ == "__main__":
    main()
