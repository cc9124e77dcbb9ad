"""``strategy="search"``: an evaluation-driven baseline, the way accuracy-aware tuners work.

Starting from a plan (``start``: another strategy's decision under the same budgets, ``auto``
by default), the search tries moves: one layer a precision up or down, and after a move up,
random other layers down until the plan fits the size and latency budgets again (as the
cost model predicts them). Each candidate is compiled and scored on the held-out labelled
images (``irc.decision.holdout``): its mean cross-entropy, a smoother score than top-1 on a
few hundred images, with top-1 kept beside it. Each round scores ``width`` candidates at
once, moves to the best if it beats the current plan, and the best plan scored (within the
top-1 drop budget on those images, when there is one) is the decision, after
``evaluations`` candidates in all. The start plan counts as the first evaluation; a run of
300 evaluations begins as a run of 100 with the same seed does.

The evaluations are independent, so they run through an executor:

- ``None``: in this process when ``width`` is 1, else a pool of ``width`` local processes
  (``concurrent.futures.ProcessPoolExecutor``, spawned), each given the evaluation once;
- a ``dask.distributed.Client``: the evaluation is scattered to every worker once and each
  candidate submitted as a task, so a cluster's machines share the search;
- any other ``concurrent.futures.Executor`` (threads, say): each task gets the evaluation.

    >>> model = irc.compile("m.onnx", calibration="calib/", preprocess="torchvision",
    ...                     strategy="search", budgets=Budgets(max_bytes=2_300_000),
    ...                     strategy_options={"evaluations": 300}, executor=client)
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from irc.calibration.progress import Progress
from irc.decision.budgets import BudgetError
from irc.decision.holdout import HeldOut
from irc.decision.planning import Problem, State, finish, resolve, within_cap
from irc.decision.rounding import plan_calibration
from irc.stages import build_plan

DEFAULT_EVALUATIONS = 100


@dataclass
class Score:
    """A candidate plan's score on the held-out images."""

    loss: float  # mean cross-entropy at the labels
    top1: float  # %
    hits: np.ndarray  # bool per image: top-1 right
    seconds: float  # to compile and score it


@dataclass
class PlanEvaluation:
    """Everything a worker needs to compile a plan and score it: the float graph, its
    calibration (with GPTQ statistics), the sensitivity table's rounding choices, the
    weight clipping and the held-out images. Called with a plan, it returns its ``Score``;
    each layer's rounding at each precision is done once (``memo``)."""

    graph: object
    calibration: object
    table: object
    weights: str
    held_out: HeldOut
    memo: dict = field(default_factory=dict)  # each layer's rounding, done once per precision

    def __call__(self, plan: dict[str, str]) -> Score:
        start = time.perf_counter()
        plan = {"default": "fp32", **plan}
        calibration = plan_calibration(self.calibration, self.table, plan)
        model = build_plan(self.graph, plan, calibration, weights=self.weights, num_threads=1,
                           warmup=False, rounding_memo=self.memo)  # fmt: skip
        hits, losses = self.held_out.score(model)
        return Score(float(losses.mean()), 100.0 * float(hits.mean()), hits,
                     time.perf_counter() - start)  # fmt: skip


# -- running evaluations ----------------------------------------------------------------

_installed: PlanEvaluation | None = None  # a pool process's evaluation (``_install``)


def _install(evaluation: PlanEvaluation) -> None:
    global _installed
    _installed = evaluation


def _evaluate_installed(plan: dict[str, str]) -> Score:
    return _installed(plan)


def _evaluate_with(evaluation: PlanEvaluation, plan: dict[str, str]) -> Score:
    return evaluation(plan)


class Evaluator:
    """Scores lists of plans with ``evaluation`` through ``executor`` (see the module
    docstring); a context manager that shuts down a pool it made."""

    def __init__(self, evaluation: PlanEvaluation, executor=None, width: int = 1):
        self.evaluation, self.width = evaluation, width
        self._pool, self._dask, self._executor = None, None, None
        if executor is None and width > 1:
            spawn = multiprocessing.get_context("spawn")  # fork is unsafe after OpenMP starts
            self._pool = ProcessPoolExecutor(width, mp_context=spawn, initializer=_install,
                                             initargs=(evaluation,))  # fmt: skip
        elif executor is not None and _is_dask_client(executor):
            self._dask = executor
            self._scattered = executor.scatter(evaluation, broadcast=True)
        elif executor is not None:
            if not isinstance(executor, Executor):
                raise BudgetError(
                    "search: executor must be a concurrent.futures.Executor or a "
                    f"dask.distributed.Client; got {type(executor).__name__}"
                )
            self._executor = executor

    def scores(self, plans: list[dict[str, str]]) -> list[Score]:
        """The ``Score`` of each plan, in order."""
        if self._pool is not None:
            return list(self._pool.map(_evaluate_installed, plans))
        if self._dask is not None:
            futures = [self._dask.submit(_evaluate_with, self._scattered, plan, pure=False)
                       for plan in plans]  # fmt: skip
            return self._dask.gather(futures)
        if self._executor is not None:
            futures = [self._executor.submit(_evaluate_with, self.evaluation, plan)
                       for plan in plans]  # fmt: skip
            return [f.result() for f in futures]
        return [self.evaluation(plan) for plan in plans]

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _is_dask_client(executor) -> bool:
    return all(hasattr(executor, name) for name in ("scatter", "submit", "gather"))


# -- the search -------------------------------------------------------------------------


