"""From a calibrated float graph to a verified precision plan: measure, decide, check.

    sensitivity table (``sensitivity.analyze``) + cost model (``build_cost_model``)
      → with a latency budget: the cost model scaled to the uniform INT8, INT4, INT2 and
        FP32 models as measured whole (``in_context``)
      → ``strategies.decide(strategy, table, cost, budgets)``  (the plan, predicted costs)
      → compile the plan and verify it: stored bytes, batch-1 latency, output SQNR against
        FP32 and, given labelled data or an evaluation function, the top-1 drop
      → ``auto`` only: a bounded back-off when a verified budget is missed (the missed
        budget is tightened by the miss and the greedy decides again, at most
        ``MAX_BACKOFF`` times); the other strategies are the papers' and run once.

A top-1 drop budget is not predicted: with a size or latency budget the plan is made for
those and the drop verified; alone, it starts ``auto`` / ``sals`` at a noise cap of
(1 + drop) × the uniform INT8 plan's predicted output NSR, halved on each verified miss.

``choose`` returns a ``Choice``: the compiled model of the plan, the decision, the table,
the cost model and every verification made, and writes annotations (``note_*``) on the
compiled graph's layers: sensitivity at the chosen precision, predicted and measured
latency, and the reason for the choice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace

import numpy as np

from irc.build import build
from irc.calibration.progress import Progress, StageTimes, stage
from irc.decision.budgets import BudgetError, Budgets
from irc.decision.cost import INTEGER, CostModel
from irc.decision.costs_measure import build_cost_model
from irc.decision.holdout import HeldOut, paired_drop
from irc.decision.rounding import analyze_best, plan_calibration
from irc.decision.search import Evaluator, PlanEvaluation, SearchOptions, search_decision
from irc.decision.sensitivity import analyze
from irc.decision.strategies import decide
from irc.measure import interleaved_cpu, sqnr_db
from irc.opdef import has_trait
from irc.precision import layer_name
from irc.specialize import specialize
from irc.stages import build_plan

MAX_BACKOFF = 3


@dataclass
class Verification:
    """What the compiled plan measured."""

    bytes: int
    latency: float  # seconds, batch 1, median
    output_sqnr: float  # dB against FP32 on the sample data
    top1: float | None = None
    float_top1: float | None = None
    int8_latency: float | None = None  # uniform INT8 of the same model, same run
    top1_images: int | None = None  # the labelled images top-1 was scored on
    drop_margin: float | None = None  # the drop's 95% half-width (points), when known
    top1_apart: bool | None = None  # whether those images were kept apart from all fitting

    @property
    def drop(self) -> float | None:
        """Top-1 points lost against FP32 (None without labels)."""
        if self.top1 is None or self.float_top1 is None:
            return None
        return self.float_top1 - self.top1

    def drop_text(self) -> str | None:
        """The drop as a phrase with its interval and images, e.g. ``top-1 drop 0.78 ± 1.21
        points (95%, 128 held-out images)``; None without a drop."""
        return None if self.drop is None else f"top-1 drop {drop_phrase(self.to_dict())}"

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {"bytes": self.bytes, "latency_ms": self.latency * 1e3,
                "output_sqnr_db": _finite(self.output_sqnr), "top1": self.top1,
                "float_top1": self.float_top1, "drop": self.drop,
                "int8_latency_ms": None if self.int8_latency is None
                else self.int8_latency * 1e3,
                "top1_images": self.top1_images, "drop_margin": self.drop_margin,
                "top1_apart": self.top1_apart}  # fmt: skip


@dataclass
class Choice:
    """The result of ``choose``."""

    model: object  # the CompiledModel of the plan
    decision: object  # strategies.Decision
    table: object  # SensitivityTable
    cost: object  # CostModel
    verification: Verification
    attempts: list = field(default_factory=list)  # (Decision, Verification, missed) per try
    budgets: Budgets | None = None  # as the user asked
    seconds: dict = field(default_factory=dict)  # stage -> seconds (see ``choose``)
    reused: bool = False  # the plan and its verification came from the stage cache

    def summary(self) -> dict:
        """Strategy, budgets, prediction and verification (no per-layer data), JSON-ready."""
        d, v = self.decision, self.verification
        return {
            "strategy": d.strategy,
            "budgets": self.budgets.describe() if self.budgets else "no budget",
            "predicted": {
                "bytes": d.predicted_bytes,
                "latency_ms": d.predicted_latency * 1e3,
                "output_sqnr_db": _finite(d.predicted_sqnr),
            },  # fmt: skip
            "verified": v.to_dict(),
            "tries": len(self.attempts),
            "sensitivity_images": self.table.images,
            "sensitivity_loss": self.table.loss,
            "reused": self.reused,
        }

    def to_dict(self) -> dict:
        """The decision, its prediction and verification, per layer, JSON-ready."""
        out = self.decision.to_dict()
        out["verification"] = self.verification.to_dict()
        out["attempts"] = attempts_dict(self.attempts)
        out["sensitivity"] = self.table.to_dict()
        out["reused"] = self.reused
        return out


def drop_phrase(v: dict) -> str:
    """A verification's drop as ``0.78 ± 1.21 points (95%, 128 held-out images)``, from its
    dict (``Verification.to_dict``, or a saved model's summary); what it lacks left out."""
    text = f"{v['drop']:.2f}"
    if v.get("drop_margin") is not None:
        text += f" ± {v['drop_margin']:.2f}"
    text += " points"
    if v.get("top1_images") is not None:
        kind = "held-out" if v.get("top1_apart") else "calibration"
        interval = "95%, " if v.get("drop_margin") is not None else ""
        text += f" ({interval}{v['top1_images']} {kind} images)"
    return text


def attempts_dict(attempts) -> list[dict]:
    """The verified tries (Decision, Verification, missed budgets) as JSON-ready dicts."""
    return [{"plan_bytes": d.predicted_bytes, "missed": missed, **v.to_dict()}
            for d, v, missed in attempts]  # fmt: skip


@dataclass
class PartialChoice:
    """What ``choose`` reached before the budgets proved impossible (``BudgetError.partial``):
    every verified attempt (Decision, Verification, missed budgets), the sensitivity
    table and cost model they were decided on, and the calibration (set by the caller that
    made it)."""

    attempts: list
    table: object
    cost: object
    budgets: Budgets
    calibration: object = None

    @property
    def best(self):
        """The attempt closest to the budgets (least summed relative miss; the later one of
        equals), or None when no plan was verified."""
        if not self.attempts:
            return None
        shortfalls = [shortfall(self.budgets, v) for _, v, _ in self.attempts]
        least = min(shortfalls)
        return self.attempts[max(i for i, s in enumerate(shortfalls) if s == least)]

    def best_plan(self) -> dict[str, str] | None:
        """The best attempt's plan as ``irc compile --precision PLAN.json`` reads it."""
        best = self.best
        return None if best is None else {"default": "fp32", **best[0].plan}

    def to_dict(self) -> dict:
        """A report: the budgets (not met), every attempt, the best plan and what it
        measured, and the sensitivity table; JSON-ready."""
        best = self.best
        out = {"met": False, "budgets": self.budgets.describe(),
               "attempts": attempts_dict(self.attempts), "best": None}  # fmt: skip
        if best is not None:
            decision, verification, missed = best
            out["best"] = {**decision.to_dict(), "verification": verification.to_dict(),
                           "missed": missed, "met": False}  # fmt: skip
        out["sensitivity"] = None if self.table is None else self.table.to_dict()
        return out


def shortfall(budgets: Budgets, v: Verification) -> float:
    """How far ``v`` is from meeting ``budgets``: the sum of each missed budget's relative
    miss (0 when all are met)."""
    misses = []
    if budgets.max_bytes is not None:
        misses.append(v.bytes / budgets.max_bytes - 1.0)
    limit = _latency_limit(budgets, v)
    if limit is not None:
        misses.append(v.latency / limit - 1.0)
    if budgets.min_sqnr is not None:
        misses.append((budgets.min_sqnr - v.output_sqnr) / max(abs(budgets.min_sqnr), 1.0))
    if budgets.max_drop is not None and v.drop is not None:
        misses.append((v.drop - budgets.max_drop) / max(budgets.max_drop, 1.0))
    return float(sum(m for m in misses if m > 0))


def choose(
    graph,
    calibration,
    sample: np.ndarray,
    *,
    strategy: str = "auto",
    budgets: Budgets | None = None,
    labels: np.ndarray | None = None,
    evaluate=None,
    input_shapes=None,
    num_threads: int | None = 1,
    measure: bool = True,
    progress: bool = True,
    table=None,
    cost=None,
    strategy_options: dict | None = None,
    weights: str = "mse",
    rounding: str = "nearest",
    executor=None,
    rounding_memo: dict | None = None,
) -> Choice:
    """Measure, decide under ``budgets`` and verify; see the module docstring.

    ``graph``: the float graph after the float pipeline (only read); ``calibration``: its
    ``Calibration``; ``sample``: inputs [N, ...] for sensitivity and verification, with
    ``labels`` [N] for Ω as a loss change and the top-1 check; ``evaluate``: a function
    of a compiled model returning its top-1 (%), or a ``HeldOut`` (labelled images: the
    drop then has a 95% interval), used instead of ``labels`` for the drop.
    ``table`` / ``cost`` reuse earlier measurements. ``weights``: the weight clipping
    (``mse`` or ``minmax``) of every integer layer, measured and compiled alike.
    ``rounding="best"`` measures the table with nearest and GPTQ rounding and keeps the
    better per layer and precision (``irc.decision.rounding``; ``calibration.hessians``
    must hold the GPTQ statistics); otherwise the calibration's statistics decide. A table
    that holds rounding choices (given or measured) compiles each plan by them.
    ``executor`` runs ``search``'s evaluations (``irc.decision.search``).
    ``rounding_memo``: the layers' roundings measured with (``analyze``'s), which the
    plans compiled here reuse; a new one when not given.
    ``progress``: each stage shown on stderr (``irc.calibration.progress``). The Choice's
    ``seconds`` hold each stage's time: ``sensitivity`` and ``cost model`` (when measured
    here), ``decision and verification``, and ``build`` (compiling the plans).
    """
    budgets = budgets or Budgets()
    if budgets.max_drop is not None and labels is None and evaluate is None:
        raise BudgetError(
            "a top-1 drop budget needs labelled data (labels) or an evaluation function"
        )
    times = StageTimes()
    memo = {} if rounding_memo is None else rounding_memo
    if table is None:
        measure_table = analyze_best if rounding == "best" else analyze
        with times.timing("sensitivity"):
            table = measure_table(graph, calibration, sample, labels=labels,
                                  num_threads=num_threads, weights=weights,
                                  progress=progress, rounding_memo=memo)  # fmt: skip
    if cost is None:
        with times.timing("cost model"):
            cost = build_cost_model(graph, calibration, num_threads=num_threads or 1,
                                    measure=measure, weights=weights,
                                    progress=progress)  # fmt: skip
    with times.timing("decision and verification"):
        checker = _Checker(graph, calibration, sample, labels, evaluate, input_shapes,
                           num_threads, weights, table, times=times,
                           progress=progress, rounding_memo=memo)  # fmt: skip
    if measure and (budgets.max_latency is not None or budgets.max_latency_ratio is not None):
        with times.timing("cost model"):
            cost = in_context(cost, checker)
    with times.timing("decision and verification"):
        options = _strategy_options(strategy_options, strategy, budgets, table)
        if strategy == "search":
            options["executor"] = executor
        choice = _decide_and_verify(checker, table, cost, strategy, budgets, options)
        annotate(choice)
    choice.seconds = dict(times)
    return choice


def _strategy_options(strategy_options, strategy: str, budgets: Budgets, table) -> dict:
    """The strategy's options; with a drop budget alone, ``auto`` / ``sals`` get a noise
    cap (``max_nsr``) of (1 + drop) × the uniform INT8 plan's predicted output NSR."""
    options = dict(strategy_options or {})
    cost_budget = any(b is not None for b in (budgets.max_bytes, budgets.max_latency,
                                               budgets.max_latency_ratio))  # fmt: skip
    if budgets.max_drop is not None and strategy in ("auto", "sals") and not cost_budget:
        # no size or latency budget: compress while the predicted noise stays within a cap
        # that verification then checks (and halves on a miss)
        int8 = float(np.sum(table.column("output_nsr", "int8")))
        options.setdefault("max_nsr", int8 * (1.0 + budgets.max_drop))
    return options


def _decide_and_verify(checker: _Checker, table, cost, strategy: str, budgets: Budgets,
                       options: dict) -> Choice:  # fmt: skip
    """Decide, compile and verify, backing off (``auto`` only) while a budget is missed; a
    BudgetError carries what was reached as its ``partial`` (a ``PartialChoice``)."""
    attempts = []
    try:
        return _tries(checker, table, cost, strategy, budgets, options, attempts)
    except BudgetError as e:
        e.partial = PartialChoice(attempts, table, cost, budgets)
        raise


def _tries(checker: _Checker, table, cost, strategy: str, budgets: Budgets, options: dict,
           attempts: list) -> Choice:  # fmt: skip
    """``_decide_and_verify``'s loop; each verified try is appended to ``attempts``."""
    tries = 1 + (MAX_BACKOFF if strategy == "auto" else 0)
    asked = budgets
    for number in range(1, tries + 1):
        try:
            decision = _decide(checker, table, cost, strategy, budgets, options)
        except BudgetError as e:
            if not attempts:
                raise
            raise BudgetError(
                f"{attempts[-1][2][0]} is not met by the verified plan and tightening it "
                f"fails: {e}; {relax_advice(asked, attempts)}"
            ) from None
        with stage(f"verify plan {number}", enabled=checker.progress):
            model = checker.compile(decision.plan)
            verification = checker.verify(model, budgets)
        missed = _missed(asked, verification)
        attempts.append((decision, verification, missed))
        if not missed or strategy != "auto":
            break
        budgets, options = _tighten(budgets, options, asked, verification, decision)
    else:
        raise BudgetError(
            f"{missed[0]} is not met after {tries} verified tries of auto (the last plan "
            f"measured {measured_text(verification)}); {relax_advice(asked, attempts)}"
        )
    _warn_about_drop(asked, verification)
    return Choice(model, decision, table, cost, verification, attempts, asked)


def _decide(checker: _Checker, table, cost, strategy: str, budgets: Budgets, options: dict):
    """The strategy's Decision: a pure strategy's, or ``search``'s, which compiles and scores
    candidates on the checker's held-out images (``irc.decision.search``)."""
    if strategy != "search":
        return decide(strategy, table, cost, budgets, **options)
    if not isinstance(checker.evaluate, HeldOut):
        raise BudgetError(
            "strategy 'search' scores plans on labelled images: give a calibration folder "
            "with labels.txt, or holdout=a labelled folder"
        )
    settings = dict(options)
    executor = settings.pop("executor", None)
    try:
        search_options = SearchOptions(**settings)
    except TypeError:
        known = ", ".join(f.name for f in fields(SearchOptions))
        raise BudgetError(
            f"search: unknown option(s) {', '.join(sorted(settings))}; known: {known}"
        ) from None
    start_options = _strategy_options(None, search_options.start, budgets, table)
    start = decide(search_options.start, table, cost, budgets, **start_options)
    evaluation = PlanEvaluation(checker.graph, checker.calibration, table, checker.weights,
                                checker.evaluate)  # fmt: skip
    with Evaluator(evaluation, executor, search_options.width) as evaluator:
        return search_decision(table, cost, budgets, start.plan, evaluator, search_options,
                               float_hits=checker.float_hits,
                               progress=checker.progress)  # fmt: skip


UNIFORM = ("int8", "int4", "int2", "fp32")  # the uniform builds ``in_context`` measures
# A verified latency this far above its limit still meets it: the spread of one plan's
# interleaved medians from run to run on a shared machine (measured 1-3%), below which
# tightening the budget chases noise and gives up accuracy for nothing.
LATENCY_TOLERANCE = 0.02
NEAR_LIMIT = 0.06  # a latency this close to its budget (either side) is measured again
RECHECK_RUNS = 60


def in_context(cost: CostModel, checker: _Checker) -> CostModel:
    """``cost`` scaled to the model's uniform INT8, INT4, INT2 and FP32 builds, measured
    here whole (``scaled_to``; a precision some layer has no kernel for is left out); the
    INT8 build is kept as the reference of latency ratios."""
    kept = [p for p in UNIFORM if p in cost.precisions and cost.allowed[:, cost.column(p)].all()]
    models = {}
    with Progress(len(kept), label="uniform builds", unit="model",
                  enabled=checker.progress) as bar:  # fmt: skip
        for precision in kept:
            models[precision] = checker.compile({"default": precision})
            bar.update(1)
    checker.keep_int8(models["int8"])
    seconds = _interleaved_latency(list(models.values()), checker.one(), checker.threads)
    return scaled_to(cost, dict(zip(models, seconds)))


def scaled_to(cost: CostModel, measured: dict[str, float]) -> CostModel:
    """``cost`` with its latencies scaled so that it predicts each uniform model of
    ``measured`` (precision → seconds; ``int8`` and ``fp32`` at least) as measured: the
    transitions and the rest of the model by INT8's measured / predicted ratio, INT8's
    column by it too, every other measured precision's column by what then makes its
    uniform model come out as measured, the integer columns not measured as INT8's and the
    float ones as FP32's. A layer program runs one layer over and over with its data in
    cache; in a model its data comes from the layer before, float activations are four
    times the bytes of int8 ones, and 4- and 2-bit weights are unpacked in the products, so
    the precisions' shares differ from the layers' alone (``extra["context_scale"]`` holds
    the factors)."""
    every = cost.layers
    k_int = measured["int8"] / cost.plan_latency(dict.fromkeys(every, "int8"))
    factors = {"int8": k_int}
    for precision, seconds in measured.items():
        if precision == "int8":
            continue
        plan = dict.fromkeys(every, precision)
        layers = float(cost.latency[:, cost.column(precision)].sum())
        rest = cost.plan_latency(plan) - layers  # the other ops and any transitions
        factors[precision] = max(seconds - k_int * rest, 0.0) / layers if layers > 0 else 1.0
    latency = cost.latency.copy()
    for j, precision in enumerate(cost.precisions):
        default = factors["int8"] if precision in INTEGER else factors["fp32"]
        latency[:, j] *= factors.get(precision, default)
    extra = {**cost.extra, "context_scale": factors}
    return replace(cost, latency=latency, transition=cost.transition * k_int,
                   other_latency=cost.other_latency * k_int, extra=extra)  # fmt: skip


def _missed(budgets: Budgets, v: Verification) -> list[str]:
    """The budgets the verification shows missed, as phrases naming them (a latency within
    ``LATENCY_TOLERANCE`` of its limit counts as met)."""
    missed = []
    if budgets.max_bytes is not None and v.bytes > budgets.max_bytes:
        missed.append(f"size ≤ {budgets.max_bytes / 1e6:.3g} MB (measured {v.bytes / 1e6:.3g})")
    limit = _latency_limit(budgets, v)
    if limit is not None and v.latency > limit * (1.0 + LATENCY_TOLERANCE):
        missed.append(f"latency ≤ {limit * 1e3:.3g} ms (measured {v.latency * 1e3:.3g})")
    if budgets.min_sqnr is not None and v.output_sqnr < budgets.min_sqnr:
        missed.append(f"output SQNR ≥ {budgets.min_sqnr:g} dB (measured {v.output_sqnr:.1f})")
    if drop_over(budgets, v):
        measured = drop_phrase(v.to_dict())
        missed.append(f"top-1 drop ≤ {budgets.max_drop:g} (measured {measured})")
    return missed


def drop_over(budgets: Budgets, v: Verification) -> bool:
    """Whether ``v`` shows the top-1 drop above its budget: by more than the drop's 95%
    margin when it has one (a drop within its interval of the budget is not shown to be
    above it), else at all."""
    if budgets.max_drop is None or v.drop is None:
        return False
    return v.drop - (v.drop_margin or 0.0) > budgets.max_drop


def _latency_limit(budgets: Budgets, v: Verification) -> float | None:
    limits = []
    if budgets.max_latency is not None:
        limits.append(budgets.max_latency)
    if budgets.max_latency_ratio is not None and v.int8_latency is not None:
        limits.append(budgets.max_latency_ratio * v.int8_latency)
    return min(limits) if limits else None


def _tighten(budgets, options, asked, v: Verification, decision):
    """Budgets and options for the next try: each missed budget shrunk by its miss."""
    if asked.max_bytes is not None and v.bytes > asked.max_bytes:
        budgets = replace(budgets, max_bytes=int(budgets.max_bytes * asked.max_bytes / v.bytes))
    limit = _latency_limit(asked, v)
    if limit is not None and v.latency > limit:
        scale = limit / v.latency
        if budgets.max_latency is not None:
            budgets = replace(budgets, max_latency=budgets.max_latency * scale)
        if budgets.max_latency_ratio is not None:
            budgets = replace(budgets, max_latency_ratio=budgets.max_latency_ratio * scale)
    accuracy_missed = (asked.min_sqnr is not None and v.output_sqnr < asked.min_sqnr) or (
        drop_over(asked, v)
    )
    if accuracy_missed:
        predicted = 10.0 ** (-decision.predicted_sqnr / 10.0)
        options = dict(options, max_nsr=min(options.get("max_nsr", predicted), predicted) / 2)
    return budgets, options


def _warn_about_drop(budgets: Budgets, v: Verification) -> None:
    """Warn when the chosen plan's drop is above its budget but within its 95% interval
    (accepted: not shown to be above), and when that interval is wider than the budget (too
    few labelled images to tell a plan within the budget from one outside it)."""
    if budgets.max_drop is None or v.drop is None or v.drop_margin is None:
        return
    if v.drop > budgets.max_drop:
        warnings.warn(
            f"top-1 drop ≤ {budgets.max_drop:g}: the plan measured {drop_phrase(v.to_dict())}"
            ", above the budget but within its 95% interval, so not shown to miss it",
            stacklevel=3,
        )
    if v.drop_margin > budgets.max_drop:
        warnings.warn(
            f"the top-1 drop is measured on {v.top1_images} labelled images (± "
            f"{v.drop_margin:.2f} points at 95%), too few to check a {budgets.max_drop:g}-point "
            "budget: hold out more labelled images (holdout=FOLDER, --holdout DIR)",
            stacklevel=3,
        )


def relax_advice(asked: Budgets, attempts) -> str:
    """Which budgets to relax, and to what, for the closest verified plan of ``attempts``
    (the least summed relative miss) to meet them: each budget it missed, at what it
    measured (rounded up)."""
    _, v, _ = PartialChoice(attempts, None, None, asked).best
    steps = []
    if asked.max_bytes is not None and v.bytes > asked.max_bytes:
        steps.append(f"size to {_up(v.bytes / 1e6)} MB")
    limit = _latency_limit(asked, v)
    if limit is not None and v.latency > limit * (1.0 + LATENCY_TOLERANCE):
        if asked.max_latency_ratio is not None and v.int8_latency:
            steps.append(f"latency to {_up(v.latency / v.int8_latency)}x INT8")
        else:
            steps.append(f"latency to {_up(v.latency * 1e3)} ms")
    if asked.min_sqnr is not None and v.output_sqnr < asked.min_sqnr:
        steps.append(f"output SQNR to {np.floor(v.output_sqnr * 10) / 10:g} dB")
    if drop_over(asked, v):
        steps.append(f"top-1 drop to {_up(v.drop - v.drop_margin if v.drop_margin else v.drop)}")
    if not steps:
        return "loosen that budget"
    return f"relax {' and '.join(steps)} (what the closest verified plan measured)"


def _up(x: float) -> str:
    """``x`` rounded up to 3 significant digits, as text."""
    if x <= 0:
        return f"{x:.3g}"
    step = 10.0 ** (np.floor(np.log10(x)) - 2)
    return f"{np.ceil(x / step - 1e-9) * step:.3g}"


def measured_text(v: Verification) -> str:
    """What a verification measured, as a short phrase (size, latency, SQNR, top-1 drop)."""
    parts = [f"{v.bytes / 1e6:.3g} MB", f"{v.latency * 1e3:.3g} ms",
             f"output SQNR {v.output_sqnr:.1f} dB"]  # fmt: skip
    if v.drop is not None:
        parts.append(v.drop_text())
    return ", ".join(parts)


def _finite(x: float):
    return float(x) if np.isfinite(x) else None


class _Checker:
    """Compiles plans of one model and measures them against its FP32 build."""

    def __init__(self, graph, calibration, sample, labels, evaluate, input_shapes, threads,
                 weights="mse", table=None, *, times=None, progress=False,
                 rounding_memo=None):  # fmt: skip
        self.graph, self.calibration, self.table = graph, calibration, table
        self.rounding_memo = rounding_memo
        self.sample, self.labels, self.evaluate = sample, labels, evaluate
        self.input_shapes, self.threads, self.weights = input_shapes, threads, weights
        self.times = StageTimes() if times is None else times  # builds go to "build"
        self.progress = progress
        self.shaped = specialize(graph, input_shapes) if input_shapes else graph
        with stage("fp32 reference", enabled=progress):
            with self.times.timing("build"):
                self.reference = build(self.shaped, num_threads=threads)
            self.float_outputs = self._outputs(self.reference)
            self.float_top1, self.float_hits = self._top1(self.reference, self.float_outputs)
        self._int8 = None

    def compile(self, plan: dict[str, str]):
        """The compiled ``plan``, each layer rounded as the table chose (if it chose), else
        as the calibration's statistics say (GPTQ where it holds them)."""
        plan = {"default": "fp32", **plan}
        calibration = self.calibration
        if self.table is not None:
            calibration = plan_calibration(calibration, self.table, plan)
        with self.times.timing("build"):
            return build_plan(self.graph, plan, calibration, weights=self.weights,
                              input_shapes=self.input_shapes, num_threads=self.threads,
                              rounding_memo=self.rounding_memo)  # fmt: skip

    def keep_int8(self, model) -> None:
        """Use ``model`` as the uniform INT8 build latency ratios are measured against."""
        self._int8 = model

    def verify(self, model, budgets: Budgets) -> Verification:
        """The plan's measured size, latency, output SQNR and top-1. A latency within
        ``NEAR_LIMIT`` of its budget is measured again over ``RECHECK_RUNS`` rounds (a
        noisy neighbour must not decide a plan at the edge)."""
        outputs = self._outputs(model)
        sqnr = sqnr_db(outputs, self.float_outputs)
        top1, hits = self._top1(model, outputs)
        latency, int8 = self._latency(model, budgets, runs=15)
        size = model.report().totals.bytes
        limit = _latency_limit(budgets, Verification(size, latency, sqnr, None, None, int8))
        if limit is not None and abs(latency / limit - 1.0) < NEAR_LIMIT:
            latency, int8 = self._latency(model, budgets, runs=RECHECK_RUNS)
        verification = Verification(size, latency, sqnr, top1, self.float_top1, int8)
        if hits is not None:
            _, margin = paired_drop(self.float_hits, hits)
            apart = self.evaluate.apart if isinstance(self.evaluate, HeldOut) else False
            verification = replace(verification, top1_images=len(hits), drop_margin=margin,
                                   top1_apart=apart)  # fmt: skip
        return verification

    def _latency(self, model, budgets: Budgets, runs: int) -> tuple[float, float | None]:
        """(the model's latency, uniform INT8's or None), interleaved over ``runs`` rounds;
        INT8 is measured beside it when the latency budget is a ratio to it."""
        if budgets.max_latency_ratio is None:
            (latency,) = _interleaved_latency([model], self.one(), self.threads, runs)
            return latency, None
        if self._int8 is None:
            self._int8 = self.compile({"default": "int8"})
        latency, int8 = _interleaved_latency([model, self._int8], self.one(), self.threads, runs)
        return latency, int8

    def one(self) -> np.ndarray:
        """A batch of the sample as the compiled models take it (batch-1 latency input)."""
        batch = self.reference.graph.inputs[0].type.shape[0]
        return np.ascontiguousarray(self.sample[:batch])

    def _outputs(self, model) -> np.ndarray:
        batch = model.graph.inputs[0].type.shape[0]
        rows = []
        for start in range(0, len(self.sample) - batch + 1, batch):
            rows.append(model(np.ascontiguousarray(self.sample[start : start + batch]))[0])
        return np.concatenate(rows).astype(np.float64)

    def _top1(self, model, outputs) -> tuple[float | None, np.ndarray | None]:
        """(top-1 %, per-image hits or None): on the held-out images, by ``evaluate`` (a
        function: no hits), or on the labelled sample."""
        if isinstance(self.evaluate, HeldOut):
            hits = self.evaluate.correct(model)
            return 100.0 * float(np.mean(hits)), hits
        if self.evaluate is not None:
            return float(self.evaluate(model)), None
        if self.labels is None:
            return None, None
        hits = np.argmax(outputs, axis=1) == np.asarray(self.labels)[: len(outputs)]
        return 100.0 * float(np.mean(hits)), hits


def _interleaved_latency(models, x, threads: int | None, runs: int = 15) -> list[float]:
    """Median seconds per call of each model on ``threads`` threads (None: one, as the cost
    model measures), runs interleaved (fair on a noisy host): on one thread the process CPU
    time (a neighbour's load does not enter it, so the same plan measures the same from run
    to run), else the wall time."""
    threads = threads or 1
    pinned = [m.with_threads(threads) for m in models]
    runners = {i: lambda x, m=m: m(x) for i, m in enumerate(pinned)}
    medians = interleaved_cpu(runners, x, runs, 1)
    return [medians[i][1 if threads == 1 else 0] for i in range(len(models))]


def annotate(choice: Choice) -> None:
    """Write the decision's reasons and numbers as ``note_*`` on the compiled layers."""
    table, cost, decision = choice.table, choice.cost, choice.decision
    x = np.zeros(choice.model.graph.inputs[0].type.shape, np.float32)
    measured = {t.op: t.seconds for t in choice.model.profile(x, runs=5)}
    for op in choice.model.graph.ops:
        if not (has_trait(op.kind, "layer") or has_trait(op.kind, "integer-layer")):
            continue
        name = layer_name(op)
        if name not in decision.plan:
            continue
        p = decision.plan[name]
        i = table.index(name)
        op.attrs["note_precision"] = p
        if p != "fp32":
            op.attrs["note_output_nsr"] = float(table.get("output_nsr", name, p))
            op.attrs["note_local_sqnr"] = float(table.get("sqnr", name, p))
        rounding = table.rounding_of(name, p) if p.startswith("int") else None
        if rounding is not None:
            op.attrs["note_rounding"] = rounding
        op.attrs["note_predicted_us"] = round(float(cost.latency[i, cost.column(p)]) * 1e6, 2)
        key = op.name or op.results[0].name
        if key in measured:
            op.attrs["note_measured_us"] = round(measured[key] * 1e6, 2)
        if name in decision.reasons:
            op.attrs["note_reason"] = decision.reasons[name]
