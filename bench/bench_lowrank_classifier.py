"""Whether a low-rank correction or a 3-bit grid would rescue an INT2 classifier: its GPTQ
rounding error, and what a rank-r correction in the calibration inputs' principal
directions leaves.

The layer (``--layer``, EfficientNet-Lite0's ``/_fc/Gemm`` by default) is rounded as the
quantize pass rounds it (``irc.gptq.round_layer`` on the GPTQ statistics of
imagenet-calib256 after the 16-image sensitivity sample), at 2 and 4 bits. Its input
vectors on the first ``--images`` of imagenet-val1300 come from the float model. Printed:
the layer's output noise-to-signal ratio on them, then with the error R = W − W_q
corrected by R·V·Vᵀ, V the top r eigenvectors of the calibration H (a correction that
would cost r·(rows + columns) int8 bytes), for r = 16, 32, 64, 128. ``--int3`` also
rounds at 3 bits (levels −4…3, the scale chosen among ``INT3_MULTIPLES``), a grid irc has
no kernels for: this script allows it in ``irc.quant`` and ``irc.gptq`` for its own run,
to estimate what such a precision would buy.

    python bench/bench_lowrank_classifier.py --model efficientnet_lite0_bn --images 400
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_strategies import PRESETS
from eval_accuracy import SHARED, load_val

from irc import gptq, quant
from irc.gptq import round_layer
from irc.precision import layer_name
from irc.stages import build, float_graph, rounding_statistics

RANKS = (16, 32, 64, 128)
INT3_MULTIPLES = tuple(np.round(np.linspace(0.75, 1.3, 12), 3))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0_bn", choices=sorted(PRESETS))
    parser.add_argument("--layer", default="/_fc/Gemm")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--int3", action="store_true", help="also round at 3 bits")
    args = parser.parse_args(argv)
    widths = (2, 4)
    if args.int3:
        quant.WEIGHT_BITS = tuple(sorted(set(quant.WEIGHT_BITS) | {3}, reverse=True))
        gptq.SCALE_MULTIPLES[3] = INT3_MULTIPLES
        widths = (2, 3, 4)
    preprocess = PRESETS[args.model]
    graph = float_graph(SHARED / "models" / f"{args.model}.onnx")
    (op,) = [o for o in graph.ops if layer_name(o) == args.layer and o.kind == "gemm"]
    w = op.operands[1].producer.attrs["value"].astype(np.float32)
    if not op.attrs["trans_b"]:
        w = w.T
    statistics = rounding_statistics(graph, SHARED / "data" / "imagenet-calib256",
                                     preprocess=preprocess, skip=16, progress=False,
                                     num_threads=1)[args.layer]  # fmt: skip
    inputs = _layer_inputs(build(graph, num_threads=1), op, load_val(preprocess, args.images)[0])
    signal = np.sum((inputs @ w.T.astype(np.float64)) ** 2)
    _, vectors = np.linalg.eigh(statistics.hessian[0].astype(np.float64))
    vectors = vectors[:, ::-1]
    for bits in widths:
        levels, scales, _ = round_layer(w, bits, statistics)
        error = w - levels.astype(np.float64) * scales[:, None]
        print(f"{args.layer} INT{bits}: output NSR {np.sum((inputs @ error.T) ** 2) / signal:.4f}")
        for r in RANKS:
            v = vectors[:, :r]
            left = error - (error @ v) @ v.T
            print(f"  rank {r:3d} ({r * sum(w.shape) / 1e3:.0f} kB at int8): "
                  f"{np.sum((inputs @ left.T) ** 2) / signal:.4f}")  # fmt: skip


def _layer_inputs(model, op, images: np.ndarray) -> np.ndarray:
    """The float model's input vectors to ``op`` on each of ``images`` (float64 [N, K])."""
    rows = []

    def keep(seen, args, results):
        if seen.name == op.name:
            rows.append(args[0].reshape(args[0].shape[0], -1).astype(np.float64))

    for i in range(len(images)):
        model.run_observed([keep], images[i : i + 1])
    return np.concatenate(rows)


if __name__ == "__main__":
    main()
