"""The precision-decision strategies on synthetic tables and cost models (no compiling).

Every strategy must obey the backend's support table, meet the budgets it is given or
raise a BudgetError naming the one it cannot meet, and follow its paper's rule
(quantune's k most sensitive at fp32, SALS's Ω order, profile-score's 50/35/15 split,
SigmaQuant's thresholds); ``auto``'s greedy must be deterministic and, with a size budget,
no worse than any plan under the same budget by more than its last move (the LP bound of
the multiple-choice knapsack greedy) — checked against SALS and against brute force.
"""

from __future__ import annotations

import copy
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irc.decision import greedy
from irc.decision.budgets import BudgetError, Budgets
from irc.decision.planning import Limits, Problem, State, nsr_db
from irc.decision.strategies import STRATEGIES, decide, format_decision, predicted_sqnr
from irc.decision.synthetic import random_problem
from irc.decision.table import SensitivityTable

ALL = sorted(STRATEGIES)
FAST = settings(max_examples=40, deadline=None)


def nsr_of(d) -> float:
    return 0.0 if math.isinf(d.predicted_sqnr) else 10 ** (-d.predicted_sqnr / 10)


def check_decision(d, table, cost, budgets):
    """The decision is a full plan of allowed precisions with honest totals, within budget."""
    assert list(d.plan) == cost.layers and set(d.reasons) == set(cost.layers)
    for i, name in enumerate(cost.layers):
        assert cost.allowed[i, cost.column(d.plan[name])], (name, d.plan[name])
    assert d.predicted_bytes == cost.plan_bytes(d.plan)
    assert d.predicted_latency == pytest.approx(cost.plan_latency(d.plan))
    assert d.predicted_sqnr == pytest.approx(predicted_sqnr(table, d.plan))
    if budgets.max_bytes is not None:
        assert d.predicted_bytes <= budgets.max_bytes
    if budgets.max_latency is not None:
        assert d.predicted_latency <= budgets.max_latency * (1 + 1e-9)
    if budgets.min_sqnr is not None:
        assert d.predicted_sqnr >= budgets.min_sqnr - 1e-6


def span(table, cost):
    """(problem, smallest bytes, fp32 bytes, fastest seconds, fp32 seconds)."""
    p = Problem(table, cost)
    fp32 = p.uniform("fp32")
    return p, p.min_bytes(), cost.plan_bytes(p.plan(fp32)), p.min_latency(), p.latency_of(fp32)


def best_sqnr(table, cost):
    p = Problem(table, cost)
    return nsr_db(p.min_nsr())


def test_unknown_strategy_lists_the_known_ones():
    table, cost = random_problem(4)
    with pytest.raises(
        BudgetError, match="unknown precision strategy 'fastest'; known: .*sals.*auto"
    ):
        decide("fastest", table, cost, Budgets())


def test_layers_of_table_and_cost_must_match():
    table, cost = random_problem(4)
    cost.layers = list(reversed(cost.layers))
    with pytest.raises(ValueError, match="different layers"):
        decide("auto", table, cost, Budgets())


@FAST
@given(
    name=st.sampled_from(ALL),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    kind=st.sampled_from(["size", "latency", "ratio", "sqnr", "size+sqnr", "size+latency"]),
    level=st.floats(0.0, 1.0),
)
def test_every_strategy_meets_its_budgets_or_names_the_one_it_cannot(name, seed, n, kind, level):
    table, cost = random_problem(n, seed)
    _, lo_b, hi_b, lo_t, hi_t = span(table, cost)
    sizes = int(0.9 * lo_b + level * (hi_b - 0.9 * lo_b))
    seconds = 0.9 * lo_t + level * (hi_t - 0.9 * lo_t)
    top = min(best_sqnr(table, cost), 60.0)
    fields = {
        "size": {"max_bytes": sizes},
        "latency": {"max_latency": seconds},
        "ratio": {"max_latency_ratio": 0.5 + level},
        "sqnr": {"min_sqnr": top + 3 - 30 * level},
        "size+sqnr": {"max_bytes": sizes, "min_sqnr": top - 20 * level},
        "size+latency": {"max_bytes": sizes, "max_latency": seconds},
    }[kind]
    budgets = Budgets(**fields)
    try:
        d = decide(name, table, cost, budgets)
    except BudgetError as e:
        msg = str(e)
        assert "cannot be met" in msg
        words = {
            "max_bytes": "size ≤",
            "max_latency": "latency ≤",
            "max_latency_ratio": "latency ≤",
        }
        assert any(words.get(f, "output SQNR ≥") in msg for f in fields), msg
        return
    check_decision(d, table, cost, budgets)


