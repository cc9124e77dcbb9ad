"""Per-channel tables stored narrow: weight scales with a float16's significand (stored as
float16 · 2^e), int32 biases in the narrowest integer type holding them; the report and
the cost model count what the file stores, and loading gives back the very bits."""

from __future__ import annotations

import numpy as np
import pytest
from graph_builders import tiny_cnn_float, tiny_cnn_levels
from onnx_builders import tiny_cnn

import irc
import irc.serialize as serialize
from irc import quant
from irc.decision.costs_measure import build_cost_model
from irc.derived_constants import half_scales, narrowed, narrowest_int, stored_nbytes, widened
from irc.interpreter import run_graph
from irc.report import model_report
from irc.serialize import (
    FORMAT_VERSION,
    ModelFileError,
    _index,
    _split,
    read_graph_file,
    write_graph_file,
)

X = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
DATA = np.random.default_rng(3).normal(size=(10, 3, 8, 8)).astype(np.float32)
F32 = np.dtype(np.float32)


def float_graph():
    return tiny_cnn_float()


def quantized_graph(plan, weight_scale: float = 1.0) -> irc.Graph:
    """tiny_cnn at L3 under ``plan``, its weights times ``weight_scale``, min/max ranges."""
    return tiny_cnn_levels(plan, X, weight_scale)


def qconstants(graph, dtypes):
    """The qconstant ops of ``graph`` whose dtype is one of ``dtypes``."""
    return [op for op in graph.ops if op.kind == "qconstant" and op.attrs["dtype"] in dtypes]


def index_entries(path):
    """The payload index of a model file, read as the reader does."""
    return _index(str(path), _split(str(path), path.read_bytes())[1])


def round_trip(graph, path):
    """Write and read ``graph``; the loaded graph prints as the original (every bit)."""
    write_graph_file(graph, path)
    loaded, _ = read_graph_file(path)
    assert irc.print_graph(loaded, full=True) == irc.print_graph(graph, full=True)
    for got, want in zip(run_graph(loaded, [X]), run_graph(graph, [X])):
        np.testing.assert_array_equal(got, want)
    return loaded


# ------------------------------------------------------------------ the arithmetic
def test_storable_scales_are_the_nearest_float16_in_its_normal_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(2.0**-14, 6e4, 20_000)
    np.testing.assert_array_equal(quant.storable_scales(x), x.astype(np.float16).astype(F32))
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(quant.storable_scales(x32), x32.astype(np.float16).astype(F32))
    tiny = rng.uniform(1e-9, 1e-5, 1000)  # below float16's normal range: 11 bits still
    s = quant.storable_scales(tiny)
    assert np.all(np.abs(s / tiny - 1) <= 2.0**-11)
    np.testing.assert_array_equal(quant.storable_scales(s), s)  # idempotent
    mantissa, exponent = np.frexp(s)
    assert np.all(mantissa * 2.0**11 % 1 == 0) and exponent.max() < -14


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("method", ["mse", "minmax"])
def test_weight_scales_are_storable(bits, method):
    w = np.random.default_rng(bits).standard_normal((16, 3, 3, 3)).astype(np.float32)
    w[3] = 0.0  # an all-zero channel (at 2 bits, 2^-8 of the smallest scale)
    w[5] *= 1e-6  # a channel below float16's normal range
    scales = quant.weight_scales(w, bits, method)
    np.testing.assert_array_equal(quant.storable_scales(scales), scales)
    half, exponent = half_scales(scales)
    assert exponent < 0 and half.dtype == np.float16
    np.testing.assert_array_equal(widened(half, F32, exponent), scales)


def test_narrowest_int_at_the_boundaries():
    def width(values):
        return narrowest_int(np.asarray(values, np.int32)).dtype

    assert width([-128, 127]) == np.int8
    assert width([-129, 0]) == width([0, 128]) == np.int16
    assert width([-32768, 32767]) == np.int16
    assert width([-32769]) == width([32768]) == np.int32
    assert width([-(2**30), 2**30]) == np.int32
    assert width(np.zeros(0)) == np.int32  # nothing to narrow


def test_half_scales_exact_or_none():
    normal = quant.storable_scales([0.5, 0.013, 1.75])
    half, exponent = half_scales(normal)
    assert exponent == 0 and half.tolist() == normal.tolist()
    tiny = quant.storable_scales([3e-7, 1.7e-6, 0.05])  # below 2^-14: one shared exponent
    half, exponent = half_scales(tiny)
    assert exponent == -8 and np.all(np.abs(half[half != 0]) >= 2.0**-14)
    got = widened(half, F32, exponent)
    np.testing.assert_array_equal(got.view(np.uint32), tiny.view(np.uint32))
    assert half_scales(np.float32([0.1, 0.3])) is None  # 24-bit significands
    assert half_scales(quant.storable_scales([1e-30, 1e4])) is None  # spans > float16
    assert half_scales(np.float32([0.0, 0.5]))[1] == 0


# ------------------------------------------------------------------ files and reports
@pytest.mark.parametrize("plan", ["int8", "int4", "int2"])
@pytest.mark.parametrize("weight_scale", [1.0, 1e-6])
def test_files_store_the_tables_narrow_and_read_them_back_exactly(tmp_path, plan, weight_scale):
    graph = quantized_graph(plan, weight_scale)
    path = tmp_path / "q.ircm"
    round_trip(graph, path)
    entries = {(e["value"], e["attr"]): e for e in index_entries(path)}
    weights, biases = qconstants(graph, ("i8", "i4", "i2")), qconstants(graph, ("i32",))
    assert weights and biases
    for op in weights:
        entry = entries[op.results[0].name, "scales"]
        assert entry["dtype"] == "float16" and entry["nbytes"] == 2 * op.attrs["scales"].size
        assert (entry.get("exponent", 0) < 0) == (weight_scale < 1)
    for op in biases:
        entry = entries[op.results[0].name, "value"]
        assert entry["dtype"] == narrowest_int(op.attrs["value"]).dtype.name
    report = model_report(graph)
    stored = sum(e["nbytes"] for e in index_entries(path))
    assert report.totals.bytes == stored


