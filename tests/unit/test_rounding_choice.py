"""``rounding="best"`` (``irc.decision.rounding``): the merged sensitivity table keeps, per
layer and precision, the rounding with the lower output NSR, and a plan compiles each
layer with the rounding chosen for its precision, bit-exact with the reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from onnx_builders import small_convnet

import irc
from irc.calibration import Calibration
from irc.decision import Budgets
from irc.decision import rounding as rounding_module
from irc.decision.rounding import merge, plan_calibration, without_statistics
from irc.decision.synthetic import random_problem
from irc.decision.table import SensitivityTable

DATA = np.random.default_rng(5).normal(size=(24, 3, 16, 16)).astype(np.float32)


def _gptq_twin(table: SensitivityTable, precisions, seed: int) -> SensitivityTable:
    """A table of the same layers at ``precisions`` with other (random) metrics."""
    rng = np.random.default_rng(seed)
    columns = [table.precisions.index(p) for p in precisions]
    metrics = {m: v[:, columns] * rng.uniform(0.3, 3.0, size=(len(table.layers), len(columns)))
               for m, v in table.metrics.items()}  # fmt: skip
    return SensitivityTable(list(table.layers), tuple(precisions), metrics, table.images)


def test_merge_keeps_every_metric_of_the_lower_output_nsr_per_cell():
    nearest, _ = random_problem(12, seed=3)
    gptq = _gptq_twin(nearest, ("int8", "int4", "int2"), seed=4)
    merged = merge(nearest, gptq)
    for name in nearest.names:
        assert merged.rounding_of(name, "fp16") == "nearest"  # gptq did not measure fp16
        for p in gptq.precisions:
            a, b = nearest.get("output_nsr", name, p), gptq.get("output_nsr", name, p)
            kept = "gptq" if b < a else "nearest"
            assert merged.rounding_of(name, p) == kept
            source = gptq if kept == "gptq" else nearest
            for m in nearest.metrics:
                assert merged.get(m, name, p) == source.get(m, name, p)
    assert merged.get("output_nsr", nearest.names[0], "int4") == min(
        nearest.get("output_nsr", nearest.names[0], "int4"),
        gptq.get("output_nsr", nearest.names[0], "int4"),
    )
    assert {"nearest", "gptq"} <= set(merged.rounding.ravel())
    again = SensitivityTable.from_dict(merged.to_dict())  # the choice survives a file
    assert np.array_equal(again.rounding, merged.rounding)
    assert merged.rows()[0]["rounding"] == "nearest"


def test_merge_takes_a_precision_only_one_rounding_measured_from_that_one():
    whole, _ = random_problem(8, seed=6)
    nearest = _gptq_twin(whole, ("fp16", "int8"), seed=7)  # as analyze_best measures them
    gptq = _gptq_twin(whole, ("int8", "int4", "int2"), seed=8)
    merged = merge(nearest, gptq)
    assert merged.precisions == ("fp16", "int8", "int4", "int2")
    for name in whole.names:
        assert merged.rounding_of(name, "fp16") == "nearest"
        for p in ("int4", "int2"):
            assert merged.rounding_of(name, p) == "gptq"
            for m in whole.metrics:
                assert merged.get(m, name, p) == gptq.get(m, name, p)
        kept = "gptq" if gptq.get("output_nsr", name, "int8") < nearest.get(
            "output_nsr", name, "int8") else "nearest"  # fmt: skip
        assert merged.rounding_of(name, "int8") == kept
        assert merged.get("mse", name, "fp16") == nearest.get("mse", name, "fp16")


def test_analyze_best_measures_nearest_at_fp16_and_int8_only(monkeypatch):
    seen = []

    def fake_variants(graph, variants, data, **options):
        seen.extend(precisions for _, precisions in variants)
        table, _ = random_problem(4, seed=2)
        return [_gptq_twin(table, precisions, seed=i) for i, (_, precisions) in
                enumerate(variants)]  # fmt: skip

    monkeypatch.setattr(rounding_module, "analyze_variants", fake_variants)
    calibration = Calibration({}, "minmax", 0, {}, hessians={})
    merged = rounding_module.analyze_best(None, calibration, DATA)
    assert seen == [("fp16", "int8"), ("int8", "int4", "int2")]
    assert merged.precisions == ("fp16", "int8", "int4", "int2")


def test_plan_calibration_keeps_statistics_only_where_gptq_was_kept():
    table, _ = random_problem(3, seed=1)
    names = table.names  # gptq kept: the first layer at int4, the second at int2, never else
    rounding = np.full((3, len(table.precisions)), "nearest", dtype=object)
    rounding[0, table.precisions.index("int4")] = "gptq"
    rounding[1, table.precisions.index("int2")] = "gptq"
    table = replace(table, rounding=rounding)
    calibration = Calibration({}, "minmax", 0, {}, hessians=dict(zip(names, (1, 2, 3))))
    plan = {names[0]: "int4", names[1]: "int4", names[2]: "int2"}
    assert plan_calibration(calibration, table, plan).hessians == {names[0]: 1}
    default = {"default": "int2", names[0]: "int8"}
    assert plan_calibration(calibration, table, default).hessians == {names[1]: 2}
    assert calibration.hessians == dict(zip(names, (1, 2, 3)))  # the original is untouched
    assert without_statistics(calibration).hessians is None


def _weights(model) -> dict[str, np.ndarray]:
    """Layer name → its stored (packed) weight levels."""
    return {op.name: op.operands[1].producer.attrs["value"] for op in model.graph.ops
            if op.kind in ("qconv2d", "qgemm")}  # fmt: skip


def test_best_compiles_each_layer_with_the_rounding_chosen_for_its_precision():
    fp32 = irc.compile(small_convnet()).report().totals.fp32_bytes
    model = irc.compile(small_convnet(), calibration=DATA, strategy="auto",
                        budgets=Budgets(max_bytes=fp32 * 2 // 5), sensitivity_limit=8,
                        num_threads=1, progress=False, rounding="best")  # fmt: skip
    table, plan = model.choice.table, model.choice.decision.plan
    chosen = {name: table.rounding_of(name, p) for name, p in plan.items() if p.startswith("int")}
    assert set(chosen.values()) == {"nearest", "gptq"}  # this plan mixes the two
    full = {"default": "fp32", **plan}
    calibration = model.calibration  # with the GPTQ statistics of every layer
    by_rounding = {
        "nearest": _weights(irc.compile(small_convnet(), precision=full, progress=False,
                                        calibration=without_statistics(calibration))),
        "gptq": _weights(irc.compile(small_convnet(), precision=full, progress=False,
                                     calibration=calibration, rounding="gptq")),
    }  # fmt: skip
    stored = _weights(model)
    assert set(stored) == set(chosen)
    for name, rounding in chosen.items():
        other = "gptq" if rounding == "nearest" else "nearest"
        assert np.array_equal(stored[name], by_rounding[rounding][name])
        assert not np.array_equal(stored[name], by_rounding[other][name])
    assert dict(model.stats)["quantize"]["gptq"] == sum(r == "gptq" for r in chosen.values())
    notes = {op.name: op.attrs.get("note_rounding") for op in model.graph.ops
             if op.kind in ("qconv2d", "qgemm")}  # fmt: skip
    assert notes == chosen
    x = DATA[:1]
    assert np.array_equal(model(x)[0], irc.run(model.graph, [x])[0])  # Numba = reference


def test_best_rounding_needs_a_strategy():
    with pytest.raises(irc.InputError, match="strategy"):
        irc.compile(small_convnet(), precision="int4", calibration=DATA, rounding="best")