def sals_floor(table, cost) -> int:
    """The smallest plan SALS can reach: int8 start, every layer as low as int2 allows."""
    p = Problem(table, cost)
    idx = p.uniform("int8")
    for target in ("int4", "int2"):
        j = p.col[target]
        idx = np.where(p.allowed[:, j] & (p.accuracy[idx] < p.accuracy[j]), j, idx)
    return cost.plan_bytes(p.plan(idx))


FLOORS = {
    "auto": lambda t, c: Problem(t, c).min_bytes(),
    "sigma": lambda t, c: Problem(t, c).min_bytes(),
    "sals": sals_floor,
    "quantune": lambda t, c: decide("uniform-int8", t, c, Budgets()).predicted_bytes,
}


@FAST
@given(
    name=st.sampled_from(sorted(FLOORS)),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    level=st.floats(0.0, 1.0),
)
def test_steering_strategies_meet_every_size_budget_they_can_reach(name, seed, n, level):
    table, cost = random_problem(n, seed)
    _, _, hi, _, _ = span(table, cost)
    floor = FLOORS[name](table, cost)
    budgets = Budgets(max_bytes=int(floor + level * (hi - floor)))
    check_decision(decide(name, table, cost, budgets), table, cost, budgets)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5))
def test_fastest_plan_is_the_fastest_of_all_allowed_plans(seed, n):
    table, cost = random_problem(n, seed)
    p = Problem(table, cost)
    plan = p.fastest_plan()
    assert all(p.allowed[i, j] for i, j in enumerate(plan))
    choices = [np.flatnonzero(p.allowed[i]) for i in range(n)]
    brute = min(p.latency_of(list(c)) for c in itertools.product(*choices))
    assert p.latency_of(plan) == pytest.approx(brute, rel=1e-12)


def test_fastest_plan_with_a_layer_that_has_no_integer_form():
    # found by hypothesis: layer 1 allows only float precisions; the trace-back took the
    # time of its float column for its (missing) integer one and made layer 0 integer
    table, cost = random_problem(21, 4628)
    p = Problem(table, cost)
    assert not p.allowed[1, p.integer].any()
    plan = p.fastest_plan()
    for i in range(len(plan)):  # no single-layer change is faster
        for j in np.flatnonzero(p.allowed[i]):
            changed = [*plan[:i], j, *plan[i + 1 :]]
            assert p.latency_of(changed) >= p.latency_of(plan) * (1 - 1e-12), (i, j)


def test_auto_repairs_a_latency_budget_its_hull_moves_miss():
    # found by hypothesis: two layers whose transitions make the hull moves end too slow
    table, cost = random_problem(2, 1702)
    _, _, _, lo, hi = span(table, cost)
    budgets = Budgets(max_latency=lo + 0.5 * (hi - lo))
    decision = decide("auto", table, cost, budgets)
    check_decision(decision, table, cost, budgets)
    assert "rebuilt from the fastest" in next(iter(decision.reasons.values()))


def _repaired_and_by_noise(seed: int, n: int, level: float):
    """A latency budget ``level`` of the way from the fastest plan to FP32's: the plan
    ``_repair`` rebuilds from the fastest one (starting over FP32's, which misses it), and
    the fastest plan with changes taken back by the noise they remove alone."""
    table, cost = random_problem(n, seed)
    p = Problem(table, cost)
    fast, fp32 = p.fastest_plan(), p.uniform("fp32")
    lo, hi = p.latency_of(fast), p.latency_of(fp32)
    targets = Limits(max_latency=lo + level * (hi - lo))
    repaired = greedy._repair(p, State(p, list(fp32)), targets)
    return repaired, greedy._take_back(p, State(p, list(fast)), targets), targets


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(2, 30), level=st.floats(0.05, 0.6))
def test_a_repaired_plan_is_never_noisier_than_taking_back_by_noise_alone(seed, n, level):
    repaired, by_noise, targets = _repaired_and_by_noise(seed, n, level)
    assert not repaired.missed(targets)
    assert repaired.nsr <= by_noise.nsr * (1 + 1e-12)


