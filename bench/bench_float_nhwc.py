"""Time the channels-last float conv2d kernels against the NCHW ones on MobileNetV2's convs.

For each of MobileNetV2's distinct conv shapes (batch 1, relu6 = clip 0..6 fused): the NCHW
kernel as ``kernels_conv.build_conv2d`` binds it (on NCHW data) and the NHWC kernel of
``float_conv_nhwc`` (on the same data channels last), plus with ``--ort`` onnxruntime on a
single-Conv+Clip ONNX model (NCHW) of the depthwise shapes and the stem. One Numba thread
unless --threads, calls interleaved, median of --runs each; per shape ms, GFLOP/s (2 flops
per multiply-add) and the NHWC/NCHW time ratio, then totals per form and overall. Each
NHWC result is checked against the NCHW one first (max abs difference printed).

    .venv/bin/python bench/bench_float_nhwc.py [--runs 50] [--threads 1] [--ort]
"""

from __future__ import annotations

import argparse
import os

import numba
import numpy as np

from irc.backends.numba.float_conv_nhwc import plan_conv2d_nhwc
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
RELU6 = {"activation": "clip", "act_min": 0.0, "act_max": 6.0}


def cases():
    """(form, x shape NCHW, w shape, attrs) of every benchmarked conv."""
    stem = {"strides": (2, 2), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1}
    out = [("stem", (1, 3, 224, 224), (32, 3, 3, 3), stem)]
    for c, h, s in DEPTHWISE:
        attrs = {"strides": (s, s), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": c}
        out.append(("depthwise", (1, c, h, h), (c, 1, 3, 3), attrs))
    for side, k, o in POINTWISE:
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
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    totals: dict = {}
    print(f"{'form':>9} {'input NCHW':>18} {'weight':>16} {'s':>2} {'MFLOP':>7} "
          f"{'nchw ms':>8} {'nhwc ms':>8} {'GF/s old':>8} {'GF/s new':>8} {'new/old':>7}"
          + (f" {'ort ms':>8}" if args.ort else "") + f" {'maxdiff':>8}")  # fmt: skip
    for form, x_shape, w_shape, attrs in cases():
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        old, op = nchw_kernel(x_shape, w_shape, attrs)
        out_nchw = np.empty(op.result.type.shape, np.float32)
        nhwc_shape = tuple(np.array(out_nchw.shape)[[0, 2, 3, 1]])
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out_nhwc = np.empty(nhwc_shape, np.float32)
        kernel, params = plan_conv2d_nhwc(xh.shape, w.shape, nhwc_shape, attrs["strides"],
                                          attrs["pads"], attrs["dilations"], attrs["group"],
                                          False, np.float32(0), np.float32(6))  # fmt: skip
        old(x, w, b, out_nchw)
        kernel(xh, w, b, out_nhwc, *params)
        diff = float(np.abs(out_nhwc - out_nchw.transpose(0, 2, 3, 1)).max())
        runners = {
            "old": lambda _, k=old, x=x, w=w, b=b, o=out_nchw: k(x, w, b, o),
            "new": lambda _, k=kernel, x=xh, w=w, b=b, o=out_nhwc, p=params: k(x, w, b, o, *p),
        }
        if args.ort and form != "pointwise":
            session = ort_session(x_shape, w, b, attrs, args.threads)
            runners["ort"] = lambda _, s=session, x=x: s.run(None, {"x": x})
        medians = interleaved(runners, x, args.runs, warmup=2)
        flops = 2.0 * out_nchw.size * int(np.prod(w_shape[1:]))
        ms = {name: t * 1e3 for name, t in medians.items()}
        for name, t in ms.items():
            totals.setdefault(form, {}).setdefault(name, 0.0)
            totals[form][name] += t
            totals.setdefault("all", {}).setdefault(name, 0.0)
            totals["all"][name] += t
        ort_col = (f" {ms['ort']:8.3f}" if "ort" in ms else f" {'-':>8}") if args.ort else ""
        print(f"{form:>9} {str(list(x_shape)):>18} {str(list(w_shape)):>16} "
              f"{attrs['strides'][0]:>2} {flops / 1e6:7.1f} {ms['old']:8.3f} {ms['new']:8.3f} "
              f"{flops / ms['old'] / 1e6:8.1f} {flops / ms['new'] / 1e6:8.1f} "
              f"{ms['new'] / ms['old']:7.2f}{ort_col} {diff:8.1e}")  # fmt: skip
    print()
    for form, t in totals.items():
        line = f"total {form:>9}: nchw {t['old']:8.3f} ms, nhwc {t['new']:8.3f} ms, "
        line += f"new/old {t['new'] / t['old']:.2f}"
        if "ort" in t:
            line += f" (onnxruntime on the depthwise + stem convs: {t['ort']:.3f} ms)"
        print(line)


if __name__ == "__main__":
    main()
