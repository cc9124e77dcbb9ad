"""What every precision-decision strategy shares: the aligned problem arrays, the budgets
as limits, a plan's incremental evaluation, the ``Decision`` and the budget errors.

A strategy (``irc.decision.strategies``) is a pure function of a ``SensitivityTable``, a
``CostModel`` and ``Budgets``. It works on precision *indices* into ``cost.precisions``
through a ``Problem`` (the arrays, with fp32's zero error filled in and the precisions
the backend lacks or the table did not measure masked out) and a ``State`` (a plan whose
bytes, latency and output noise are kept up to date move by move in O(1), transitions
included). ``finish`` turns a state into a ``Decision``, re-computing its totals with
``cost.plan_bytes`` / ``cost.plan_latency`` and raising ``BudgetError`` naming the first
budget it misses, so no strategy can return a plan outside the budgets it was given.

The accuracy budget inside a decision is a cap on the sum of the layers' ``output_nsr``
(noise powers of independent layers add): the option ``max_nsr`` and ``min_sqnr`` (as
10^(−min_sqnr/10)), whichever is tighter. A float layer's own noise is its fp16 weights',
but next to an integer layer it still reads (or writes) int8 activations, which that
layer quantizes anyway: when the table measured them (``SensitivityTable.activations``),
a float layer adds the noise of its input rounded alone where the layer before it is
integer, and of its output where the layer after it is (``island_nsr``; neighbours in
graph order, as for the latency's int/float transitions). A lone fp16 layer among int8
ones then predicts what it measures: no gain. ``max_drop`` cannot be predicted here; the
caller verifies it by compiling and evaluating, and tightens ``max_nsr`` on back-off.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from irc.decision.budgets import BudgetError, Budgets
from irc.decision.cost import INTEGER, CostModel
from irc.decision.table import SensitivityTable

LADDER = ("fp32", "fp16", "int8", "int4", "int2")  # most accurate first
_TOL = 1e-9  # relative slack on budget comparisons (float sums)


@dataclass
class Decision:
    """A precision plan, its predicted cost and accuracy, and why each layer got its
    precision."""

    strategy: str
    plan: dict[str, str]
    predicted_bytes: int
    predicted_latency: float  # seconds, batch 1
    predicted_sqnr: float  # dB, model output against FP32
    reasons: dict[str, str]
    seconds: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict (infinite SQNR written as the string "inf")."""
        sqnr = self.predicted_sqnr
        return {
            "strategy": self.strategy,
            "plan": dict(self.plan),
            "predicted_bytes": int(self.predicted_bytes),
            "predicted_latency": float(self.predicted_latency),
            "predicted_sqnr": float(sqnr) if math.isfinite(sqnr) else str(sqnr),
            "reasons": dict(self.reasons),
            "seconds": float(self.seconds),
            "details": dict(self.details),
        }


def nsr_db(nsr: float) -> float:
    """Output SQNR (dB) from a noise-to-signal ratio (inf when there is no noise)."""
    return math.inf if nsr <= 0 else -10.0 * math.log10(nsr)


def predicted_sqnr(table: SensitivityTable, plan: dict[str, str]) -> float:
    """−10·log10 of the sum of the layers' ``output_nsr`` at their planned precision
    (layers missing from ``plan`` are fp32: no noise) and of the float layers' int8
    neighbours (``island_nsr``)."""
    total = 0.0
    chosen = [plan.get(layer.name, "fp32") for layer in table.layers]
    for i, p in enumerate(chosen):
        if p != "fp32":
            total += float(table.metrics["output_nsr"][i, table.precisions.index(p)])
    sides = activation_sides(table)
    if sides is not None:
        integer = [p in INTEGER for p in chosen]
        total += sum(island_nsr(integer, sides, k) for k in range(len(chosen)))
    return nsr_db(total)


def activation_sides(table: SensitivityTable) -> list[list[float]] | None:
    """Each layer's (input, output) int8 noise from ``table.activations`` (NaN as 0), or
    None when the table did not measure them."""
    if table.activations is None:
        return None
    return np.nan_to_num(np.asarray(table.activations, np.float64)).tolist()


