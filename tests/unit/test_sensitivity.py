"""The sensitivity table on a small model, checked against whole compiled models: the last
layer's Ω and output NSR must be what compiling the model with that layer alone quantized
gives. (For an inner layer the compiled model also runs the glue after it in integers —
here the global average pool — while the analysis dequantizes right after the layer, so
the two agree only roughly.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_builders import tiny_cnn

import irc
from irc.decision.sensitivity import analyze, analyze_variants
from irc.decision.table import SensitivityTable, read_table
from irc.errors import InputError
from irc.pass_manager import PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import layer_name
from irc.quant import activation_params, dequantize, quantize
from irc.stages import calibrate
from irc.support import quantizable_layers

DATA = np.random.default_rng(3).normal(size=(10, 3, 8, 8)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])


@pytest.fixture(scope="module")
def setup():
    graph = irc.import_onnx(tiny_cnn())
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    calibration = calibrate(graph, DATA, progress=False)  # as irc.compile calibrates
    table = analyze(graph, calibration, DATA, labels=LABELS, batch_size=4, progress=False)
    return graph, table


def _cross_entropy(logits, labels):
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]


def test_table_has_every_layer_and_precision(setup):
    graph, table = setup
    assert table.names == [layer_name(op) for op in quantizable_layers(graph)] == ["conv", "fc"]
    assert table.precisions == ("fp16", "int8", "int4", "int2")
    assert table.images == 10 and table.loss == "cross-entropy"
    for name, values in table.metrics.items():
        assert values.shape == (2, 4), name
        assert not np.isnan(values).any(), name


@pytest.mark.parametrize("precision", ["int8", "int4", "int2"])
def test_output_change_matches_the_compiled_model_with_one_layer_quantized(setup, precision):
    graph, table = setup
    reference = irc.compile(tiny_cnn(), {"x": (10, 3, 8, 8)})(DATA)[0].astype(np.float64)
    # fc: equal up to the float conv's summation order (the table runs the float graph
    # channels first, a compiled model channels last)
    for layer, rel in (("fc", 1e-4), ("conv", 1.0)):
        model = irc.compile(tiny_cnn(), {"x": (10, 3, 8, 8)}, precision={layer: precision},
                            calibration=DATA, progress=False)  # fmt: skip
        y = model(DATA)[0].astype(np.float64)
        nsr = np.sum((y - reference) ** 2) / np.sum(reference**2)
        omega = np.mean((_cross_entropy(y, LABELS) - _cross_entropy(reference, LABELS)) ** 2)
        assert table.get("output_nsr", layer, precision) == pytest.approx(nsr, rel=rel)
        assert table.get("omega", layer, precision) == pytest.approx(omega, rel=rel, abs=1e-12)


def test_fewer_bits_hurt_more(setup):
    _, table = setup
    mse = table.metrics["mse"]
    assert (np.diff(mse, axis=1) > 0).all()  # fp16 < int8 < int4 < int2, every layer
    sqnr = table.metrics["sqnr"]
    assert (np.diff(sqnr, axis=1) < 0).all()
    assert np.allclose(sqnr, 10 * np.log10(_signal_power(setup) / mse))


def _signal_power(setup):
    """Mean square of each layer's float output over DATA (the SQNR's signal)."""
    graph, table = setup
    powers = []
    for name in table.names:
        values = {}

        def keep(op, args, results, values=values, name=name):
            if layer_name(op) == name:
                values["y"] = results[0]

        irc.run(graph, [DATA], [keep])
        powers.append(np.mean(values["y"].astype(np.float64) ** 2))
    return np.array(powers)[:, None]


def test_files_round_trip(setup, tmp_path):
    _, table = setup
    table.save(tmp_path / "s.json")
    again = SensitivityTable.from_dict(json.loads((tmp_path / "s.json").read_text()))
    assert again.names == table.names and again.loss == table.loss
    for m in table.metrics:
        assert np.array_equal(again.metrics[m], table.metrics[m]), m
    assert np.array_equal(again.activations, table.activations)
    table.save(tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("layer,kind,params,macs,precision,sqnr,")
    assert lines[0].endswith(",act_in_nsr,act_out_nsr")
    assert len(lines) == 1 + 2 * 4
    from_csv = read_table(tmp_path / "s.csv", table.layers)
    assert np.array_equal(from_csv.activations, table.activations)


def test_variants_measured_in_one_pass_give_the_tables_measured_alone(setup):
    graph, table = setup
    calibration = calibrate(graph, DATA, progress=False)
    variants = [(calibration, ("int4", "fp16")), (calibration, ("int2",))]
    first, second = analyze_variants(graph, variants, DATA, labels=LABELS, batch_size=4,
                                     progress=False)  # fmt: skip
    assert first.precisions == ("int4", "fp16") and second.precisions == ("int2",)
    for part in (first, second):
        assert part.names == table.names and part.loss == table.loss
        for p in part.precisions:
            for m in table.metrics:
                assert np.array_equal(part.column(m, p), table.column(m, p)), (m, p)


def test_empty_data_and_wrong_labels_are_named(setup):
    graph, _ = setup
    calibration = irc.calibrate(graph, DATA, progress=False)
    with pytest.raises(InputError, match="empty"):
        analyze(graph, calibration, DATA[:0], progress=False)
    with pytest.raises(InputError, match="labels"):
        analyze(graph, calibration, DATA, labels=LABELS[:3], progress=False)


def _rounded(x, value_range):
    scale, zero = activation_params(*value_range)
    return dequantize(quantize(x, scale, zero), scale, zero).astype(np.float64)


def _nsr(y, reference):
    return np.sum((y - reference) ** 2) / np.sum(reference**2)


def test_activations_are_the_output_noise_of_each_side_rounded_alone(setup):
    graph, table = setup
    calibration = calibrate(graph, DATA, progress=False)
    seen = {}

    def keep(op, args, results):
        if layer_name(op) in table.names:
            seen[layer_name(op)] = (op, args[0].astype(np.float64), results[0].astype(np.float64))

    (y,) = irc.run(graph, [DATA], [keep])
    y = y.astype(np.float64)
    conv, conv_in, conv_out = seen["conv"]
    fc, fc_in, fc_out = seen["fc"]
    w, b = (v.producer.attrs["value"].astype(np.float64) for v in fc.operands[1:3])

    def fc_of(x):  # the float gemm (transB) on the pooled conv output
        return x @ w.T + b

    rounded_image = irc.run(graph, [_rounded(DATA, calibration[conv.operands[0].name])
                                    .astype(np.float32)])[0]  # fmt: skip
    pooled = _rounded(conv_out, calibration[conv.result.name]).mean(axis=(2, 3))
    expected = [
        [_nsr(rounded_image.astype(np.float64), y), _nsr(fc_of(pooled), y)],
        [_nsr(fc_of(_rounded(fc_in, calibration[fc.operands[0].name])), y),
         _nsr(_rounded(fc_out, calibration[fc.result.name]), y)],
    ]  # fmt: skip
    assert np.allclose(fc_of(conv_out.mean(axis=(2, 3))), y, rtol=1e-4, atol=1e-5)
    assert table.activations == pytest.approx(np.array(expected), rel=1e-3)
    assert (table.activations > 0).all()
