"""Fixtures of the CLI tests: a small ONNX model file."""

from __future__ import annotations

import onnx
import pytest
from onnx_builders import tiny_cnn


@pytest.fixture
def model_file(tmp_path):
    """A saved copy of the tiny CNN (symbolic batch) to run the CLI on."""
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    return path
