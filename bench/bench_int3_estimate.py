"""What an INT3 precision would buy a size budget, estimated on the decision's own table.

``irc.compile`` (default options, ``bench_user_path``'s split) gives the model's
sensitivity table and cost model under ``--ratio`` × smaller than FP32. The decision is then
run again on two edited copies, in which the INT2 column stands for a 3-bit grid (3 bits a
weight, so INT4's bytes less an eighth of a byte per weight):

- ``--layer`` alone at INT3: its INT2 noise scaled by ``--int3-ratio`` (INT3 / INT2 output
  NSR, from ``bench_lowrank_classifier.py --int3``: 0.0232 / 0.0629 for
  EfficientNet-Lite0's classifier), 1/8 byte a weight more than INT2;
- every layer: its INT2 noise replaced by 1.15 × the geometric mean of its INT4 and INT2
  noise (the classifier's measured INT3 lies there).

Printed: the predicted output SQNR of each decision. An estimate: no INT3 kernel exists.

    python bench/bench_int3_estimate.py --model efficientnet_lite0_bn --ratio 8
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
from bench_strategies import PRESETS
from bench_user_path import SHARED, rotated

import irc
from irc.decision import Budgets
from irc.decision.strategies import decide

GEOMETRIC_FACTOR = 1.15


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0_bn", choices=sorted(PRESETS))
    parser.add_argument("--ratio", type=float, default=8.0)
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--layer", default="/_fc/Gemm")
    parser.add_argument("--int3-ratio", type=float, default=0.0232 / 0.0629)
    args = parser.parse_args(argv)
    path = SHARED / "models" / f"{args.model}.onnx"
    fp32 = irc.compile(path, num_threads=1, progress=False).report().totals.fp32_bytes
    budgets = Budgets(max_bytes=int(fp32 / args.ratio))
    model = irc.compile(path, strategy="auto", budgets=budgets, calibration=rotated(args.split),
                        preprocess=PRESETS[args.model], num_threads=1, progress=False)  # fmt: skip
    table, cost = model.choice.table, model.choice.cost
    print(f"as built: {decide('auto', table, cost, budgets).predicted_sqnr:.2f} dB")
    two, four = table.precisions.index("int2"), table.precisions.index("int4")
    column, column4 = cost.column("int2"), cost.column("int4")
    params = np.array([layer.params for layer in table.layers])

    one_table, one_cost = copy.deepcopy(table), copy.deepcopy(cost)
    row = table.index(args.layer)
    one_table.metrics["output_nsr"][row, two] *= args.int3_ratio
    one_cost.bytes[row, column] += params[row] // 8
    decision = decide("auto", one_table, one_cost, budgets)
    print(f"{args.layer} at INT3: {decision.predicted_sqnr:.2f} dB")

    all_table, all_cost = copy.deepcopy(table), copy.deepcopy(cost)
    nsr = all_table.metrics["output_nsr"]
    nsr[:, two] = GEOMETRIC_FACTOR * np.sqrt(nsr[:, four] * nsr[:, two])
    all_cost.bytes[:, column] = all_cost.bytes[:, column4] - params // 8
    decision = decide("auto", all_table, all_cost, budgets)
    print(f"every layer's INT2 as INT3: {decision.predicted_sqnr:.2f} dB")


if __name__ == "__main__":
    main()