def test_a_repair_shares_a_latency_slack_among_cheap_changes():
    # seed 173, 8 layers: taking back by noise alone spends the slack on one costly change
    repaired, by_noise, _ = _repaired_and_by_noise(173, 8, 0.2)
    assert nsr_db(repaired.nsr) > nsr_db(by_noise.nsr) + 6.0


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), level=st.floats(0.0, 1.0))
def test_auto_leaves_no_single_layer_change_that_cuts_noise_within_the_size_budget(seed, n, level):
    table, cost = random_problem(n, seed)
    _, lo, hi, _, _ = span(table, cost)
    budgets = Budgets(max_bytes=int(lo + level * (hi - lo)))
    decision = decide("auto", table, cost, budgets)
    check_decision(decision, table, cost, budgets)
    plan, nsr = dict(decision.plan), nsr_of(decision)
    for name in cost.layers:
        for precision in cost.precisions:
            if (
                precision == plan[name]
                or not cost.allowed[cost.layers.index(name), cost.column(precision)]
            ):
                continue
            changed = {**plan, name: precision}
            if cost.plan_bytes(changed) <= budgets.max_bytes:
                changed_nsr = 10 ** (-predicted_sqnr(table, changed) / 10)
                assert changed_nsr >= nsr * (1 - 1e-9), (name, precision)


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), level=st.floats(0.05, 1.0))
def test_auto_meets_latency_budgets_down_to_near_the_fastest_plan(seed, n, level):
    table, cost = random_problem(n, seed)
    _, _, _, lo, hi = span(table, cost)
    budgets = Budgets(max_latency=lo + level * (hi - lo))
    check_decision(decide("auto", table, cost, budgets), table, cost, budgets)


@FAST
@given(
    name=st.sampled_from(["auto", "quantune"]),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    drop=st.floats(0.0, 40.0),
)
def test_auto_and_quantune_meet_every_reachable_accuracy_budget(name, seed, n, drop):
    table, cost = random_problem(n, seed)
    budgets = Budgets(min_sqnr=min(best_sqnr(table, cost), 80.0) - drop)
    check_decision(decide(name, table, cost, budgets), table, cost, budgets)


@FAST
@given(
    name=st.sampled_from(ALL),
    seed=st.integers(0, 10_000),
    n=st.integers(1, 25),
    disallow=st.floats(0.0, 0.8),
    generous=st.booleans(),
)
def test_disallowed_precisions_are_never_chosen(name, seed, n, disallow, generous):
    table, cost = random_problem(n, seed, disallow=disallow)
    budgets = Budgets(max_bytes=span(table, cost)[2]) if generous else Budgets()
    try:
        d = decide(name, table, cost, budgets)
    except BudgetError as e:
        assert "cannot be met" in str(e)
        return
    check_decision(d, table, cost, budgets)


def no_fp32_for(cost, layers):
    """``cost`` with fp32 and fp16 disallowed for ``layers`` (the best SQNR becomes finite)."""
    cost = copy.deepcopy(cost)
    cost.allowed[layers, 0] = cost.allowed[layers, 1] = False
    cost.allowed[layers, 2] = True
    return cost


@pytest.mark.parametrize("name", ALL)
def test_impossible_budgets_name_the_constraint_and_the_best_reachable(name):
    table, cost = random_problem(12, seed=5)
    _, lo_b, _, lo_t, _ = span(table, cost)
    with pytest.raises(
        BudgetError,
        match=r"^size ≤ .* cannot be met: the smallest plan the backend supports is .* MB",
    ):
        decide(name, table, cost, Budgets(max_bytes=int(lo_b * 0.95)))
    with pytest.raises(BudgetError, match=r"^latency ≤ .* ms cannot be met: the fastest plan"):
        decide(name, table, cost, Budgets(max_latency=lo_t * 0.95))
    cost = no_fp32_for(cost, [0, 3])
    best = best_sqnr(table, cost)
    with pytest.raises(
        BudgetError,
        match=rf"^output SQNR ≥ {best + 1:.3g} dB cannot be met: "
        rf"the most accurate plan .* predicts {best:.3g} dB",
    ):
        decide(name, table, cost, Budgets(min_sqnr=best + 1))