@pytest.mark.parametrize("levels, dtype", [(100, "int8"), (20_000, "int16"), (2**30, "int32")])
def test_a_bias_takes_the_narrowest_type_its_levels_need(tmp_path, levels, dtype):
    graph = quantized_graph("int4")
    (bias,) = [op for op in qconstants(graph, ("i32",)) if op.attrs["value"].size == 4]
    bias.attrs["value"] = np.array([-levels, 0, 1, levels - 1], np.int32)
    round_trip(graph, tmp_path / "q.ircm")
    (entry,) = [e for e in index_entries(tmp_path / "q.ircm")
                if e["value"] == bias.results[0].name]  # fmt: skip
    assert entry["dtype"] == dtype and entry["nbytes"] == 4 * np.dtype(dtype).itemsize
    assert stored_nbytes(bias, "value", bias.attrs["value"]) == entry["nbytes"]


def test_scales_without_a_float16_significand_stay_float32(tmp_path):
    graph = quantized_graph("int8")
    weight = qconstants(graph, ("i8",))[0]
    weight.attrs["scales"] = weight.attrs["scales"] * np.float32(1 + 2.0**-20)
    row = model_report(graph).layers[0]
    path = tmp_path / "q.ircm"
    write_graph_file(graph, path)
    entry = next(e for e in index_entries(path)
                 if e["value"] == weight.results[0].name and e["attr"] == "scales")  # fmt: skip
    assert entry["dtype"] == "float32" and "exponent" not in entry
    loaded, _ = read_graph_file(path)
    assert irc.print_graph(loaded, full=True) == irc.print_graph(graph, full=True)
    assert row.weight_bytes == weight.attrs["value"].nbytes + 4 * weight.attrs["scales"].size


def test_a_compiled_model_saved_and_loaded_gives_the_same_bits(tmp_path):
    model = irc.compile(tiny_cnn(), precision="int4", calibration=DATA, progress=False,
                        warmup=False)  # fmt: skip
    model.save(tmp_path / "m.ircm")
    loaded = irc.load(tmp_path / "m.ircm", warmup=False)
    np.testing.assert_array_equal(loaded(X[:1])[0], model(X[:1])[0])
    assert loaded.report().totals.bytes == model.report().totals.bytes


def test_gptq_scales_are_storable():
    model = irc.compile(tiny_cnn(), precision="int4", calibration=DATA, rounding="gptq",
                        progress=False, warmup=False)  # fmt: skip
    weights = qconstants(model.graph, ("i4",))
    assert weights
    for op in weights:
        scales = op.attrs["scales"]
        np.testing.assert_array_equal(quant.storable_scales(scales), scales)
        assert half_scales(scales) is not None


@pytest.mark.parametrize("precision", ["int8", "int4", "int2"])
def test_the_cost_model_counts_the_narrow_tables(tmp_path, precision):
    graph = float_graph()
    calibration = irc.calibrate(graph, DATA, progress=False)
    costs = build_cost_model(graph, calibration, measure=False, cache_dir=tmp_path,
                             precisions=("fp32", precision), progress=False)  # fmt: skip
    model = irc.compile(tiny_cnn(), precision=precision, calibration=DATA, progress=False,
                        warmup=False)  # fmt: skip
    report = model.report()
    j = costs.column(precision)
    assert [int(b) for b in costs.bytes[:, j]] == [row.bytes for row in report.layers]
    assert costs.plan_bytes(dict.fromkeys(costs.layers, precision)) == report.totals.bytes


# ------------------------------------------------------------------ format versions
def test_an_older_format_file_stores_full_width_and_still_reads(tmp_path, monkeypatch):
    graph = quantized_graph("int4")
    monkeypatch.setattr(serialize, "FORMAT_VERSION", 3)
    path = tmp_path / "v3.ircm"
    write_graph_file(graph, path)
    monkeypatch.undo()
    biases = {op.results[0].name for op in qconstants(graph, ("i32",))}
    entries = index_entries(path)
    assert {e["dtype"] for e in entries if e["value"] in biases} == {"int32"}
    assert {e["dtype"] for e in entries if e["attr"] == "scales"} == {"float32"}
    loaded, _ = read_graph_file(path)
    assert irc.print_graph(loaded, full=True) == irc.print_graph(graph, full=True)


def test_narrow_payloads_in_an_older_format_file_are_refused(tmp_path, monkeypatch):
    graph = quantized_graph("int4")
    monkeypatch.setattr(serialize, "FORMAT_VERSION", 3)
    monkeypatch.setattr(serialize, "_stored", narrowed)
    path = tmp_path / "v3.ircm"
    write_graph_file(graph, path)
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match=r"is float16\[.*the op needs float32"):
        read_graph_file(path)


@pytest.mark.parametrize("exponent, message", [(3, "the op needs int32"),
                                               (10_000, "bad index entry")])  # fmt: skip
def test_a_forged_exponent_is_refused(tmp_path, monkeypatch, exponent, message):
    graph = quantized_graph("int4")

    def forged(op, key, value):
        array, e = narrowed(op, key, value)
        return array, (exponent if array.dtype.kind == "i" or abs(exponent) > 256 else e)

    monkeypatch.setattr(serialize, "_stored", forged)
    path = tmp_path / "forged.ircm"
    write_graph_file(graph, path)
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match=message):
        read_graph_file(path)


def test_the_format_version_is_4():
    assert FORMAT_VERSION == 4
