"""Symbolic input dims (``-1``, unnamed, ``?``, named) and ``input_shapes`` specialising
them before anything else, calibration included; preprocessing presets sized to the model.

Issue 23, items 1 and 5: a Paddle-style ``-1`` batch imports; named H/W feeding a conv and
a Shape → Gather → Concat → Reshape chain compile at FP32 and INT8 once ``input_shapes``
are given; without them, one error line names the input to specialise.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irc
from irc.calibration.data import model_batches
from irc.calibration.images import PRESETS, Preprocess, preprocess_spec, resolve_preprocess
from irc.errors import ConversionError, InputError, IrcError
from irc.pass_manager import PassContext, PassManager
from irc.stages import float_graph
from irc.tools.cli import main

ort = pytest.importorskip("onnxruntime")

SHAPE = (1, 3, 12, 16)


def conv_reshape_model(batch, h="H", w="W", size=None) -> onnx.ModelProto:
    """x [batch, 3, h, w] → Conv 3x3 → Relu → Reshape to [Shape(x)[0], -1] (the
    ``x.view(x.size(0), -1)`` of a PyTorch export); ``size`` makes H = W = size."""
    if size is not None:
        h = w = size
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
        numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([-1], np.int64), "m1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv_3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i0"], ["n"], name="gather", axis=0),
        helper.make_node("Concat", ["n", "m1"], ["ns"], name="concat", axis=0),
        helper.make_node("Reshape", ["r", "ns"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "symbolic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, None])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def pooled_model(batch, size: int = 8) -> onnx.ModelProto:
    """x [batch, 3, size, size] → Conv → Relu → GlobalAveragePool → Flatten: no shape
    arithmetic, so its batch stays symbolic through calibration."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
        numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def paddle_model() -> onnx.ModelProto:
    """(a) a batch of ``-1`` and H/W of ``?``, as Paddle writes them."""
    return conv_reshape_model(-1, "?", "?")


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's output on ``x`` under onnxruntime (FP32)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def sqnr(reference: np.ndarray, approximation: np.ndarray) -> float:
    """Signal to quantization noise ratio, in dB."""
    noise = np.sum((reference.astype(np.float64) - approximation) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30)))


def samples(count: int, shape=SHAPE[1:], seed: int = 2) -> np.ndarray:
    """``count`` calibration inputs [count, *shape]."""
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def save(model: onnx.ModelProto, tmp_path, name: str = "model.onnx") -> str:
    """``model`` written to ``tmp_path / name``; its path."""
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


# ------------------------------------------------------------------ import


@pytest.mark.parametrize("batch", [-1, "N", ""], ids=["minus-one", "dim-param", "unnamed"])
def test_a_free_batch_imports_as_a_symbol(batch):
    graph = irc.import_onnx(pooled_model(batch))
    (dim,) = [d for d in graph.inputs[0].type.shape if isinstance(d, str)]
    assert graph.inputs[0].type.shape[1:] == (3, 8, 8)
    assert dim == ("N" if batch == "N" else "x_0")


def test_unknown_dims_of_question_marks_are_distinct_symbols():
    """``?`` for both H and W must not make them one symbol (H == W)."""
    with pytest.raises(ConversionError) as error:
        irc.import_onnx(paddle_model())
    assert "'x_2', 'x_3'" in str(error.value)


def test_minus_one_batch_dumps(tmp_path, capsys):
    assert main(["dump", save(pooled_model(-1), tmp_path)]) == 0
    assert "f32[x_0,3,8,8]" in capsys.readouterr().out


def test_input_shape_specialises_the_minus_one_model(tmp_path, capsys):
    path = save(paddle_model(), tmp_path)
    assert main(["dump", path, "--input-shape", "x=1,3,48,192"]) == 0
    assert "f32[1,3,48,192]" in capsys.readouterr().out


def test_named_dims_need_shapes_one_error_naming_the_input():
    with pytest.raises(IrcError) as error:
        irc.import_onnx(conv_reshape_model("N"))
    message = str(error.value)
    assert "\n" not in message and "conv_3" in message
    assert "input 'x' has symbolic dims ('N', 'H', 'W')" in message
    assert "input_shapes={'x': (...)}" in message and "--input-shape x=" in message


