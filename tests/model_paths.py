"""Where the onnx package's light models and ../shared live (imported by tests by name)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test cleanly where it is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only beside the project's own checkout)")
    return path