def island_nsr(integer, sides: list[list[float]], k: int) -> float:
    """The int8 activations float layer ``k`` reads or writes: its input's noise rounded
    alone (``sides[k][0]``) when the layer before it is ``integer``, its output's
    (``sides[k][1]``) when the layer after it is; 0 for an integer layer, whose own noise
    counts both. ``integer``: per layer, whether it is planned at an integer precision."""
    if integer[k]:
        return 0.0
    total = 0.0
    if k > 0 and integer[k - 1]:
        total += sides[k][0]
    if k + 1 < len(integer) and integer[k + 1]:
        total += sides[k][1]
    return total


class Problem:
    """The arrays of one decision, rows = layers, columns = ``cost.precisions``."""

    def __init__(self, table: SensitivityTable, cost: CostModel):
        names = [layer.name for layer in table.layers]
        if names != list(cost.layers):
            raise ValueError("the sensitivity table and the cost model list different layers")
        self.table, self.cost, self.names = table, cost, names
        self.precisions = tuple(cost.precisions)
        self.col = {p: j for j, p in enumerate(self.precisions)}
        self.bytes = np.asarray(cost.bytes, dtype=np.int64)
        self.lat = np.asarray(cost.latency, dtype=np.float64)
        self.trans = np.asarray(cost.transition, dtype=np.float64)
        self.integer = np.array([p in INTEGER for p in self.precisions])
        self.accuracy = np.array([LADDER.index(p) for p in self.precisions])  # 0 = fp32
        self.nsr = self.metric("output_nsr")
        self.allowed = np.asarray(cost.allowed, dtype=bool) & np.isfinite(self.nsr)
        bare = np.flatnonzero(~self.allowed.any(axis=1))
        if bare.size:
            raise BudgetError(f"layer {names[bare[0]]!r} has no precision the backend supports")
        # Plain lists: the move-by-move loops index them far faster than numpy.
        self.bytes_l, self.lat_l = self.bytes.tolist(), self.lat.tolist()
        self.trans_l, self.nsr_l = self.trans.tolist(), self.nsr.tolist()
        self.int_l = self.integer.tolist()
        # each layer's (input, output) int8 noise, what it pays as a float layer between
        # integer ones; none measured: every layer's noise is its own alone
        sides = activation_sides(table)
        self.has_sides = sides is not None
        self.sides_l = sides if sides is not None else [[0.0, 0.0]] * len(names)
        self._ladders = None

    def __len__(self) -> int:
        return len(self.names)

    def metric(self, name: str) -> np.ndarray:
        """The metric as [layers, cost precisions]: fp32 at its no-error value, precisions
        the table did not measure NaN."""
        out = np.full((len(self.names), len(self.precisions)), np.nan)
        for j, p in enumerate(self.precisions):
            if p == "fp32" or p in self.table.precisions:
                out[:, j] = self.table.column(name, p)
        return out

    def ladder(self, i: int) -> list[int]:
        """Layer ``i``'s allowed precision columns, most accurate first."""
        if self._ladders is None:
            order = np.argsort(self.accuracy, kind="stable").tolist()
            self._ladders = [[j for j in order if row[j]] for row in self.allowed.tolist()]
        return self._ladders[i]

    def nearest(self, i: int, precision: str) -> int:
        """``precision``'s column if layer ``i`` allows it, else the closest more accurate
        allowed precision, else the closest less accurate one."""
        want = LADDER.index(precision)
        steps = self.ladder(i)
        better = [j for j in steps if self.accuracy[j] <= want]
        return better[-1] if better else steps[0]

    def uniform(self, precision: str, fallback: str = "fp32") -> np.ndarray:
        """Every layer at ``precision``; where it is not allowed, ``fallback`` (else the
        ``nearest`` allowed precision)."""
        j = self.col[precision]
        idx = np.full(len(self.names), j)
        for i in np.flatnonzero(~self.allowed[:, j]):
            ok = self.allowed[i, self.col[fallback]]
            idx[i] = self.col[fallback] if ok else self.nearest(int(i), precision)
        return idx

    def plan(self, idx) -> dict[str, str]:
        """The plan of precision columns ``idx``."""
        return {name: self.precisions[j] for name, j in zip(self.names, idx)}

    def latency_of(self, idx) -> float:
        """``cost.plan_latency`` of ``idx``, vectorised."""
        idx = np.asarray(idx)
        rows = np.arange(len(idx))
        integer = self.integer[idx]
        prev_float = np.concatenate([[True], ~integer[:-1]])
        next_float = np.concatenate([~integer[1:], [True]])
        total = self.lat[rows, idx].sum() + self.trans[:, 0][integer & prev_float].sum()
        return float(total + self.trans[:, 1][integer & next_float].sum() + self.cost.other_latency)

    def min_bytes(self) -> int:
        """The smallest stored size any allowed plan has."""
        return int(
            np.where(self.allowed, self.bytes, np.iinfo(np.int64).max).min(axis=1).sum()
            + self.cost.other_bytes
        )

    def min_latency(self) -> float:
        """The fastest allowed plan's latency (``fastest_plan``'s)."""
        return self.latency_of(self.fastest_plan())

    def fastest_plan(self) -> list[int]:
        """The column per layer of a fastest allowed plan: a two-state dynamic programme
        over float / integer neighbours (linear in the layers), its choices traced back."""
        lat = np.where(self.allowed, self.lat, np.inf)
        flat, ilat = np.where(~self.integer, lat, np.inf), np.where(self.integer, lat, np.inf)
        fcol, icol = flat.argmin(axis=1).tolist(), ilat.argmin(axis=1).tolist()
        # a layer with no allowed float (integer) column has inf there, never a column's time
        fmin = flat.min(axis=1).tolist()
        imin = ilat.min(axis=1).tolist()
        t = self.trans_l
        f, g = fmin[0], imin[0] + t[0][0]
        back = []  # per layer ≥ 1: (float's predecessor is integer, integer's is float)
        for i in range(1, len(fmin)):
            back.append((g + t[i - 1][1] < f, f + t[i][0] < g))
            f, g = fmin[i] + min(f, g + t[i - 1][1]), imin[i] + min(g, f + t[i][0])
        integer = g + t[-1][1] < f
        plan = []
        for i in range(len(fmin) - 1, -1, -1):
            plan.append(icol[i] if integer else fcol[i])
            if i:
                from_integer, from_float = back[i - 1]
                integer = not from_float if integer else from_integer
        return plan[::-1]

    def min_nsr(self) -> float:
        """The output NSR of the most accurate allowed plan."""
        return float(np.where(self.allowed, self.nsr, np.inf).min(axis=1).sum())


