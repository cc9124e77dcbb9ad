"""Calibration data sources: arrays, iterables, dicts, image folders, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import single_node_model, tiny_cnn
from PIL import Image

import irc
from irc.calibration import (
    PRESETS,
    Preprocess,
    list_images,
    load_folder,
    load_image,
    load_labelled_folder,
    model_batches,
)
from irc.errors import InputError


@pytest.fixture(scope="module")
def relu():
    return irc.import_onnx(single_node_model("Relu", [("x", ["N", 4])], [("y", ["N", 4])]))


@pytest.fixture(scope="module")
def add2():
    model = single_node_model("Add", [("a", ["N", 4]), ("b", ["N", 4])], [("c", ["N", 4])])
    return irc.import_onnx(model)


def _sizes(source) -> list[int]:
    return [next(iter(b.values())).shape[0] for b in source.batches]


def test_array_is_split_into_batches(relu):
    x = np.arange(70 * 4, dtype=np.float32).reshape(70, 4)
    source = model_batches(relu, x, batch_size=32)
    assert source.total == 70
    batches = list(source.batches)
    assert [b["x"].shape[0] for b in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    assert _sizes(model_batches(relu, x, batch_size=32, limit=40)) == [32, 8]


def test_iterable_and_dict_batches(relu, add2):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 4)).astype(np.float32) for n in (3, 5, 2)]
    assert _sizes(model_batches(relu, batches)) == [3, 5, 2]
    assert _sizes(model_batches(relu, iter(batches), limit=6)) == [3, 3]
    dicts = ({"a": b, "b": -b} for b in batches)
    got = list(model_batches(add2, dicts).batches)
    assert [sorted(b) for b in got] == [["a", "b"]] * 3
    assert _sizes(model_batches(add2, [(b, b) for b in batches])) == [3, 5, 2]  # positional
    whole = {"a": batches[1], "b": batches[1]}  # one dict of [N, ...] arrays
    assert _sizes(model_batches(add2, whole, batch_size=2)) == [2, 2, 1]


def test_float64_is_cast_in_a_copy(relu):
    x = np.linspace(-1, 1, 8).reshape(2, 4)  # float64
    before = x.copy()
    (batch,) = model_batches(relu, x).batches
    assert batch["x"].dtype == np.float32 and not np.shares_memory(batch["x"], x)
    assert x.dtype == np.float64 and np.array_equal(x, before)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((2, 4), np.uint8), "input 'x' must be float32.*uint8.*preprocessing"),
        (np.zeros((2, 5), np.float32), r"input 'x' must have shape \[N,4\]"),
        (np.zeros(4, np.float32), "must be a batch of shape"),
        (np.array([[0, np.nan, 0, 0]], np.float32), "input 'x' holds 1 NaN or infinite"),
        ([np.zeros((1, 4), np.float32), np.full((1, 4), np.inf, np.float32)], "data batch 1"),
        (np.zeros((0, 4), np.float32), "empty"),
        (42, "data must be a numpy array"),
        ({"z": np.zeros((1, 4), np.float32)}, r"missing \['x'\], unknown \['z'\]"),
    ],
)
def test_bad_data_is_named(relu, data, message):
    with pytest.raises(InputError, match=message):
        list(model_batches(relu, data).batches)


def test_bad_arguments(relu, add2, tmp_path):
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(InputError, match="batch_size"):
        model_batches(relu, x, batch_size=0)
    with pytest.raises(InputError, match="limit"):
        model_batches(relu, x, limit=0)
    with pytest.raises(InputError, match="preprocess applies only"):
        model_batches(relu, x, preprocess="imagenet")
    with pytest.raises(InputError, match="takes 2 inputs"):
        list(model_batches(add2, x).batches)
    with pytest.raises(InputError, match="holds no images"):
        model_batches(relu, tmp_path, preprocess="imagenet")
    with pytest.raises(InputError, match="does not exist"):
        model_batches(relu, tmp_path / "nowhere", preprocess="imagenet")


def test_static_batch_is_recut():
    graph = irc.import_onnx(tiny_cnn(batch=1))
    x = np.zeros((5, 3, 8, 8), np.float32)
    assert _sizes(model_batches(graph, x, batch_size=2)) == [1] * 5
    graph4 = irc.import_onnx(tiny_cnn(batch="N"), input_shapes={"x": (4, 3, 8, 8)})
    batches = [np.full((n, 3, 8, 8), i, np.float32) for i, n in enumerate((3, 3, 4))]
    with pytest.warns(UserWarning, match="last 2 sample"):
        got = list(model_batches(graph4, batches).batches)
    assert [b["x"].shape[0] for b in got] == [4, 4]
    assert [b["x"][:, 0, 0, 0].tolist() for b in got] == [[0, 0, 0, 1], [1, 1, 2, 2]]


# ---------------------------------------------------------------------------------- images
def _save(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.PNG", "c.jpeg"):
        _save(tmp_path / name, rng.integers(0, 256, (40, 60, 3)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.txt").write_text("b.png 7\na.PNG 3\nc.jpeg 1\n")
    return tmp_path


def test_folder_listing_is_sorted_and_limited(folder):
    assert [p.name for p in list_images(folder)] == ["a.PNG", "b.png", "c.jpeg"]
    assert [p.name for p in list_images(folder, limit=2)] == ["a.PNG", "b.png"]


def test_solid_colour_normalises_exactly(tmp_path):
    _save(tmp_path / "x.png", np.broadcast_to([255, 0, 128], (300, 260, 3)))
    x = load_image(tmp_path / "x.png", "torchvision")
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    mean, std = np.array(PRESETS["imagenet"].mean), np.array(PRESETS["imagenet"].std)
    want = (np.array([255, 0, 128]) / 255 - mean) / std
    np.testing.assert_allclose(x[:, 100, 100], want, rtol=1e-5)
    lite = load_image(tmp_path / "x.png", "efficientnet-lite")
    np.testing.assert_allclose(lite[:, 0, 0], [1.0, -127 / 128, 1 / 128])
    nhwc = load_image(tmp_path / "x.png", Preprocess(layout="NHWC", color="BGR"))
    assert nhwc.shape == (224, 224, 3) and nhwc[0, 0].tolist() == [128, 0, 255]


def test_resize_shorter_side_and_centre_crop(tmp_path):
    columns = np.broadcast_to(np.arange(10)[None, :, None] * 20, (8, 10, 3))
    _save(tmp_path / "g.png", columns)
    x = load_image(tmp_path / "g.png", Preprocess(resize=None, crop=4))
    assert x.shape == (3, 4, 4)
    assert x[0, 0].tolist() == [60, 80, 100, 120]  # columns 3..6: round((10-4)/2) = 3
    _save(tmp_path / "wide.png", np.zeros((200, 300, 3)))
    with Image.open(tmp_path / "wide.png") as image:
        resized = Preprocess(crop=None).apply(image)
    assert resized.shape == (3, 256, 384)  # shorter side to 256, the other scales


def test_load_folder_and_labelled_folder(folder):
    pre = Preprocess(resize=32, crop=24)
    x = load_folder(folder, pre, limit=2)
    assert x.shape == (2, 3, 24, 24) and x.dtype == np.float32
    batches = list(load_labelled_folder(folder, pre, batch_size=2))
    assert [b.shape[0] for b, _ in batches] == [2, 1]
    assert np.concatenate([y for _, y in batches]).tolist() == [3, 7, 1]  # by file name
    np.testing.assert_array_equal(batches[0][0], x)
    assert len(list(load_labelled_folder(folder, pre, limit=1))) == 1


def test_folder_errors(folder, tmp_path_factory):
    with pytest.raises(InputError, match="needs a preprocessing spec"):
        load_folder(folder, None)
    with pytest.raises(InputError, match="unknown preset 'resnet'"):
        load_folder(folder, "resnet")
    with pytest.raises(InputError, match="smaller than the crop"):
        load_folder(folder, Preprocess(resize=None, crop=100))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot read image .*broken.jpg"):
        load_folder(folder, "imagenet")
    (folder / "broken.jpg").unlink()
    _save(folder / "d.png", np.zeros((50, 70, 3)))
    with pytest.raises(InputError, match="differ in size.*d.png"):
        load_folder(folder, Preprocess(resize=None, crop=None))
    empty = tmp_path_factory.mktemp("unlabelled")
    with pytest.raises(InputError, match="labels.txt"):
        load_labelled_folder(empty, "imagenet")
    with pytest.raises(InputError, match="layout"):
        Preprocess(layout="CHW")
    with pytest.raises(InputError, match="std"):
        Preprocess(std=(1, 0, 1))
