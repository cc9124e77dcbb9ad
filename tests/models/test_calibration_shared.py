"""Calibration data from ../shared: ImageNet folders, presets, MobileNetV2 (skips without it)."""

from __future__ import annotations

import numpy as np
import pytest
from model_paths import shared_path

import irc
from irc.calibration import calibrate, load_folder, load_labelled_folder
from irc.interpreter import run_graph


@pytest.fixture(scope="module")
def mobilenet():
    return irc.import_onnx(shared_path("models", "mobilenetv2_bn.onnx"))


@pytest.fixture(scope="module")
def calib8():
    return load_folder(shared_path("data", "imagenet-calib256"), "torchvision", limit=8)


def test_calibration_images_load_with_the_torchvision_preset(calib8):
    assert calib8.shape == (8, 3, 224, 224) and calib8.dtype == np.float32
    assert np.isfinite(calib8).all()
    # normalised ImageNet pixels: about zero mean, unit spread, within the preset's bounds
    assert abs(float(calib8.mean())) < 0.5 and 0.5 < float(calib8.std()) < 1.5
    assert calib8.min() >= -0.485 / 0.229 - 1e-5 and calib8.max() <= 0.594 / 0.225 + 1e-5


def test_mobilenet_classifies_val_images(mobilenet):
    folder = shared_path("data", "imagenet-val1300")
    ((batch, labels),) = load_labelled_folder(folder, "torchvision", limit=16, batch_size=16)
    (logits,) = run_graph(mobilenet, batch)
    correct = int((logits.argmax(axis=1) == labels).sum())
    assert correct >= 10, f"top-1 {correct}/16 (the FP32 model gets about 80%)"


def test_mobilenet_calibrates_on_calibration_images(mobilenet, calib8):
    cal = calibrate(mobilenet, calib8, batch_size=8, progress=False)
    assert cal.count == 8 and cal["input"] == (float(calib8.min()), float(calib8.max()))
    clips = [op.result.name for op in mobilenet.ops if op.kind == "clip"]
    assert len(clips) == 35 and all(0.0 <= cal[n][0] <= cal[n][1] <= 6.0 for n in clips)
    scale, zero_point = cal.params("logits")
    assert scale > 0 and -128 <= zero_point <= 127
