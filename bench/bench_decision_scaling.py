"""How the precision-decision strategies scale with the number of layers.

Synthetic chains (``irc.decision.synthetic.random_problem``: random tables and cost
models, no compiling) of 50 to 2000 layers; each strategy decides under a size budget
(a fraction of the way from the smallest plan the backend allows to the fp32 model) and
the table gives the median seconds of several runs. The last line per strategy is the
slope of log(time) against log(layers) (numpy polyfit): 1 is linear, 2 quadratic.

    python bench/bench_decision_scaling.py [--layers 50 100 200 500 1000 2000] [--runs 5]
        [--strategies auto sals ...] [--size 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from irc.decision.budgets import BudgetError, Budgets
from irc.decision.planning import Problem
from irc.decision.strategies import STRATEGIES, decide
from irc.decision.synthetic import random_problem
from irc.measure import interleaved


def budget_for(table, cost, fraction: float) -> Budgets:
    """A size budget ``fraction`` of the way from the smallest plan to the fp32 one."""
    p = Problem(table, cost)
    lo, hi = p.min_bytes(), cost.plan_bytes(p.plan(p.uniform("fp32")))
    return Budgets(max_bytes=int(lo + fraction * (hi - lo)))


def time_strategy(name: str, table, cost, budgets: Budgets, runs: int) -> tuple[float, str]:
    """(median seconds of ``runs`` decisions, outcome); BudgetError counts as an outcome."""
    outcome = ["ok"]

    def run(_) -> None:
        try:
            decide(name, table, cost, budgets)
        except BudgetError:
            outcome[0] = "budget missed"

    return interleaved({name: run}, None, runs, warmup=0)[name], outcome[0]


def main(argv=None) -> None:
    """Run the benchmark and print the table and slopes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[50, 100, 200, 500, 1000, 2000])
    parser.add_argument("--runs", type=int, default=5, help="runs per point (median)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument(
        "--size",
        type=float,
        default=0.3,
        help="size budget: fraction from the smallest plan to fp32",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    problems = {n: random_problem(n, seed=args.seed + n) for n in args.layers}
    budgets = {n: budget_for(*problems[n], args.size) for n in args.layers}
    for n in args.layers:  # warm-up (imports, first-call costs)
        for name in args.strategies:
            time_strategy(name, *problems[n], budgets[n], 1)
        break

    width = max(len(s) for s in args.strategies)
    print(f"{'strategy':<{width}}  " + "  ".join(f"{n:>9}" for n in args.layers) + "   slope")
    for name in args.strategies:
        results = [time_strategy(name, *problems[n], budgets[n], args.runs) for n in args.layers]
        seconds = np.array([s for s, _ in results])
        slope = np.polyfit(np.log(args.layers), np.log(seconds), 1)[0]
        cells = "  ".join(f"{s * 1e3:7.2f}ms" for s in seconds)
        missed = [n for n, (_, o) in zip(args.layers, results) if o != "ok"]
        note = f"   (budget missed at {missed})" if missed else ""
        print(f"{name:<{width}}  {cells}   {slope:5.2f}{note}")


if __name__ == "__main__":
    main()
