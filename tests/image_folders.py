"""Small labelled image folders for tests of what reads folders (calibration, held-out
images, search)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from irc.calibration import Preprocess

PRE = Preprocess(resize=16, crop=16)  # the folders' images as small_convnet takes them


def labelled_folder(root, count: int, classes: int = 3):
    """``count`` random 20x24 PNGs in ``root`` (created), named in class order as ImageNet
    folders are, with their ``labels.txt``."""
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        label = i * classes // count
        name = f"c{label}_{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(root / name)
        lines.append(f"{name} {label}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root