@dataclass
class Limits:
    """The budgets a decision must meet, resolved to bytes, seconds and an NSR cap."""

    max_bytes: int | None = None
    max_latency: float | None = None
    max_nsr: float | None = None
    latency_phrase: str = ""

    @property
    def has_cost(self) -> bool:
        """A size or latency budget is set."""
        return self.max_bytes is not None or self.max_latency is not None

    def phrase(self, what: str) -> str:
        """The budget ``what`` (size | latency | accuracy) as a phrase."""
        if what == "size":
            return f"size ≤ {self.max_bytes / 1e6:.3g} MB"
        if what == "latency":
            return self.latency_phrase
        return f"output SQNR ≥ {nsr_db(self.max_nsr):.3g} dB"


def resolve(problem: Problem, budgets: Budgets, max_nsr: float | None = None) -> Limits:
    """The limits of ``budgets`` (latency ratios against uniform int8; the tighter of
    ``max_nsr`` and ``min_sqnr``)."""
    limits = Limits(max_bytes=budgets.max_bytes)
    options = []
    if budgets.max_latency is not None:
        options.append((budgets.max_latency, f"latency ≤ {budgets.max_latency * 1e3:.3g} ms"))
    if budgets.max_latency_ratio is not None:
        seconds = budgets.max_latency_ratio * problem.latency_of(problem.uniform("int8"))
        options.append(
            (
                seconds,
                f"latency ≤ {budgets.max_latency_ratio:g}× uniform INT8 ({seconds * 1e3:.3g} ms)",
            )
        )
    if options:
        limits.max_latency, limits.latency_phrase = min(options)
    caps = [c for c in (max_nsr,) if c is not None]
    if budgets.min_sqnr is not None:
        caps.append(10.0 ** (-budgets.min_sqnr / 10.0))
    limits.max_nsr = min(caps) if caps else None
    return limits