def test_a_reshape_needing_the_batch_names_the_input():
    """Shape → Gather → Concat → Reshape over a symbolic batch: the value is only known at
    run time; the error says which input to specialise."""
    with pytest.raises(ConversionError) as error:
        irc.import_onnx(conv_reshape_model("N", size=8))
    assert "Reshape" in str(error.value) and "input 'x' has symbolic dims ('N')" in str(error.value)


@pytest.mark.parametrize(
    "model", [paddle_model(), conv_reshape_model("N")], ids=["minus-one", "named"]
)
def test_cli_without_shapes_prints_one_line_and_exits_2(model, tmp_path, capsys):
    assert main(["dump", save(model, tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("irc: error:")
    assert "input 'x'" in err and "--input-shape x=" in err


def test_compile_without_shapes_names_the_input(tmp_path, capsys):
    out = str(tmp_path / "m.ircm")
    code = main(["compile", save(paddle_model(), tmp_path), "-o", out, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "input 'x'" in err


def test_a_negative_given_dim_is_refused():
    with pytest.raises(ConversionError, match="negative dimension"):
        irc.import_onnx(paddle_model(), input_shapes={"x": (1, 3, -1, 16)})


# ------------------------------------------------------------------ compile


@pytest.mark.parametrize(
    "model",
    [paddle_model(), conv_reshape_model("N"), conv_reshape_model(-1)],
    ids=["minus-one", "named", "minus-one-and-named"],
)
def test_fp32_with_shapes_matches_onnxruntime(model):
    x = samples(1)
    compiled = irc.compile(model, input_shapes={"x": SHAPE}, num_threads=1)
    np.testing.assert_allclose(compiled(x)[0], onnxruntime_outputs(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", [paddle_model(), conv_reshape_model("N")], ids=["-1", "named"])
def test_int8_with_shapes_calibrates_the_specialised_graph(model):
    """Specialisation comes before calibration: symbolic H/W and a Reshape fed by shape
    arithmetic compile at INT8 (they failed with 'spatial dimension must be static')."""
    x = samples(16)
    compiled = irc.compile(model, input_shapes={"x": SHAPE}, precision="int8", calibration=x,
                           num_threads=1, progress=False)  # fmt: skip
    assert compiled.graph.inputs[0].type.shape == SHAPE
    got = np.concatenate([compiled(x[i : i + 1])[0] for i in range(4)])
    want = np.concatenate([onnxruntime_outputs(model, x[i : i + 1]) for i in range(4)])
    assert sqnr(want, got) > 25


def test_int8_keeps_a_free_batch_open_for_calibration():
    """A model whose shapes do not depend on the batch calibrates at any batch; the batch
    given is fixed at build."""
    model = pooled_model("N")
    graph = float_graph(model, input_shapes={"x": (2, 3, 8, 8)})
    assert graph.inputs[0].type.shape == ("N", 3, 8, 8)
    x = samples(10, (3, 8, 8))
    compiled = irc.compile(model, input_shapes={"x": (2, 3, 8, 8)}, precision="int8",
                           calibration=x, num_threads=1, progress=False)  # fmt: skip
    assert compiled.graph.inputs[0].type.shape == (2, 3, 8, 8)
    assert sqnr(onnxruntime_outputs(model, x[:2]), compiled(x[:2])[0]) > 25


def test_gptq_statistics_run_at_a_static_batch():
    """GPTQ's statistics on a graph whose batch the shapes fixed (the Reshape needs it)."""
    model = conv_reshape_model("N")
    x = samples(12)
    compiled = irc.compile(model, input_shapes={"x": SHAPE}, precision="int8", calibration=x,
                           rounding="gptq", num_threads=1, progress=False)  # fmt: skip
    assert sqnr(onnxruntime_outputs(model, x[:1]), compiled(x[:1])[0]) > 25


def test_a_static_batch_given_differently_is_refused():
    with pytest.raises(IrcError, match=r"input .x. of type f32\[1,3,8,8\] cannot take shape"):
        float_graph(pooled_model(1), input_shapes={"x": (2, 3, 8, 8)})


def test_cli_compiles_the_minus_one_model_with_an_input_shape(tmp_path, capsys):
    x_file = str(tmp_path / "calib.npy")
    np.save(x_file, samples(8, (3, 48, 192)))
    out = str(tmp_path / "m.ircm")
    code = main(["compile", save(paddle_model(), tmp_path), "--input-shape", "x=1,3,48,192",
                 "--precision", "int8", "--calib", x_file, "-o", out, "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert irc.load(out).graph.inputs[0].type.shape == (1, 3, 48, 192)


def test_shape_ops_fold_once_a_graph_is_specialised():
    """A ``shape`` op of a value with a symbolic dim stays; specialised, constant-fold
    turns it into a constant."""
    graph = irc.parse_graph("graph @g(%x: f32[N,3]) {\n  %s = shape(%x) : i64[2]\n  return %s\n}")
    PassManager("constant-fold", PassContext()).run(graph)
    assert [op.kind for op in graph.ops] == ["shape"]
    static = irc.specialize(graph, {"x": (2, 3)})
    PassManager("constant-fold", PassContext()).run(static)
    assert [op.kind for op in static.ops] == ["constant"]
    np.testing.assert_array_equal(static.ops[0].attrs["value"], [2, 3])


# ------------------------------------------------------------------ preprocessing


def _image_folder(tmp_path, count: int = 3):
    """``count`` random RGB photos 300 x 260 in a folder; its path."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        pixels = rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(folder)


def test_a_preset_takes_the_models_input_size(tmp_path):
    folder = _image_folder(tmp_path)
    graph = irc.import_onnx(pooled_model("N", size=240))
    (batch,) = model_batches(graph, folder, preprocess="efficientnet-lite").batches
    assert batch["x"].shape == (3, 3, 240, 240)


def test_sizes_keep_the_presets_ratio():
    assert PRESETS["torchvision"].sized(224) == PRESETS["torchvision"]
    sized = resolve_preprocess("efficientnet-lite@240")
    assert (sized.resize, sized.crop) == (round(240 * 256 / 224), 240) == (274, 240)
    fitted = resolve_preprocess("torchvision", 240)  # a model's size
    assert (fitted.resize, fitted.crop, fitted.mean) == (274, 240, PRESETS["torchvision"].mean)
    assert resolve_preprocess("torchvision@200", 240).crop == 200  # an explicit size wins


def test_an_explicit_size_or_preprocess_wins_over_the_model(tmp_path):
    folder = _image_folder(tmp_path)
    graph = irc.import_onnx(pooled_model("N", size=240))
    with pytest.raises(InputError, match="input 'x' must have shape"):
        next(model_batches(graph, folder, preprocess="torchvision@224").batches)
    own = Preprocess(resize=None, crop=240)
    (batch,) = model_batches(graph, folder, preprocess=own).batches
    assert batch["x"].shape == (3, 3, 240, 240)


def test_the_spec_the_cli_flags_make():
    assert preprocess_spec("torchvision") == "torchvision"
    assert preprocess_spec("torchvision", image_size=240) == resolve_preprocess("torchvision@240")
    assert preprocess_spec("torchvision", crop=240) == resolve_preprocess("torchvision@240")
    spec = preprocess_spec("efficientnet-lite", resize=250, crop=240)
    assert (spec.resize, spec.crop, spec.mean) == (250, 240, (127.0, 127.0, 127.0))
    with pytest.raises(InputError, match="without a preset"):
        preprocess_spec(None, crop=240)


@pytest.mark.parametrize(
    "spec", ["torchvision@0", "torchvision@big", "nosuch@240"], ids=["zero", "text", "preset"]
)
def test_an_impossible_size_is_a_clear_error(spec):
    with pytest.raises(InputError, match="preprocess"):
        resolve_preprocess(spec)


def test_a_crop_larger_than_the_resize_is_refused():
    with pytest.raises(InputError, match="crop 300 is larger than resize 256"):
        preprocess_spec("torchvision", crop=300, resize=256)


def test_compile_a_240_px_model_from_a_folder(tmp_path, capsys):
    path = save(pooled_model("N", size=240), tmp_path)
    folder = _image_folder(tmp_path, 8)
    model = irc.compile(path, precision="int8", calibration=folder, preprocess="efficientnet-lite",
                        num_threads=1, progress=False)  # fmt: skip
    assert model.calibration.count == 8
    out = str(tmp_path / "m.ircm")
    args = ["compile", path, "--precision", "int8", "--calib", folder, "-o", out,
            "--preprocess", "efficientnet-lite", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert main([*args, "--crop", "224"]) == 2  # the flags override: 224 px for a 240 px model
    assert "must have shape" in capsys.readouterr().err
    assert main([*args, "--resize", "250", "--crop", "240"]) == 0
    assert main([*args, "--crop", "300", "--resize", "256"]) == 2
    assert "crop 300 is larger than resize 256" in capsys.readouterr().err