def test_accuracy_and_size_together_name_both():
    table, cost = random_problem(20, seed=2)
    _, lo, hi, _, _ = span(table, cost)
    size = int(lo * 1.05)
    at_size = decide("auto", table, cost, Budgets(max_bytes=size)).predicted_sqnr
    with pytest.raises(
        BudgetError,
        match=r"output SQNR ≥ .* dB cannot be met together with "
        r"size ≤ .* MB: the best plan auto finds",
    ):
        decide("auto", table, cost, Budgets(max_bytes=size, min_sqnr=at_size + 5))


@pytest.mark.parametrize(("metric", "sign"), [("sqnr", 1), ("mse", -1), ("sqnr_delta", -1)])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5])
def test_quantune_keeps_exactly_the_k_most_sensitive_at_fp32(metric, sign, fraction):
    table, cost = random_problem(24, seed=7, disallow=0.0)
    d = decide("quantune", table, cost, Budgets(), metric=metric, keep_fraction=fraction)
    k = max(1, round(fraction * 24))
    values = sign * table.column(metric, "int8")
    expected = {table.layers[i].name for i in np.argsort(values, kind="stable")[:k]}
    assert {n for n, p in d.plan.items() if p == "fp32"} == expected
    assert set(d.plan.values()) <= {"fp32", "int8"} and d.details["k"] == k


def test_quantune_k_is_the_smallest_meeting_the_cap_or_the_largest_meeting_the_size():
    table, cost = random_problem(30, seed=8, disallow=0.0)
    int8 = decide("uniform-int8", table, cost, Budgets())
    d = decide("quantune", table, cost, Budgets(min_sqnr=int8.predicted_sqnr + 4))
    k, order = d.details["k"], d.details["order"]
    assert d.predicted_sqnr >= int8.predicted_sqnr + 4
    fewer = dict(d.plan, **{order[k - 1]: "int8"})
    assert predicted_sqnr(table, fewer) < int8.predicted_sqnr + 4
    size = int8.predicted_bytes + (span(table, cost)[2] - int8.predicted_bytes) // 3
    d = decide("quantune", table, cost, Budgets(max_bytes=size))
    k, order = d.details["k"], d.details["order"]
    assert d.predicted_bytes <= size < cost.plan_bytes(dict(d.plan, **{order[k]: "fp32"}))


def test_profile_score_puts_50_35_15_percent_at_int8_fp16_fp32_by_score():
    table, cost = random_problem(20, seed=9, disallow=0.0)
    d = decide("profile-score", table, cost, Budgets())
    tiers = [d.plan[n] for n in cost.layers]
    assert (tiers.count("int8"), tiers.count("fp16"), tiers.count("fp32")) == (10, 7, 3)
    lat, mem = (
        cost.latency[:, 0] / cost.latency[:, 0].sum(),
        cost.bytes[:, 0] / cost.bytes[:, 0].sum(),
    )
    sens = table.column("norm_error", "int8") / table.column("norm_error", "int8").sum()
    score = (lat + mem) / (sens + 1e-9)
    by = {p: score[[t == p for t in tiers]] for p in ("int8", "fp16", "fp32")}
    assert by["int8"].min() >= by["fp16"].max() and by["fp16"].min() >= by["fp32"].max()


