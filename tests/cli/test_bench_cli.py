"""``irc bench`` end to end on a small convnet and a folder of PNG images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from cli_runner import run_cli
from onnx_builders import small_convnet
from PIL import Image

pytest.importorskip("onnxruntime")


@pytest.fixture
def bench_inputs(tmp_path):
    """small_convnet taking 224×224 inputs, and 8 labelled random images."""
    model = small_convnet()
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (224, 224)):
        dim.dim_value = size
    onnx.save(model, tmp_path / "net.onnx")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 255, (240, 260, 3), np.uint8)
        Image.fromarray(pixels).save(images / f"img{i}.png")
    (images / "labels.txt").write_text("".join(f"img{i}.png {i % 10}\n" for i in range(8)))
    return tmp_path / "net.onnx", images


def test_bench_writes_table_json_and_plots(capsys, tmp_path, bench_inputs):
    model, images = bench_inputs
    code, out, err = run_cli(capsys, "bench", model, "--data", images, "--preprocess",
                             "imagenet", "--strategies", "uniform-int8", "--runs", "2",
                             "-o", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    assert "4 evaluation and 4 calibration images" in err
    for name in ("irc fp32", "uniform-int8", "ort fp32 (onnxruntime)", "ort int8 (onnxruntime)"):
        assert f"| {name} |" in out
    rows = json.loads((tmp_path / "out" / "net.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["irc fp32", "uniform-int8", "ort fp32", "ort int8"]
    assert rows[0]["top1"] == rows[2]["top1"]  # irc FP32 and onnxruntime FP32 agree
    assert (tmp_path / "out" / "net.md").read_text() in out
    if "no plots" not in out:
        assert (tmp_path / "out" / "net-size.png").is_file()


def test_bench_errors_name_the_argument(capsys, tmp_path, bench_inputs):
    model, images = bench_inputs
    code, _, err = run_cli(capsys, "bench", tmp_path / "nope.onnx", "--data", images,
                           "--preprocess", "imagenet")  # fmt: skip
    assert code == 2 and "nope.onnx" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "bench", model, "--data", tmp_path / "none",
                           "--preprocess", "imagenet")  # fmt: skip
    assert code == 2 and "none" in err
