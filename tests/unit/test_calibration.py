"""irc.calibration.calibrate on tiny graphs: ranges against numpy, options, errors, progress."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import single_node_model, tiny_cnn

import irc
from irc import run_statistics
from irc.calibration import Calibration, calibrate, watched_values
from irc.errors import InputError
from irc.quant import activation_params


@pytest.fixture(scope="module")
def relu():
    return irc.import_onnx(single_node_model("Relu", [("x", ["N", 6])], [("y", ["N", 6])]))


@pytest.fixture(scope="module")
def cnn():
    return irc.import_onnx(tiny_cnn(batch="N"))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32) * 3


def test_minmax_ranges_are_exact(relu, data):
    cal = calibrate(relu, data, batch_size=7, progress=False)
    assert isinstance(cal, Calibration) and cal.method == "minmax" and cal.count == 40
    assert dict(cal.ranges) == {
        "x": (float(data.min()), float(data.max())),
        "y": (0.0, float(data.max())),
    }
    assert cal["y"] == cal.ranges["y"] and set(cal) == {"x", "y"} and len(cal) == 2
    assert cal.params("x") == activation_params(*cal["x"])
    with pytest.raises(KeyError, match="not calibrated"):
        cal["z"]


def test_streaming_over_batches_equals_one_batch(relu, data):
    streamed = calibrate(relu, np.array_split(data, 10), progress=False)
    whole = calibrate(relu, data, batch_size=len(data), progress=False)
    assert dict(streamed.ranges) == dict(whole.ranges) and streamed.count == whole.count


def test_graph_and_data_are_left_alone(cnn):
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8))  # float64: cast in a copy
    before_x, before_graph = x.copy(), irc.print_graph(cnn)
    calibrate(cnn, x, "entropy", batch_size=2, progress=False)
    assert irc.print_graph(cnn) == before_graph
    assert x.dtype == np.float64 and np.array_equal(x, before_x)


def test_weights_are_not_calibrated(cnn):
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    cal = calibrate(cnn, x, progress=False)
    assert list(cal) == [v.name for v in watched_values(cnn).values()]
    assert "x" in cal and cnn.outputs[0].name in cal
    constants = {r.name for op in cnn.ops if op.kind == "constant" for r in op.results}
    assert constants and not constants & set(cal)
    lo, hi = cal[[op for op in cnn.ops if op.kind == "clip"][0].result.name]
    assert 0.0 <= lo <= hi <= 6.0
    (y,) = irc.run(cnn, [x])
    assert cal[cnn.outputs[0].name] == (float(y.min()), float(y.max()))


def test_values_pick_what_is_observed(cnn):
    x = np.zeros((2, 3, 8, 8), np.float32)
    out = cnn.outputs[0].name
    assert list(calibrate(cnn, x, values=[out, "x"], progress=False)) == ["x", out]
    with pytest.raises(InputError, match=r"no value\(s\) \['nope'\]"):
        calibrate(cnn, x, values=["nope"], progress=False)


def test_static_batch_runs_sample_by_sample(cnn):
    x = np.random.default_rng(3).standard_normal((5, 3, 8, 8)).astype(np.float32)
    single = irc.import_onnx(tiny_cnn(batch=1))
    one = calibrate(single, x, batch_size=4, progress=False)
    many = calibrate(cnn, x, batch_size=4, progress=False)
    assert one.count == 5
    for name in one:
        np.testing.assert_allclose(one[name], many[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_histogram_methods_stay_inside_minmax(cnn, method):
    x = np.random.default_rng(4).standard_normal((16, 3, 8, 8)).astype(np.float32)
    cal = calibrate(cnn, x, method, percentile=99.0, progress=False)
    minmax = cal.recompute("minmax")
    assert cal.method == method and minmax.method == "minmax"
    for name, (lo, hi) in cal.items():
        mlo, mhi = minmax[name]
        assert mlo <= lo <= hi <= mhi
    assert dict(cal.recompute(method, percentile=99.0).ranges) == dict(cal.ranges)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_graph_outputs_keep_their_minmax_range(relu, method):
    x = np.random.default_rng(5).standard_normal((400, 6)).astype(np.float32)
    x[7, 2], x[9, 4] = 40.0, -40.0  # one outlier each way: the clipping methods cut them
    cal = calibrate(relu, x, method, percentile=99.0, progress=False)
    assert cal.exact == {"y"}
    assert cal["y"] == (0.0, 40.0)  # the output: every value it took
    clipped = cal.recompute("percentile", percentile=99.0)
    assert clipped["x"][0] > -40.0 and clipped["x"][1] < 40.0  # not an output: clipped
    again = cal.recompute("percentile", percentile=90.0)
    assert again["y"] == (0.0, 40.0) and again.exact == {"y"}


def test_recompute_needs_histograms(relu, data):
    cal = calibrate(relu, data, progress=False)
    with pytest.raises(InputError, match="needs histograms"):
        cal.recompute("entropy")


def test_multi_input_model_by_dicts():
    model = single_node_model("Add", [("a", ["N", 3]), ("b", ["N", 3])], [("c", ["N", 3])])
    graph = irc.import_onnx(model)
    batches = [{"a": np.full((2, 3), i, np.float32), "b": np.ones((2, 3), np.float32)}
               for i in range(3)]  # fmt: skip
    cal = calibrate(graph, batches, progress=False)
    assert cal.count == 6 and cal["a"] == (0.0, 2.0) and cal["c"] == (1.0, 3.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "kl"}, "unknown calibration method"),
        ({"percentile": 0}, "percentile"),
        ({"percentile": 101}, "percentile"),
        ({"method": "entropy", "entropy_bins": 64}, "entropy_bins"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_bad_options(relu, data, kwargs, message):
    with pytest.raises(InputError, match=message):
        calibrate(relu, data, **kwargs)


def test_non_finite_activations_warn():
    model = single_node_model("Div", [("a", ["N", 2]), ("b", ["N", 2])], [("y", ["N", 2])])
    batch = {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([[0.0, 1.0]], np.float32)}
    with np.errstate(divide="ignore"), pytest.warns(UserWarning, match="1 value.*NaN.*: y"):
        cal = calibrate(irc.import_onnx(model), [batch], progress=False)
    assert cal["y"] == (2.0, 2.0)


def test_empty_iterable_is_an_error(relu):
    with pytest.raises(InputError, match="empty"):
        calibrate(relu, iter([]), progress=False)
    with pytest.raises(InputError, match="empty"):
        calibrate(relu, [np.zeros((0, 6), np.float32)], progress=False)


def test_calibrate_shows_progress_on_stderr(relu, data, capsys):
    calibrate(relu, data, progress="force")  # tqdm's bar
    out, err = capsys.readouterr()
    assert out == "" and "40/40 [" in err and "img/s" in err
    calibrate(relu, data)  # stderr is not a terminal: a start and an end line
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "calibrate: 40 img ..." and lines[1].startswith("calibrate: 40/40 img in ")
    assert len(lines) == 2
    calibrate(relu, data, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_irc_calibrate_runs_the_compiled_program_and_matches_the_interpreter(
    cnn, method, monkeypatch
):
    """irc.calibrate observes the compiled float program (one program per batch shape: 32
    then 7; its ranges within float rounding of the interpreter's); engine='reference' is
    the interpreter's calibration exactly."""
    x = np.random.default_rng(4).standard_normal((39, 3, 8, 8)).astype(np.float32)
    reference = calibrate(cnn, x, method, progress=False)
    shapes = []
    run = run_statistics.ProgramRunner.__call__

    def counted(self, batch, observers):
        shapes.append(batch["x"].shape[0])
        return run(self, batch, observers)

    monkeypatch.setattr(run_statistics.ProgramRunner, "__call__", counted)
    compiled = irc.calibrate(cnn, x, method, progress=False)
    assert shapes == [32, 7]
    assert compiled.count == reference.count == 39 and list(compiled) == list(reference)
    for name in reference:
        np.testing.assert_allclose(compiled[name], reference[name], rtol=1e-5, atol=1e-6)
        mean = reference.channel_mean(name)
        if mean is not None:
            np.testing.assert_allclose(compiled.channel_mean(name), mean, rtol=1e-5, atol=1e-6)
    exact = irc.calibrate(cnn, x, method, engine="reference", progress=False)
    assert dict(exact) == dict(reference)
    with pytest.raises(InputError, match="engine"):
        irc.calibrate(cnn, x, engine="gpu")