@dataclass
class SearchOptions:
    """``strategy_options`` of ``search``."""

    evaluations: int = DEFAULT_EVALUATIONS
    width: int = 2  # candidates scored per round (the local pool's processes)
    seed: int = 0
    start: str = "auto"  # the strategy whose plan the search starts from

    def __post_init__(self):
        for name in ("evaluations", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BudgetError(f"search: {name} must be a positive int; got {value!r}")
        if self.start == "search":
            raise BudgetError("search: start must be another strategy's name")


def search(problem: Problem, limits, start_idx, evaluator: Evaluator, options: SearchOptions,
           *, max_drop: float | None, float_hits: np.ndarray,
           progress: bool = False) -> tuple[list[int], list[dict], list[tuple]]:  # fmt: skip
    """(the best plan's precision columns, the history: one dict per evaluation, the
    improvements: (evaluation number, columns) each time the best plan changed); see the
    module docstring. ``float_hits``: the FP32 model's per-image top-1 hits, against which
    a candidate's drop on the held-out images is measured for ``max_drop``."""
    rng = np.random.default_rng(options.seed)
    history: list[dict] = []
    seen: dict[tuple, Score] = {}

    def admissible(score: Score) -> bool:
        drop = 100.0 * float(np.mean(float_hits.astype(float) - score.hits))
        return max_drop is None or drop <= max_drop

    with Progress(options.evaluations, label="search", unit="plan", enabled=progress) as bar:
        current = tuple(int(j) for j in start_idx)
        (seen[current],) = evaluator.scores([problem.plan(current)])
        history.append(_entry(1, seen[current], True, "start"))
        bar.update(1)
        best = current if admissible(seen[current]) else None
        improvements = [] if best is None else [(1, best)]
        while len(history) < options.evaluations:
            wanted = min(options.width, options.evaluations - len(history))
            proposals = _proposals(rng, problem, limits, current, wanted, seen)
            if not proposals:
                break  # no unscored neighbour found: the search has converged
            scores = evaluator.scores([problem.plan(p) for p in proposals])
            for plan, score in zip(proposals, scores):
                seen[plan] = score
            leader = min(zip(proposals, scores), key=lambda ps: ps[1].loss)
            moved = leader[1].loss < seen[current].loss
            for plan, score in zip(proposals, scores):
                history.append(_entry(len(history) + 1, score, moved and plan == leader[0]))
                bar.update(1)
                if admissible(score) and (best is None or score.loss < seen[best].loss):
                    best = plan
                    improvements.append((len(history), best))
            if moved:
                current = leader[0]
    if best is None:
        raise BudgetError(
            f"search: no plan of the {len(history)} scored keeps the top-1 drop within "
            f"{max_drop:g} on the held-out images; relax the drop budget or the size budget"
        )
    return list(best), history, improvements


def _entry(number: int, score: Score, accepted: bool, move: str = "") -> dict:
    return {"evaluation": number, "loss": round(score.loss, 6), "top1": round(score.top1, 4),
            "accepted": accepted, "seconds": round(score.seconds, 3), "move": move}  # fmt: skip


def _proposals(rng, problem: Problem, limits, current: tuple, wanted: int, seen) -> list[tuple]:
    """Up to ``wanted`` distinct unscored neighbours of ``current`` within the limits."""
    found: list[tuple] = []
    for _ in range(200 * wanted):
        candidate = neighbour(rng, problem, limits, current)
        if candidate is not None and candidate not in seen and candidate not in found:
            found.append(candidate)
            if len(found) == wanted:
                break
    return found


def neighbour(rng, problem: Problem, limits, idx: tuple) -> tuple | None:
    """A random move from ``idx``: one layer a rung up or down its ladder; after a move up,
    random other layers a rung down until the predicted size and latency fit ``limits``.
    None when the move leaves the ladder or cannot be made to fit."""
    state = State(problem, idx)
    i = int(rng.integers(len(problem)))
    ladder = problem.ladder(i)
    rung = ladder.index(state.idx[i]) + int(rng.choice((-1, 1)))
    if not 0 <= rung < len(ladder):
        return None
    state.move(i, ladder[rung])
    while state.missed(limits):
        lower = [k for k in range(len(problem)) if k != i and _rung(problem, state, k) is not None]
        if not lower:
            return None
        k = int(rng.choice(lower))
        state.move(k, _rung(problem, state, k))
    if not within_cap(state.nsr, limits.max_nsr):
        return None
    return tuple(state.idx)


def _rung(problem: Problem, state: State, k: int) -> int | None:
    """The column one rung below layer ``k``'s, or None at the bottom of its ladder."""
    ladder = problem.ladder(k)
    position = ladder.index(state.idx[k])
    return ladder[position + 1] if position + 1 < len(ladder) else None


def search_decision(table, cost, budgets, start_plan: dict[str, str], evaluator: Evaluator,
                    options: SearchOptions, *, float_hits, progress=False):  # fmt: skip
    """The ``search`` Decision from ``start_plan``: its plan, predicted costs, a reason per
    layer (kept from the start plan, or moved by the search) and ``details`` (the
    evaluations, the history and each improvement's plan: the best plan of a shorter
    search with the same seed is the last improvement within its evaluations)."""
    began = time.perf_counter()
    problem = Problem(table, cost)
    limits = resolve(problem, budgets)
    start_idx = [problem.col[start_plan[name]] for name in problem.names]
    best, history, improvements = search(problem, limits, start_idx, evaluator, options,
                           max_drop=budgets.max_drop, float_hits=float_hits,
                           progress=progress)  # fmt: skip
    reasons = {}
    for name, j, k in zip(problem.names, start_idx, best):
        moved = "kept" if j == k else f"moved from {problem.precisions[j]}"
        reasons[name] = f"search: {moved} ({options.start} start)"
    details = {"evaluations": len(history), "start": options.start, "history": history,
               "improvements": [{"evaluation": n, "plan": problem.plan(idx)}
                                for n, idx in improvements]}  # fmt: skip
    return finish(problem, limits, best, "search", reasons, began, details)
