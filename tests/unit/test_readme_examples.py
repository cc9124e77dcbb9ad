"""The Architecture examples (docs/architecture.md, moved from the README) run as written
(on a small model saved as ``model.onnx``), and what they print and compute is checked
against the interpreter."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx_builders import tiny_cnn

import irc

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def section_blocks(title: str) -> list[str]:
    """The ```python blocks of the docs/architecture.md section headed ``## title``."""
    text = ARCHITECTURE.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else None]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_architecture_examples_run_and_agree_with_the_interpreter(tmp_path, monkeypatch, capsys):
    onnx.save(tiny_cnn(), tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    blocks = section_blocks("Architecture")
    assert len(blocks) == 2
    names: dict = {}
    exec(compile(blocks[0], "docs Architecture 1", "exec"), names)
    model, images = names["model"], names["images"]
    assert capsys.readouterr().out.startswith("// arena ")
    assert model.report().totals.counts.get("int4", 0) == 2  # both layers at INT4
    assert dict(model.stats)["quantize"]["gptq"] == 2  # rounded with the statistics
    exec(compile(blocks[1], "docs Architecture 2", "exec"), names)
    assert {"quantize", "qconv2d"} <= set(names["seen"])
    (expected,) = irc.run(model.graph, [images[:1]])
    assert not np.array_equal(names["logits"], expected)  # the replaced kernel ran
    np.testing.assert_array_equal(model(images[:1])[0], expected)  # restored: bit-exact
