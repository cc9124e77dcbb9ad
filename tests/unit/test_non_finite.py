"""Non-finite values have one meaning: a NaN clamp bound is refused wherever a graph comes
from (ONNX, text IR, a fused activation), a NaN input quantizes to the zero point in the
interpreter and the kernels alike, and ``irc run`` says when an input is not finite."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import tiny_cnn

import irc
from irc.errors import IrcError
from irc.tools.cli import main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``irc *argv``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("bounds", [(float("nan"), 6.0), (0.0, float("nan"))])
def test_a_nan_clip_bound_is_refused_at_import(bounds):
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(b, np.float32), n) for n, b in zip(("lo", "hi"), bounds)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(IrcError, match="NaN") as error:
        irc.import_onnx(model)
    assert "clip" in str(error.value)


@pytest.mark.parametrize(
    "op",
    [
        "%y = clip(%x) {min=nan, max=6.0} : f32[1,4]",
        '%y = add(%x, %x) {activation="clip", act_min=0.0, act_max=nan} : f32[1,4]',
    ],
)
def test_a_nan_clamp_bound_is_refused_in_text_ir(op):
    text = f"graph @g(%x: f32[1,4]) {{\n  {op}\n  return %y\n}}\n"
    with pytest.raises(IrcError, match="NaN"):
        irc.parse_graph(text)


def test_infinite_bounds_still_mean_no_bound():
    text = (
        "graph @g(%x: f32[1,4]) {\n  %y = clip(%x) {min=-inf, max=inf} : f32[1,4]\n  return %y\n}\n"
    )
    x = np.array([[-3.0, 0.0, np.inf, -np.inf]], np.float32)
    (y,) = irc.run(irc.parse_graph(text), [x])
    np.testing.assert_array_equal(y, x)


def test_a_nan_input_quantizes_to_the_zero_point_in_interpreter_and_kernels():
    data = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
    model = irc.compile(tiny_cnn(), precision="int8", calibration=data, progress=False,
                        num_threads=1)  # fmt: skip
    x = np.full((1, 3, 8, 8), np.nan, np.float32)
    (compiled,) = model(x)
    (reference,) = irc.run(model.graph, [x])
    np.testing.assert_array_equal(compiled, reference)
    np.testing.assert_array_equal(compiled, model(np.zeros_like(x))[0])  # NaN reads as 0.0


def test_irc_run_warns_on_non_finite_inputs(capsys, tmp_path):
    path = tmp_path / "relu.irc"
    path.write_text("graph @g(%x: f32[1,4]) {\n  %y = relu(%x) : f32[1,4]\n  return %y\n}\n")
    x = tmp_path / "x.npy"
    np.save(x, np.array([[np.nan, 1.0, np.inf, -np.inf]], np.float32))
    code, _, err = run_cli(capsys, "run", path, "--input", x)
    assert code == 0 and "input 'x' holds 1 NaN and 2 infinite values" in err
    np.save(x, np.ones((1, 4), np.float32))
    code, _, err = run_cli(capsys, "run", path, "--input", x)
    assert code == 0 and "warning" not in err
