"""irc's own precision decision, ``auto``: one greedy pass over every budget at once.

Each layer's allowed precisions are points (cost, damage): damage its ``output_nsr``
(0 at fp32), cost a weighted sum of its bytes and kernel seconds. From the layer's
starting point (its least-damage allowed precision, the fewest bytes among ties: fp32
unless the backend lacks it) only the lower convex hull of cheaper points matters — a
point above the hull is never worth taking (the classic LP relaxation of the
multiple-choice knapsack). Each hull edge is a *move* with a gain (cost saved) and a
damage (NSR added); all moves of all layers are sorted by damage per gain (O(M log M) for
M ≤ layers × precisions moves) and applied in that order, each checked exactly against
the plan (bytes, seconds with the int/float transitions, NSR) in O(1):

- with a size and/or latency budget: until every one is met, then stop (the accuracy cap
  is checked afterwards, BudgetError naming it if exceeded);
- with only an accuracy cap: every move that keeps the output NSR within the cap
  (maximum compression under the accuracy budget; cost = bytes);
- with no budget at all: until the model is 6× smaller than at fp32
  (``target_compression``; or as small as the backend allows).

The weights of bytes and seconds come from how far the plan is from each budget
(relative excess; a met budget weighs 0), so a move that makes the model slower (int2
unpacking can cost time) only counts if the combined gain is positive, and a move that
would break a budget already met is skipped (its layer moves no further that round). If
budgets are still missed once the moves are exhausted — a budget met early blocked moves
the other needed — the weights are recomputed from the plan reached and the pass repeats
(at most ``rounds`` times). Sorting dominates: O(L log L) in the layers, no nested loops.

Once the budgets are met, the last move may have overshot them by a whole layer's
saving (an 8× size budget met at 8.4×). What is left over is spent back: the one-layer
change that removes the most noise while every budget stays met, repeated until none
fits (``details["taken_back"]``). Each change scans every layer and precision
(O(L·P)); the leftover is under one move's saving, so in practice a handful fit.

A float layer between integer ones still reads and writes int8 activations, which its
neighbours quantize anyway (``planning.island_nsr``, when the table measured them): kept
float by its own small noise, it can cost bytes and time for nothing. So a run of float
layers with an integer layer on each side is tried at its least noisy integer precision,
what that frees spent back as above, and the change kept when the plan is quieter
(``details["sunk"]``); once per run, again until no run gains.

Since with a size budget alone every hull move is applied in order, the plan's NSR is at
most the LP optimum under the budget plus the last move's damage — so no plan made of the
table's precisions under the same size budget (SALS's, say) predicts less noise than
``auto``'s minus ``details["last_move_damage"]``. The bound holds for a table of per-layer
noise alone; with measured activations a plan's noise also depends on neighbours, which
the hull moves do not see, and only the spending back and the runs above account for it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from irc.decision.budgets import Budgets
from irc.decision.cost import CostModel
from irc.decision.planning import (
    Decision,
    Limits,
    Problem,
    State,
    check_backend,
    finish,
    resolve,
    within_cap,
)
from irc.decision.table import SensitivityTable


def hull_moves(c0: float, d0: float, points) -> list[tuple[float, float, int]]:
    """The moves (gain, damage, column) along the lower convex hull of ``points``
    ((cost, damage, column)) cheaper than the start (c0, d0), in order from the start."""
    pts = sorted((c0 - c, d - d0, j) for c, d, j in points if c < c0)
    hull = [(0.0, 0.0, -1)]
    for x, y, j in pts:
        if len(hull) > 1 and x == hull[-1][0]:
            continue  # same cost, more damage
        while len(hull) > 1:
            (ox, oy, _), (ax, ay, _) = hull[-2], hull[-1]
            if (ax - ox) * (y - oy) - (ay - oy) * (x - ox) > 0:
                break
            hull.pop()
        hull.append((x, y, j))
    return [(b[0] - a[0], b[1] - a[1], b[2]) for a, b in zip(hull, hull[1:])]


def _moves(prob: Problem, idx: list[int], cost: np.ndarray):
    """Every layer's hull moves from ``idx`` under ``cost`` ([layers, precisions]), as
    arrays (layer, column, damage per gain) sorted by damage per gain."""
    layers, cols, ratios, steps = [], [], [], []
    nsr, allowed = prob.nsr_l, prob.allowed.tolist()
    cost_l = cost.tolist()
    for i, j0 in enumerate(idx):
        row, ok = cost_l[i], allowed[i]
        points = [(row[j], nsr[i][j], j) for j in range(len(row)) if ok[j] and j != j0]
        worst = -np.inf
        for s, (gain, damage, j) in enumerate(hull_moves(row[j0], nsr[i][j0], points)):
            worst = max(worst, damage / gain)  # convex: non-decreasing along the hull
            layers.append(i), cols.append(j), ratios.append(worst), steps.append(s)
    layers, cols = np.array(layers, dtype=int), np.array(cols, dtype=int)
    order = np.lexsort((steps, layers, ratios))
    return layers[order].tolist(), cols[order].tolist(), np.array(ratios)[order].tolist()


def _weights(prob: Problem, state: State, targets: Limits, mode: str) -> tuple[float, float]:
    """(per byte, per second) weights: the relative excess over each budget."""
    if mode == "cap":
        return 1.0 / max(state.bytes, 1), 0.0
    wb = wt = 0.0
    if targets.max_bytes is not None:
        wb = max(0.0, state.bytes / targets.max_bytes - 1.0) / targets.max_bytes
    if targets.max_latency is not None:
        wt = max(0.0, state.latency / targets.max_latency - 1.0) / targets.max_latency
    return wb, wt


LATENCY_PRICES = (0.0, 0.25, 1.0, 4.0, 16.0, 64.0)  # seconds against bytes, both budgets


def _excess(state: State, targets: Limits) -> float:
    """How far ``state`` is over its size and latency budgets (relative, summed)."""
    return _over(state.bytes, state.latency, targets)


def _over(bytes_: float, latency: float, targets: Limits) -> float:
    over = 0.0
    if targets.max_bytes is not None:
        over += max(0.0, bytes_ / targets.max_bytes - 1.0)
    if targets.max_latency is not None:
        over += max(0.0, latency / targets.max_latency - 1.0)
    return over


def _greedy(prob: Problem, start_idx, targets: Limits, mode: str, weights, *, block_met: bool,
            rounds: int = 1, details: dict | None = None):  # fmt: skip
    """Apply hull moves from ``start_idx`` in order of damage per weighted gain; fixed
    ``weights`` (per byte, per second) or, when None, re-weighted by the excess each round.
    ``block_met``: a move that would break a budget already met is skipped. Returns
    (state, rank, status, moves applied, last move's damage)."""
    state = State(prob, start_idx)
    status = ["no cheaper precision is allowed"] * len(prob)
    rank, total, last = {}, 0, 0.0
    for _ in range(rounds):
        if mode != "cap" and not state.missed(targets):
            break
        wb, wt = weights if weights is not None else _weights(prob, state, targets, mode)
        if details is not None:
            details["rounds"] += 1
            details["weights"].append({"per_MB": wb * 1e6, "per_ms": wt * 1e-3})
        layers, cols, ratios = _moves(prob, state.idx, wb * prob.bytes + wt * prob.lat)
        blocked = [False] * len(prob)
        for i in set(layers):
            status[i] = "the budgets were met before its next move's turn"
        applied = 0
        for n, (i, j) in enumerate(zip(layers, cols)):
            if mode != "cap" and not state.missed(targets):
                break
            if blocked[i]:
                continue
            db, dt, dn = delta = state.delta(i, j)
            held = set(state.missed(targets))
            if wb * -db + wt * -dt <= 0:
                blocked[i], status[i] = True, "its next move saves nothing (transitions)"
            elif block_met and set(state.missed(targets, state.bytes + db,
                                                state.latency + dt)) - held:  # fmt: skip
                blocked[i], status[i] = True, "its next move would break a budget already met"
            elif mode == "cap" and not within_cap(state.nsr + dn, targets.max_nsr):
                blocked[i], status[i] = True, "its next move would break the accuracy cap"
            else:
                state.move(i, j, delta)
                applied += 1
                rank[i] = (n + 1, len(layers), ratios[n])
                last = dn
        total += applied
        if mode == "cap" or not applied:
            break
    return state, rank, status, total, last


def _repair(prob: Problem, state: State, targets: Limits) -> State:
    """When hull moves end over a budget (transition costs make latency non-separable, so
    the per-layer hulls can miss every plan that meets it): start from the fastest (or,
    for size, the smallest) plan instead, then take back, one layer at a time, the change
    that removes the most output noise while every budget stays met."""
    if targets.max_latency is not None and state.latency > targets.max_latency:
        start = prob.fastest_plan()
    else:
        start = [int(j) for j in np.where(prob.allowed, prob.bytes, np.iinfo(np.int64).max)
                 .argmin(axis=1)]  # fmt: skip
    if State(prob, start).missed(targets):
        return state  # nothing meets the budgets: finish names the closest
    # by noise alone, one costly change can spend a slack that many cheap ones would have
    # shared; by noise per slack spent, cheap changes can crowd out one that removes more
    # than all of them: both, and the quieter plan kept (as greedy knapsack does)
    plans = [_take_back(prob, State(prob, start), targets, per_spend=s) for s in (False, True)]
    return min(plans, key=lambda s: s.nsr)


def _take_back(prob: Problem, state: State, targets: Limits, per_spend: bool = False) -> State:
    """Spend what the budgets leave over: repeatedly make the one-layer change that
    removes the most output noise while every budget stays met (the last hull move can
    overshoot a size budget by a whole layer's saving); ``per_spend``: the most noise per
    share of the slack left that the change spends (``_spend``). Either way it ends when
    no single change that removes noise fits. Modifies and returns ``state``;
    O(layers × precisions) per change."""
    while True:
        best = None
        for i in range(len(prob)):
            for j in range(len(prob.precisions)):
                if j == state.idx[i] or not prob.allowed[i, j]:
                    continue
                db, dt, dn = delta = state.delta(i, j)
                if dn < 0 and not state.missed(targets, state.bytes + db, state.latency + dt):
                    key = dn / _spend(state, db, dt, targets) if per_spend else dn
                    if best is None or key < best[0]:
                        best = (key, i, j, delta)
        if best is None:
            return state
        state.move(best[1], best[2], best[3])


def _sink_islands(prob: Problem, state: State, targets: Limits) -> State:
    """Float layers between integer ones still pay their neighbours' int8 activations
    (``planning.island_nsr``), so a run of them can cost bytes and time for little noise
    removed: try each such run at its least noisy integer precision, spend what that
    frees (``_take_back``), and keep the change when the plan is quieter; again until no
    run gains. What the plan leaves of a latency budget is not spent here: a latency the
    greedy reached with room to spare keeps it (the plan is measured against it next). A
    table without activation measurements has nothing to gain here."""
    if not prob.has_sides:
        return state
    if targets.max_latency is not None:
        targets = replace(targets, max_latency=min(targets.max_latency, state.latency))
    tried = set()
    while True:
        for run in _float_runs(prob, state):
            if tuple(run) in tried:
                continue
            tried.add(tuple(run))
            trial = State(prob, state.idx)
            for k in run:
                trial.move(k, _least_noisy_integer(prob, k))
            if trial.missed(targets):
                continue
            trial = _take_back(prob, trial, targets)
            if trial.nsr < state.nsr * (1 - 1e-9):
                state = trial
                break
        else:
            return state


def _float_runs(prob: Problem, state: State) -> list[list[int]]:
    """The maximal runs of float layers with an integer layer on each side (in graph
    order) whose every layer has an integer precision allowed."""
    integer = [prob.int_l[j] for j in state.idx]
    runs, current = [], []
    for k, is_int in enumerate(integer):
        if not is_int:
            current.append(k)
            continue
        if current and current[0] > 0:
            runs.append(current)
        current = []
    can = prob.allowed[:, prob.integer].any(axis=1)
    return [run for run in runs if all(can[k] for k in run)]


def _least_noisy_integer(prob: Problem, k: int) -> int:
    """Layer ``k``'s allowed integer column of least own noise (the fewest bytes on ties)."""
    columns = [j for j in range(len(prob.precisions)) if prob.int_l[j] and prob.allowed[k, j]]
    return min(columns, key=lambda j: (prob.nsr_l[k][j], prob.bytes_l[k][j]))


def _spend(state: State, db: float, dt: float, targets: Limits) -> float:
    """The share of each budget's slack left that a change adding ``db`` bytes and ``dt``
    seconds spends, summed (a saving spends nothing), plus a floor so that changes that
    spend nothing rank by the noise they remove."""
    spent = 1e-9
    if targets.max_bytes is not None and db > 0:
        spent += db / max(targets.max_bytes - state.bytes, 1.0)
    if targets.max_latency is not None and dt > 0:
        spent += dt / max(targets.max_latency - state.latency, 1e-12)
    return spent


def auto(
    table: SensitivityTable,
    cost: CostModel,
    budgets: Budgets,
    max_nsr: float | None = None,
    target_compression: float = 6.0,
    rounds: int = 3,
) -> Decision:
    """irc's greedy: apply the layers' convex-hull moves in order of output noise added
    per (weighted) cost saved until every budget is met (see the module docstring)."""
    start = time.perf_counter()
    prob = Problem(table, cost)
    limits = resolve(prob, budgets, max_nsr)
    check_backend(prob, limits)
    nsr = np.where(prob.allowed, prob.nsr, np.inf)
    fewest = np.where(nsr == nsr.min(axis=1, keepdims=True), prob.bytes, np.iinfo(np.int64).max)
    start_idx = [int(j) for j in fewest.argmin(axis=1)]
    details = {"rounds": 0, "moves_applied": 0, "last_move_damage": 0.0, "weights": []}
    if limits.has_cost:
        mode, targets = "budgets", limits
    elif limits.max_nsr is not None:
        mode, targets = "cap", limits
    else:
        fp32 = int(prob.bytes[:, prob.col["fp32"]].sum()) + cost.other_bytes
        target = max(int(fp32 / target_compression), prob.min_bytes())
        mode, targets = "default", Limits(max_bytes=target)
        details["target_bytes"] = target
    if mode == "budgets" and targets.max_bytes is not None and targets.max_latency is not None:
        # Both: sweep the price of a second against a byte; keep the least noisy plan that
        # meets both (intermediate plans may pay transitions that the final one does not)
        best = None
        for lam in LATENCY_PRICES:
            weights = (1.0 / targets.max_bytes, lam / targets.max_latency)
            run = _greedy(prob, start_idx, targets, mode, weights, block_met=False)
            details["weights"].append({"per_MB": weights[0] * 1e6, "per_ms": weights[1] * 1e-3})
            ok = not run[0].missed(targets) and within_cap(run[0].nsr, targets.max_nsr)
            score = (not ok, run[0].nsr if ok else _excess(run[0], targets))
            if best is None or score < best[0]:
                best = (score, run, lam)
        (_, (state, rank, status, applied, last), lam) = best
        details.update(rounds=len(LATENCY_PRICES), latency_price=lam)
    else:
        state, rank, status, applied, last = _greedy(prob, start_idx, targets, mode, None,
                                                     block_met=True, rounds=rounds,
                                                     details=details)  # fmt: skip
    if mode == "budgets" and state.missed(targets):
        state = _repair(prob, state, targets)
        details["repaired"] = True
    elif mode == "budgets":
        before = list(state.idx)
        state = _take_back(prob, state, targets)
        sunk = list(state.idx)
        state = _sink_islands(prob, state, targets)
        details["sunk"] = [prob.names[i] for i, (a, b) in enumerate(zip(sunk, state.idx))
                           if not prob.int_l[a] and prob.int_l[b]]  # fmt: skip
        taken_back = {i for i, (a, b) in enumerate(zip(before, state.idx)) if a != b}
        details["taken_back"] = [prob.names[i] for i in sorted(taken_back)
                                 if prob.names[i] not in details["sunk"]]  # fmt: skip
    details["moves_applied"] = applied
    details["last_move_damage"] = last
    reasons = {}
    for i, name in enumerate(prob.names):
        p, p0 = prob.precisions[state.idx[i]], prob.precisions[start_idx[i]]
        if details.get("repaired"):
            reasons[name] = (f"{p0} → {p}: the hull moves missed the budgets, so the plan "
                             "was rebuilt from the fastest (smallest) one, taking back the "
                             "changes that cut most noise (per slack spent or in all)")  # fmt: skip
            continue
        if name in details.get("sunk", ()):
            reasons[name] = (f"{p0} → {p}: a float layer between integer ones would still "
                             "read and write int8 activations; its bytes went to layers "
                             "that gain more")  # fmt: skip
            continue
        if i not in rank:
            reasons[name] = f"kept at {p} (least output noise): {status[i]}"
            continue
        db, dt, dn = (
            prob.bytes_l[i][start_idx[i]] - prob.bytes_l[i][state.idx[i]],
            prob.lat_l[i][start_idx[i]] - prob.lat_l[i][state.idx[i]],
            prob.nsr_l[i][state.idx[i]] - prob.nsr_l[i][start_idx[i]],
        )
        n, m, ratio = rank[i]
        reasons[name] = (
            f"{p0} → {p}: saves {db / 1e3:.3g} kB and {dt * 1e3:.3g} ms for "
            f"{dn:.2g} output NSR (last move {n} of {m} by damage per gain)"
        )
        if name in details.get("taken_back", ()):
            reasons[name] += "; moved back up with what the budgets left over"
    details["mode"] = mode
    return finish(prob, limits, state.idx, "auto", reasons, start, details)
