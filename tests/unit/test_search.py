"""``strategy="search"`` (``irc.decision.search``): every candidate stays within the predicted
budgets, a longer search begins as a shorter one with the same seed, the best plan scored
is the decision and verifies as scored, and every executor (this process, threads, local
processes, a local Dask cluster) gives the same search."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from image_folders import PRE, labelled_folder
from onnx_builders import small_convnet

import irc
from irc.decision import BudgetError, Budgets
from irc.decision.cost import CostModel
from irc.decision.planning import Problem, State, resolve
from irc.decision.search import SearchOptions, neighbour
from irc.decision.table import CANDIDATES, LayerInfo, SensitivityTable
from irc.errors import InputError
from irc.measure import cross_entropy
from irc.precision import layer_name
from irc.stages import build_plan, calibrate, float_graph
from irc.support import quantizable_layers

FP32_BYTES = irc.compile(small_convnet(), progress=False).report().totals.fp32_bytes


def synthetic_problem(layers: int = 12) -> Problem:
    """A problem of ``layers`` equal layers: bytes halve down the ladder."""
    rng = np.random.default_rng(1)
    names = [f"l{i}" for i in range(layers)]
    infos = [LayerInfo(n, "conv2d", (8, 8, 3, 3), (8, 4, 4), 9216, False) for n in names]
    shape = (layers, len(CANDIDATES))
    metrics = {m: rng.random(shape) for m in ("sqnr", "mse", "sqnr_delta", "norm_error",
                                                "omega", "output_nsr")}  # fmt: skip
    table = SensitivityTable(infos, CANDIDATES, metrics, 8, "output", 0.0)
    precisions = ("fp32", *CANDIDATES)
    per = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5, "int2": 0.25}
    size = np.array([[int(1000 * per[p]) for p in precisions]] * layers)
    latency = np.full((layers, len(precisions)), 1e-4)
    every = np.ones((layers, len(precisions)), bool)
    cost = CostModel(names, precisions, latency, size, every, every, np.zeros((layers, 2)))
    return Problem(table, cost)


def test_every_neighbour_fits_the_size_budget_and_differs_from_its_plan():
    problem = synthetic_problem()
    limits = resolve(problem, Budgets(max_bytes=12 * 1000))  # int8 everywhere fits exactly
    start = tuple(problem.uniform("int8").tolist())
    rng = np.random.default_rng(0)
    moves = [neighbour(rng, problem, limits, start) for _ in range(300)]
    found = [m for m in moves if m is not None]
    assert len(found) > 100
    for plan in found:
        assert plan != start and State(problem, plan).bytes <= 12 * 1000
    ups = [m for m in found if any(problem.precisions[j] == "fp16" for j in m)]
    assert ups  # moves up are made room for by moves down elsewhere


def test_a_memoised_rounding_compiles_the_same_model():
    """Plans compiled with a rounding memo are bit-identical to plans compiled without it,
    and a layer's rounding at a precision is done once."""
    graph = float_graph(small_convnet())
    data = np.random.default_rng(3).normal(size=(8, 3, 16, 16)).astype(np.float32)
    calibration = calibrate(graph, data, progress=False)
    names = [layer_name(op) for op in quantizable_layers(graph)]
    plans = [{"default": "int4", names[0]: "int8"}, {"default": "int8", names[1]: "int2"}]
    memo = {}
    for plan in plans:
        fresh = build_plan(graph, plan, calibration, num_threads=1)
        kept = build_plan(graph, plan, calibration, num_threads=1, rounding_memo=memo)
        assert np.array_equal(fresh(data[:1])[0], kept(data[:1])[0])
    roundings = [key for key in memo if key[0] != "clip-scales"]
    assert len(roundings) == len({(n, p) for plan in plans for n in names
                                  for p in [plan.get(n, plan["default"])]})  # fmt: skip
    assert len(memo) - len(roundings) == len({key[:2] for key in roundings})  # clip scales


def test_cross_entropy_matches_a_hand_value():
    logits = np.array([[0.0, np.log(3.0)], [2.0, 2.0]])
    assert cross_entropy(logits, np.array([1, 0])) == pytest.approx([np.log(4 / 3), np.log(2)])


@pytest.mark.parametrize("bad", [{"evaluations": 0}, {"width": 1.5}, {"start": "search"}])
def test_bad_search_options_are_refused(bad):
    with pytest.raises(BudgetError, match="search"):
        SearchOptions(**bad)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return labelled_folder(tmp_path_factory.mktemp("search") / "imgs", 24)


def search_compile(folder, executor=None, **options):
    settings = {"evaluations": 6, "width": 2, **options}
    return irc.compile(small_convnet(), calibration=str(folder), preprocess=PRE,
                       strategy="search", budgets=Budgets(max_bytes=FP32_BYTES // 3),
                       sensitivity_limit=4, num_threads=1, progress=False, stage_cache=False,
                       strategy_options=settings, executor=executor)  # fmt: skip


@pytest.fixture(scope="module")
def in_process(folder):
    return search_compile(folder, width=1, evaluations=8)


def test_the_decision_is_the_best_plan_scored_and_verifies_as_scored(in_process):
    choice = in_process.choice
    details = choice.decision.details
    history = details["history"]
    assert details["evaluations"] == len(history) >= 2 and history[0]["move"] == "start"
    best = min(h["loss"] for h in history)
    scored_top1 = [h["top1"] for h in history if h["loss"] == best]
    assert round(choice.verification.top1, 4) in scored_top1
    assert choice.verification.bytes <= FP32_BYTES // 3
    assert choice.verification.top1_apart and choice.verification.top1_images == 12
    assert all(reason.startswith("search: ") for reason in choice.decision.reasons.values())
    assert details["improvements"][-1]["plan"] == choice.decision.plan


def test_a_longer_search_begins_as_a_shorter_one(folder, in_process):
    shorter = search_compile(folder, width=1, evaluations=4).choice.decision.details["history"]
    longer = in_process.choice.decision.details["history"]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in shorter]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in longer[:4]]


def _moves(model):
    return [(h["loss"], h["accepted"]) for h in model.choice.decision.details["history"]]


def test_local_processes_and_threads_search_as_this_process_does(folder):
    serial = search_compile(folder)  # width 2: a pool of two spawned processes
    with ThreadPoolExecutor(2) as threads:
        threaded = search_compile(folder, executor=threads)
    assert _moves(serial) == _moves(threaded)
    assert serial.choice.decision.plan == threaded.choice.decision.plan


def test_a_dask_cluster_runs_the_evaluations(folder):
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed (the test and cluster extras) is not installed"
    )
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:  # fmt: skip
        with distributed.Client(cluster) as client:
            with distributed.get_task_stream(client) as tasks:
                on_dask = search_compile(folder, executor=client)
    evaluated = [t for t in tasks.data if t["key"].startswith("_evaluate_with")]
    assert len(evaluated) == len(on_dask.choice.decision.details["history"])
    with ThreadPoolExecutor(2) as threads:
        threaded = search_compile(folder, executor=threads)
    assert _moves(on_dask) == _moves(threaded)


def test_search_needs_labelled_images():
    data = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)
    with pytest.raises(InputError, match="scores plans on labelled images"):
        irc.compile(small_convnet(), calibration=data, strategy="search",
                    budgets=Budgets(max_bytes=FP32_BYTES // 3), progress=False,
                    stage_cache=False)  # fmt: skip


def test_an_unknown_executor_is_refused(folder):
    with pytest.raises(BudgetError, match="executor must be"):
        search_compile(folder, executor=object())
