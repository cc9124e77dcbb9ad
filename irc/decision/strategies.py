"""The precision-decision strategies: pure functions of (SensitivityTable, CostModel,
Budgets) that return a ``Decision`` (a precision per layer, its predicted bytes, latency
and output SQNR, and a reason per layer).

    >>> decision = decide("auto", table, cost, Budgets(max_bytes=parse_size("2.5MB")))
    >>> print(format_decision(decision, table, cost))

Every strategy obeys the backend's support table (``cost.allowed``) and checks the plan
it returns against every budget it can predict (size, latency, the output-NSR cap from
``min_sqnr`` and the option ``max_nsr``), raising ``BudgetError`` naming the constraint
otherwise (``irc.decision.planning``). ``max_drop`` is verified by the caller.

- ``uniform-int8``: every layer int8 (the nearest more accurate precision where the
  backend lacks int8);
- ``quantune``: QuantuneV2's local-metric ranking, the k most sensitive layers at fp32;
- ``sals``: AMPQ/SALS, int8 → int4 → int2 down the Ω ranking;
- ``profile-score``: the layer-wise profiling paper's (latency + memory) / sensitivity;
- ``sigma``: SigmaQuant-style adaptive allocation under memory and latency budgets;
- ``auto``: irc's own greedy over every budget at once (``irc.decision.greedy``).
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from irc.decision.budgets import BudgetError, Budgets
from irc.decision.cost import CostModel
from irc.decision.greedy import auto
from irc.decision.planning import (
    Decision,
    Problem,
    State,
    finish,
    format_decision,
    predicted_sqnr,
    resolve,
    within_cap,
)
from irc.decision.table import SensitivityTable

__all__ = ["STRATEGIES", "Decision", "decide", "format_decision", "predicted_sqnr"]


def uniform_int8(
    table: SensitivityTable, cost: CostModel, budgets: Budgets, max_nsr: float | None = None
) -> Decision:
    """Every layer at int8 (fp32 where the backend lacks int8)."""
    start = time.perf_counter()
    prob = Problem(table, cost)
    idx = prob.uniform("int8")
    why = {True: "uniform int8", False: "int8 not supported for this layer: kept float"}
    reasons = {n: why[prob.precisions[j] == "int8"] for n, j in zip(prob.names, idx)}
    return finish(prob, resolve(prob, budgets, max_nsr), idx, "uniform-int8", reasons, start)


_QUANTUNE_KEYS = {"sqnr": 1.0, "mse": -1.0, "sqnr_delta": -1.0}  # sort key sign: sensitive first


def quantune(
    table: SensitivityTable,
    cost: CostModel,
    budgets: Budgets,
    metric: str = "sqnr",
    keep_fraction: float = 0.1,
    max_nsr: float | None = None,
) -> Decision:
    """QuantuneV2 (Kim et al.): rank the layers by a local metric of their int8 form and
    keep the k most sensitive at 32 bits, the rest at int8.

    Adapted: the paper ranks by SQNR, MSE or SQNR-delta and keeps sensitive layers at
    fp32; here the metric is an option (``sqnr``: lowest first; ``mse``, ``sqnr_delta``:
    highest first) and k is the smallest meeting the accuracy cap if one is set, else the
    largest meeting the size / latency budgets if set, else ``keep_fraction`` of the
    layers (at least 1). Prefix totals are kept incrementally: linear in the layers.
    """
    if metric not in _QUANTUNE_KEYS:
        raise BudgetError(f"quantune ranks by {', '.join(_QUANTUNE_KEYS)}; got {metric!r}")
    start = time.perf_counter()
    prob = Problem(table, cost)
    limits = resolve(prob, budgets, max_nsr)
    j8 = prob.col["int8"]
    idx = prob.uniform("int8")
    keep = [prob.ladder(i)[0] for i in range(len(prob))]
    values = prob.metric(metric)[:, j8]
    rankable = np.flatnonzero((idx == j8) & (np.asarray(keep) != j8))
    order = rankable[np.argsort(_QUANTUNE_KEYS[metric] * values[rankable], kind="stable")]
    state = State(prob, idx)
    totals = [(state.bytes, state.latency, state.nsr)]
    for i in order.tolist():
        state.move(i, keep[i])
        totals.append((state.bytes, state.latency, state.nsr))
    fits = [not state.missed(limits, b, t) for b, t, _ in totals]
    if limits.max_nsr is not None:
        ok = [k for k, (_, _, n) in enumerate(totals) if within_cap(n, limits.max_nsr)]
        k, rule = (ok[0] if ok else len(order)), "smallest k meeting the accuracy cap"
    elif limits.has_cost:
        k = max((k for k, f in enumerate(fits) if f), default=0)
        rule = "largest k meeting the size / latency budgets"
    else:
        k = min(len(order), max(1, round(keep_fraction * len(prob))))
        rule = f"keep_fraction {keep_fraction:g}"
    for i in order[:k].tolist():
        idx[i] = keep[i]
    rank = {int(i): r for r, i in enumerate(order.tolist())}
    reasons = {}
    for i, name in enumerate(prob.names):
        if i not in rank:
            reasons[name] = (
                f"int8 not supported or nothing more accurate: {prob.precisions[idx[i]]}"
            )
            continue
        kept = "kept at " + prob.precisions[keep[i]] if rank[i] < k else "int8"
        reasons[name] = (
            f"sensitivity rank {rank[i] + 1} of {len(order)} by int8 {metric} "
            f"{values[i]:.3g} (k = {k}): {kept}"
        )
    return finish(
        prob,
        limits,
        idx,
        "quantune",
        reasons,
        start,
        {"k": k, "rule": rule, "order": [prob.names[i] for i in order]},
    )


def sals(
    table: SensitivityTable, cost: CostModel, budgets: Budgets, max_nsr: float | None = None
) -> Decision:
    """AMPQ's Sensitivity-Aware Layer Selector (Sia): rank layers by Ω, start all int8 and
    move the least sensitive ones progressively to int4, then to int2.

    Adapted: pass 1 moves layers to int4 in ascending Ω at int4, pass 2 to int2 in
    ascending Ω at int2 (a layer the backend lacks int8 for starts at fp32; layers
    lacking the target are skipped). With a size / latency budget the
    moves stop as soon as every one is met (BudgetError if they never are); with only an
    accuracy cap they continue while the predicted output NSR stays within it (the paper's
    "stop when the accuracy constraint is met"); with no budget at all the cap defaults to
    twice the uniform-int8 output NSR.
    """
    start = time.perf_counter()
    prob = Problem(table, cost)
    limits = resolve(prob, budgets, max_nsr)
    omega = prob.metric("omega")
    state = State(prob, prob.uniform("int8"))
    cap = limits.max_nsr
    if not limits.has_cost and cap is None:
        cap = 2.0 * state.nsr
    moves = []
    at = prob.accuracy[state.idx]
    for target in ("int4", "int2"):
        j = prob.col[target]
        ok = np.flatnonzero(prob.allowed[:, j] & (at < prob.accuracy[j]))
        moves += [(int(i), j, r) for r, i in enumerate(ok[np.argsort(omega[ok, j], kind="stable")])]
    reasons = {n: "among the most sensitive by Ω: kept at int8" for n in prob.names}
    for i in np.flatnonzero(np.asarray(state.idx) != prob.col["int8"]):
        reasons[prob.names[i]] = f"int8 not supported: {prob.precisions[state.idx[i]]}"
    for i, j, r in moves:
        if limits.has_cost and not state.missed(limits):
            break
        delta = state.delta(i, j)
        if not limits.has_cost and not within_cap(state.nsr + delta[2], cap):
            break
        state.move(i, j, delta)
        reasons[prob.names[i]] = (
            f"Ω at {prob.precisions[j]} {omega[i, j]:.3g}, "
            f"{r + 1}th least sensitive: moved to {prob.precisions[j]}"
        )
    return finish(prob, limits, state.idx, "sals", reasons, start, {"cap": cap})


def profile_score(
    table: SensitivityTable,
    cost: CostModel,
    budgets: Budgets,
    int8_fraction: float = 0.5,
    fp16_fraction: float = 0.35,
    eps: float = 1e-9,
    max_nsr: float | None = None,
) -> Decision:
    """Adaptive layer-wise quantization through system profiling (Reddem et al.): score =
    (latency + memory) / (sensitivity + ε), top 50% by score int8, next 35% fp16, rest fp32.

    Adapted: latency and memory are the layer's fp32 latency and bytes as fractions of
    their totals, sensitivity its int8 ``norm_error`` (‖Y_fp − Y_q‖₂ / N) normalised by
    its sum; the fractions are options (counts rounded cumulatively); a layer the backend
    lacks the precision for gets the nearest more accurate one. As in the paper the
    budgets do not steer the choice; they are only checked.
    """
    start = time.perf_counter()
    prob = Problem(table, cost)
    n, j32 = len(prob), prob.col["fp32"]
    lat = prob.lat[:, j32] / max(prob.lat[:, j32].sum(), 1e-300)
    mem = prob.bytes[:, j32] / max(prob.bytes[:, j32].sum(), 1)
    err = np.nan_to_num(prob.metric("norm_error")[:, prob.col["int8"]], nan=np.inf)
    sens = err / max(float(err.sum()), 1e-300)
    score = (lat + mem) / (sens + eps)
    order = np.argsort(-score, kind="stable")
    n8 = round(int8_fraction * n)
    n16 = round((int8_fraction + fp16_fraction) * n) - n8
    idx = np.empty(n, dtype=int)
    reasons = {}
    for r, i in enumerate(order.tolist()):
        tier = "int8" if r < n8 else "fp16" if r < n8 + n16 else "fp32"
        idx[i] = prob.nearest(i, tier)
        got = prob.precisions[idx[i]]
        reasons[prob.names[i]] = (
            f"score {score[i]:.3g} (rank {r + 1} of {n}: latency {lat[i]:.1%}, memory "
            f"{mem[i]:.1%}, sensitivity {sens[i]:.1%}): {tier}"
            + ("" if got == tier else f", not supported: {got}")
        )
    return finish(
        prob,
        resolve(prob, budgets, max_nsr),
        idx,
        "profile-score",
        reasons,
        start,
        {"counts": {"int8": n8, "fp16": n16, "fp32": n - n8 - n16}},
    )


def sigma(
    table: SensitivityTable,
    cost: CostModel,
    budgets: Budgets,
    int4_sqnr: float = 22.0,
    int2_sqnr: float = 14.0,
    max_nsr: float | None = None,
) -> Decision:
    """SigmaQuant (arXiv:2602.22136): sensitivity-driven initial bit-widths, refined until
    the memory and latency budgets hold.

    Adapted (the paper's statistic and schedule are not public in our copy): each layer
    starts at the lowest bit-width whose local SQNR clears a threshold (int2 at ≥ 14 dB,
    int4 at ≥ 22 dB, else int8: about the local noise a robust layer tolerates); then,
    while a size / latency budget is missed, the layer whose next lower allowed precision
    has the highest local SQNR, among those whose step saves bytes (resp. time), goes down
    one step; then, while the accuracy cap is violated, the layer with the lowest local
    SQNR goes up one step if the budgets still hold. At most 3 × layers × precisions steps.
    """
    start = time.perf_counter()
    prob = Problem(table, cost)
    limits = resolve(prob, budgets, max_nsr)
    sqnr = np.nan_to_num(prob.metric("sqnr"), nan=-np.inf)
    idx, why = [], {}
    for i in range(len(prob)):
        j = prob.nearest(i, "int8")
        for p, t in (("int4", int4_sqnr), ("int2", int2_sqnr)):
            if prob.allowed[i, prob.col[p]] and sqnr[i, prob.col[p]] >= t:
                j = prob.col[p]
        idx.append(j)
        why[prob.names[i]] = f"local SQNR {sqnr[i, j]:.1f} dB at {prob.precisions[j]}: start"
    state = State(prob, idx)
    ladders = [prob.ladder(i) for i in range(len(prob))]
    steps, bound = 0, 3 * len(prob) * len(prob.precisions)

    def step(i, down):
        k = ladders[i].index(state.idx[i]) + (1 if down else -1)
        return ladders[i][k] if 0 <= k < len(ladders[i]) else None

    while state.missed(limits) and steps < bound:
        budget = max(
            state.missed(limits),
            key=lambda m: (
                state.bytes / limits.max_bytes
                if m == "size"
                else state.latency / limits.max_latency
            ),
        )
        axis = 0 if budget == "size" else 1
        heap = [(-sqnr[i, j], i, j) for i in range(len(prob)) if (j := step(i, True)) is not None]
        heapq.heapify(heap)
        moved = False
        while heap and budget in state.missed(limits) and steps < bound:
            _, i, j = heapq.heappop(heap)
            if step(i, True) != j:
                continue
            delta = state.delta(i, j)
            after = state.missed(limits, state.bytes + delta[0], state.latency + delta[1])
            if delta[axis] >= 0 or set(after) - set(state.missed(limits)):
                continue  # saves nothing on this budget, or breaks one already met
            state.move(i, j, delta)
            steps, moved = steps + 1, True
            why[prob.names[i]] = (
                f"lowered for {budget}: highest local SQNR one step down "
                f"({sqnr[i, j]:.1f} dB at {prob.precisions[j]})"
            )
            if (nxt := step(i, True)) is not None:
                heapq.heappush(heap, (-sqnr[i, nxt], i, nxt))
        if not moved:
            break
    if not state.missed(limits) and not within_cap(state.nsr, limits.max_nsr):
        heap = [(sqnr[i, state.idx[i]], i) for i in range(len(prob))]
        heapq.heapify(heap)
        while heap and not within_cap(state.nsr, limits.max_nsr) and steps < bound:
            _, i = heapq.heappop(heap)
            j = step(i, False)
            if j is None:
                continue
            delta = state.delta(i, j)
            if state.missed(limits, state.bytes + delta[0], state.latency + delta[1]):
                continue
            state.move(i, j, delta)
            steps += 1
            why[prob.names[i]] = (
                f"raised for the accuracy cap: lowest local SQNR, now "
                f"{sqnr[i, j]:.1f} dB at {prob.precisions[j]}"
            )
            heapq.heappush(heap, (sqnr[i, j], i))
    return finish(prob, limits, state.idx, "sigma", why, start, {"steps": steps})


STRATEGIES = {
    "uniform-int8": uniform_int8,
    "quantune": quantune,
    "sals": sals,
    "profile-score": profile_score,
    "sigma": sigma,
    "auto": auto,
}


def decide(
    strategy: str, table: SensitivityTable, cost: CostModel, budgets: Budgets, **options
) -> Decision:
    """Run the strategy named ``strategy`` (a key of ``STRATEGIES``) with ``options``."""
    if strategy not in STRATEGIES:
        raise BudgetError(
            f"unknown precision strategy {strategy!r}; known: {', '.join(STRATEGIES)}"
        )
    return STRATEGIES[strategy](table, cost, budgets, **options)