class _IntegerFlags:
    """Whether each layer of a ``State``'s plan is integer, read in place."""

    def __init__(self, state: State):
        self.idx, self.int_l = state.idx, state.p.int_l

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, k: int) -> bool:
        return self.int_l[self.idx[k]]


class State:
    """A plan being built: precision columns ``idx`` and their running totals."""

    def __init__(self, problem: Problem, idx):
        self.p = problem
        self.idx = [int(j) for j in idx]
        rows = range(len(self.idx))
        self.bytes = int(sum(problem.bytes_l[i][j] for i, j in zip(rows, self.idx)))
        self.bytes += problem.cost.other_bytes
        self.latency = problem.latency_of(self.idx)
        self.nsr = float(sum(problem.nsr_l[i][j] for i, j in zip(rows, self.idx)))
        if problem.has_sides:
            integer = _IntegerFlags(self)
            self.nsr += sum(island_nsr(integer, problem.sides_l, k) for k in rows)

    def _edges(self, i: int) -> float:
        """Transition seconds paid by layers i−1, i, i+1 under the current plan."""
        idx, integer, t, n = self.idx, self.p.int_l, self.p.trans_l, len(self.idx)
        total = 0.0
        for k in range(max(0, i - 1), min(n, i + 2)):
            if integer[idx[k]]:
                if k == 0 or not integer[idx[k - 1]]:
                    total += t[k][0]
                if k == n - 1 or not integer[idx[k + 1]]:
                    total += t[k][1]
        return total

    def _islands(self, i: int) -> float:
        """Neighbour activation noise paid by float layers i−1, i, i+1 (``island_nsr``)."""
        if not self.p.has_sides:
            return 0.0
        integer = _IntegerFlags(self)
        return sum(island_nsr(integer, self.p.sides_l, k)
                   for k in range(max(0, i - 1), min(len(self.idx), i + 2)))  # fmt: skip

    def delta(self, i: int, j: int) -> tuple[int, float, float]:
        """(bytes, seconds, output NSR) added by moving layer ``i`` to column ``j``."""
        p, old = self.p, self.idx[i]
        before, noise_before = self._edges(i), self._islands(i)
        self.idx[i] = j
        after, noise_after = self._edges(i), self._islands(i)
        self.idx[i] = old
        return (
            p.bytes_l[i][j] - p.bytes_l[i][old],
            p.lat_l[i][j] - p.lat_l[i][old] + after - before,
            p.nsr_l[i][j] - p.nsr_l[i][old] + noise_after - noise_before,
        )

    def move(self, i: int, j: int, delta=None) -> None:
        """Put layer ``i`` at column ``j``."""
        db, dt, dn = delta or self.delta(i, j)
        self.idx[i] = j
        self.bytes, self.latency, self.nsr = self.bytes + db, self.latency + dt, self.nsr + dn

    def missed(self, limits: Limits, bytes_=None, latency=None) -> list[str]:
        """The cost budgets (size, latency) missed — by the given totals if passed."""
        b = self.bytes if bytes_ is None else bytes_
        t = self.latency if latency is None else latency
        out = []
        if limits.max_bytes is not None and b > limits.max_bytes:
            out.append("size")
        if limits.max_latency is not None and t > limits.max_latency * (1 + _TOL):
            out.append("latency")
        return out


def within_cap(nsr: float, cap: float | None) -> bool:
    """``nsr`` meets the cap (none: always)."""
    return cap is None or nsr <= cap * (1 + _TOL) + 1e-300