def test_sals_moves_the_least_sensitive_by_omega_first():
    table, cost = random_problem(30, seed=10, disallow=0.0)
    p = Problem(table, cost)
    b8, b4 = (cost.plan_bytes(p.plan(p.uniform(q))) for q in ("int8", "int4"))
    d = decide("sals", table, cost, Budgets(max_bytes=(b8 + b4) // 2))
    omega = dict(zip(cost.layers, table.column("omega", "int4")))
    at = {q: [omega[n] for n, x in d.plan.items() if x == q] for q in ("int8", "int4", "int2")}
    assert at["int4"] and at["int8"] and not at["int2"]
    assert max(at["int4"]) <= min(at["int8"])
    d = decide("sals", table, cost, Budgets(max_bytes=b4 * 3 // 4))
    omega = dict(zip(cost.layers, table.column("omega", "int2")))
    at = {q: [omega[n] for n, x in d.plan.items() if x == q] for q in ("int8", "int4", "int2")}
    assert not at["int8"] and at["int2"] and max(at["int2"]) <= min(at["int4"])


def test_sals_without_a_budget_keeps_noise_within_twice_uniform_int8():
    table, cost = random_problem(30, seed=11, disallow=0.0)
    int8 = decide("uniform-int8", table, cost, Budgets())
    d = decide("sals", table, cost, Budgets())
    assert nsr_of(d) <= 2 * nsr_of(int8) * (1 + 1e-9)
    assert d.predicted_bytes < int8.predicted_bytes


def test_sigma_starts_from_the_local_sqnr_thresholds_and_raises_for_accuracy():
    table, cost = random_problem(30, seed=12, disallow=0.0)
    d = decide("sigma", table, cost, Budgets(), int4_sqnr=20.0, int2_sqnr=12.0)
    for i, name in enumerate(cost.layers):
        s4, s2 = table.column("sqnr", "int4")[i], table.column("sqnr", "int2")[i]
        assert d.plan[name] == ("int2" if s2 >= 12 else "int4" if s4 >= 20 else "int8")
    better = decide("sigma", table, cost, Budgets(min_sqnr=d.predicted_sqnr + 6))
    assert better.predicted_sqnr >= d.predicted_sqnr + 6


@pytest.mark.parametrize("name", ALL)
def test_strategies_are_deterministic(name):
    table, cost = random_problem(40, seed=13)
    budgets = Budgets(max_bytes=span(table, cost)[2] // 3)
    try:
        first = decide(name, table, cost, budgets)
    except BudgetError:
        return
    again = decide(name, copy.deepcopy(table), copy.deepcopy(cost), budgets)
    assert first.plan == again.plan and first.reasons == again.reasons


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    level=st.floats(0.0, 1.0),
    disallow=st.floats(0.0, 0.4),
)
def test_auto_is_no_noisier_than_sals_under_the_same_size_beyond_its_last_move(
    seed, n, level, disallow
):
    table, cost = random_problem(n, seed, disallow=disallow)
    floor, hi = sals_floor(table, cost), span(table, cost)[2]
    budgets = Budgets(max_bytes=int(floor + level * (hi - floor)))
    a, s = decide("auto", table, cost, budgets), decide("sals", table, cost, budgets)
    assert nsr_of(a) - a.details["last_move_damage"] <= nsr_of(s) * (1 + 1e-9) + 1e-15


def test_auto_beats_or_equals_sals_at_the_same_size_on_seeded_tables():
    for seed in range(20):
        table, cost = random_problem(30, seed)
        budgets = Budgets(max_bytes=int(sals_floor(table, cost) * 1.3))
        a, s = decide("auto", table, cost, budgets), decide("sals", table, cost, budgets)
        assert nsr_of(a) <= nsr_of(s) * (1 + 1e-9), seed


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), level=st.floats(0.0, 1.0))
def test_auto_is_within_its_last_move_of_the_brute_force_optimum(seed, n, level):
    table, cost = random_problem(n, seed, disallow=0.2)
    p, lo, hi, _, _ = span(table, cost)
    size = int(lo + level * (hi - lo))
    a = decide("auto", table, cost, Budgets(max_bytes=size))
    plans = np.array(list(itertools.product(range(len(p.precisions)), repeat=n)))
    rows = np.arange(n)
    ok = p.allowed[rows, plans].all(axis=1)
    fits = p.bytes[rows, plans].sum(axis=1) + cost.other_bytes <= size
    best = p.nsr[rows, plans[ok & fits]].sum(axis=1).min()
    assert best <= nsr_of(a) * (1 + 1e-9) + 1e-15
    assert nsr_of(a) - a.details["last_move_damage"] <= best * (1 + 1e-9) + 1e-15


def test_auto_with_only_an_accuracy_cap_compresses_most_within_it():
    table, cost = random_problem(30, seed=14)
    loose = decide("auto", table, cost, Budgets(min_sqnr=25))
    tight = decide("auto", table, cost, Budgets(min_sqnr=35))
    assert loose.predicted_sqnr >= 25 and tight.predicted_sqnr >= 35
    assert loose.predicted_bytes < tight.predicted_bytes < span(table, cost)[2]
    capped = decide("auto", table, cost, Budgets(min_sqnr=25), max_nsr=10**-3.5)
    assert capped.plan == tight.plan


def test_auto_without_budget_targets_6x_compression():
    table, cost = random_problem(30, seed=15, disallow=0.0)
    d = decide("auto", table, cost, Budgets())
    fp32 = span(table, cost)[2]
    assert d.predicted_bytes <= fp32 / 6 and d.details["mode"] == "default"
    assert decide("auto", table, cost, Budgets(), target_compression=3).predicted_bytes > fp32 / 6


def test_latency_ratio_is_against_uniform_int8():
    table, cost = random_problem(30, seed=16)
    int8 = decide("uniform-int8", table, cost, Budgets())
    d = decide("auto", table, cost, Budgets(max_latency_ratio=0.9))
    assert d.predicted_latency <= 0.9 * int8.predicted_latency * (1 + 1e-9)
    with pytest.raises(BudgetError, match=r"latency ≤ 0.9× uniform INT8 \(.* ms\) cannot be met"):
        decide("uniform-int8", table, cost, Budgets(max_latency_ratio=0.9))


def test_decision_exports_and_formats():
    table, cost = random_problem(6, seed=17)
    d = decide("auto", table, cost, Budgets(max_bytes=span(table, cost)[2] // 4))
    data = json.loads(json.dumps(d.to_dict()))
    assert data["plan"] == d.plan and data["strategy"] == "auto"
    assert data["predicted_bytes"] == d.predicted_bytes
    text = format_decision(d, table, cost)
    lines = text.splitlines()
    assert lines[0].startswith("auto: ") and len(lines) == 2 + len(cost.layers)
    for name in cost.layers:
        assert any(line.startswith(name) and d.plan[name] in line for line in lines)
    fp32 = decide("quantune", table, cost, Budgets(), keep_fraction=1.0)
    assert json.loads(json.dumps(fp32.to_dict()))["predicted_sqnr"] == "inf"


def test_predicted_sqnr_sums_the_layers_output_noise():
    table, cost = random_problem(5, seed=18)
    plan = {"layer0000": "int8", "layer0002": "int4"}
    nsr = table.get("output_nsr", "layer0000", "int8") + table.get(
        "output_nsr", "layer0002", "int4"
    )
    assert predicted_sqnr(table, plan) == pytest.approx(-10 * math.log10(nsr))
    assert predicted_sqnr(table, {}) == math.inf


def _with_sides(table, sides):
    return SensitivityTable(table.layers, table.precisions, table.metrics, table.images,
                            activations=np.asarray(sides, np.float64))  # fmt: skip


def test_a_float_layer_pays_the_int8_activations_of_its_integer_neighbours():
    table, _ = random_problem(3, seed=5)
    sides = [[1e-3, 2e-3], [3e-3, 4e-3], [5e-3, 6e-3]]
    own = {p: table.column("output_nsr", p) for p in ("fp16", "int8")}
    island = _with_sides(table, sides)

    def nsr(t, plan):
        return 10 ** (-predicted_sqnr(t, dict(zip(t.names, plan))) / 10)

    between = ("int8", "fp16", "int8")
    assert nsr(table, between) == pytest.approx(own["int8"][0] + own["fp16"][1] + own["int8"][2])
    assert nsr(island, between) == pytest.approx(nsr(table, between) + 3e-3 + 4e-3)
    # after a float layer, or first: only the integer side counts; an integer layer's own
    # noise already holds both of its sides
    assert nsr(island, ("fp16", "fp16", "int8")) == pytest.approx(
        own["fp16"][0] + own["fp16"][1] + own["int8"][2] + 4e-3
    )
    assert nsr(island, ("int8", "fp32", "fp32")) == pytest.approx(own["int8"][0] + 3e-3)
    assert nsr(island, ("int8",) * 3) == pytest.approx(nsr(table, ("int8",) * 3))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), moves=st.integers(1, 40))
def test_state_keeps_the_island_noise_up_to_date_move_by_move(seed, n, moves):
    table, cost = random_problem(n, seed, activations=True)
    prob = Problem(table, cost)
    state = State(prob, prob.uniform("int8"))
    rng = np.random.default_rng(seed)
    for _ in range(moves):
        i = int(rng.integers(n))
        j = int(rng.choice(np.flatnonzero(prob.allowed[i])))
        state.move(i, j)
        fresh = State(prob, state.idx)
        assert state.nsr == pytest.approx(fresh.nsr, rel=1e-9, abs=1e-15)
        assert nsr_db(fresh.nsr) == pytest.approx(predicted_sqnr(table, prob.plan(state.idx)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 30), level=st.floats(0.0, 1.0))
def test_sinking_float_islands_keeps_the_budgets_and_never_adds_noise(seed, n, level):
    table, cost = random_problem(n, seed, disallow=0.1, activations=True)
    prob = Problem(table, cost)
    _, lo, hi, fast, slow = span(table, cost)
    rng = np.random.default_rng(seed)
    idx = [int(rng.choice(np.flatnonzero(row))) for row in prob.allowed]
    start = State(prob, idx)
    timed = seed % 2 == 1  # with a latency budget too, which sinking must not spend
    targets = Limits(max_bytes=int(lo + level * (hi - lo)),
                     max_latency=slow if timed else None)  # fmt: skip
    if start.missed(targets):
        return
    sunk = greedy._sink_islands(prob, State(prob, idx), targets)
    assert not sunk.missed(targets)
    assert sunk.nsr <= start.nsr * (1 + 1e-9)
    if timed:
        assert sunk.latency <= start.latency * (1 + 1e-9)


def test_auto_spends_a_lone_float_layers_bytes_where_they_remove_noise():
    # by its own measured noise layer 1 is best kept at fp16, but between two integer
    # layers it still reads and writes int8 activations (all of its int8 noise): its
    # bytes then buy layer 2's int8 instead
    table, cost = random_problem(3, seed=11, disallow=0.0)
    table.metrics["output_nsr"][:] = [[1e-9, 1e-4, 1e-2, 1e-1], [1e-9, 4e-3, 2e-2, 1e-1],
                                      [1e-9, 1e-4, 3e-3, 3e-2]]  # fmt: skip
    cost.bytes[:] = [[4000, 2000, 1000, 500, 250], [2000, 1000, 500, 250, 125],
                     [4000, 2000, 1000, 500, 250]]  # fmt: skip
    cost.other_bytes = 0
    budgets = Budgets(max_bytes=1000 + 1000 + 500)
    alone = decide("auto", table, cost, budgets)
    assert [alone.plan[n] for n in table.names] == ["int8", "fp16", "int4"]
    island = _with_sides(table, [[5e-5, 5e-5], [2e-3, 2e-3], [5e-5, 5e-5]])
    chosen = decide("auto", island, cost, budgets)
    assert [chosen.plan[n] for n in table.names] == ["int8", "int8", "int8"]
    assert chosen.predicted_sqnr > predicted_sqnr(island, alone.plan)


def test_auto_names_and_explains_the_float_layers_it_sank():
    sank = 0
    for seed in range(12):
        table, cost = random_problem(30, seed, activations=True)
        _, lo, hi, _, _ = span(table, cost)
        d = decide("auto", table, cost, Budgets(max_bytes=int(lo + 0.3 * (hi - lo))))
        for name in d.details["sunk"]:
            assert d.plan[name] in ("int8", "int4", "int2")
            assert "int8 activations" in d.reasons[name]
            assert name not in d.details["taken_back"]
        sank += len(d.details["sunk"])
    assert sank > 0