def check_backend(problem: Problem, limits: Limits) -> None:
    """BudgetError if a single budget is beyond every plan the backend supports."""
    if limits.max_bytes is not None and problem.min_bytes() > limits.max_bytes:
        js = {problem.ladder(i)[-1] for i in range(len(problem))}
        at = f"at {problem.precisions[js.pop()]}" if len(js) == 1 else "at its smallest precision"
        raise BudgetError(
            f"{limits.phrase('size')} cannot be met: the smallest plan the backend "
            f"supports is {problem.min_bytes() / 1e6:.3g} MB (every layer {at})"
        )
    if limits.max_latency is not None:
        fastest = problem.min_latency()
        if fastest > limits.max_latency * (1 + _TOL):
            raise BudgetError(
                f"{limits.phrase('latency')} cannot be met: the fastest plan the "
                f"backend supports takes {fastest * 1e3:.3g} ms"
            )
    if limits.max_nsr is not None and not within_cap(problem.min_nsr(), limits.max_nsr):
        raise BudgetError(
            f"{limits.phrase('accuracy')} cannot be met: the most accurate plan "
            f"the backend supports predicts {nsr_db(problem.min_nsr()):.3g} dB"
        )


def fail(problem: Problem, limits: Limits, state: State, who: str) -> None:
    """Raise the BudgetError for ``state`` missing a budget, naming the constraint."""
    check_backend(problem, limits)
    missed = state.missed(limits)
    held = [w for w, v in (("size", limits.max_bytes), ("latency", limits.max_latency)) if v]
    if missed:
        costs = " and ".join(limits.phrase(m) for m in missed)
        met = [limits.phrase(w) for w in held if w not in missed]
        together = " together" if len(missed) > 1 else f" together with {met[0]}" if met else ""
        raise BudgetError(
            f"{costs} cannot be met{together} by {who}: its closest plan has "
            f"{state.bytes / 1e6:.3g} MB and {state.latency * 1e3:.3g} ms"
        )
    if held:
        under = " and ".join(limits.phrase(w) for w in held)
        raise BudgetError(
            f"{limits.phrase('accuracy')} cannot be met together with {under}: "
            f"the best plan {who} finds under the "
            f"{' and '.join(held)} budget predicts {nsr_db(state.nsr):.3g} dB"
        )
    raise BudgetError(
        f"{limits.phrase('accuracy')} cannot be met by {who}: its most accurate "
        f"plan predicts {nsr_db(state.nsr):.3g} dB"
    )


def finish(
    problem: Problem,
    limits: Limits,
    idx,
    strategy: str,
    reasons: dict,
    start: float,
    details: dict | None = None,
) -> Decision:
    """The Decision for precision columns ``idx``; BudgetError if it misses a budget."""
    state = State(problem, idx)
    assert all(problem.allowed[i, j] for i, j in enumerate(state.idx)), "disallowed precision"
    plan = problem.plan(state.idx)
    state.bytes = problem.cost.plan_bytes(plan)
    state.latency = problem.cost.plan_latency(plan)
    if state.missed(limits) or not within_cap(state.nsr, limits.max_nsr):
        fail(problem, limits, state, strategy)
    return Decision(
        strategy,
        plan,
        state.bytes,
        state.latency,
        predicted_sqnr(problem.table, plan),
        reasons,
        time.perf_counter() - start,
        details or {},
    )


def format_decision(decision: Decision, table: SensitivityTable, cost: CostModel) -> str:
    """The decision as a text table: layer, precision, predicted ms and bytes, the local
    SQNR and output NSR at that precision, and the reason."""
    rows = [("layer", "precision", "ms", "bytes", "sqnr dB", "out nsr", "reason")]
    for i, name in enumerate(cost.layers):
        p = decision.plan[name]
        j = cost.column(p)
        sqnr, nsr = table.get("sqnr", name, p), table.get("output_nsr", name, p)
        rows.append(
            (
                name,
                p,
                f"{cost.latency[i, j] * 1e3:.3f}",
                f"{int(cost.bytes[i, j])}",
                f"{sqnr:.1f}",
                f"{nsr:.2e}",
                decision.reasons.get(name, ""),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    lines = [
        f"{decision.strategy}: {decision.predicted_bytes / 1e6:.3g} MB, "
        f"{decision.predicted_latency * 1e3:.3g} ms, output SQNR {decision.predicted_sqnr:.3g} dB "
        f"(decided in {decision.seconds * 1e3:.1f} ms)"
    ]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[6])
    return "\n".join(lines)
