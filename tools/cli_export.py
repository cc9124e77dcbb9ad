"""The ``irc export`` command: a compiled model file as standard ONNX (QDQ form).

``irc export model.ircm -o model.onnx`` reads a file written by ``irc compile -o`` and
writes its mixed-precision graph as ONNX that onnxruntime and Netron open
(``irc.export_onnx``): INT8 / INT4 / INT2 weight initializers with per-channel
DequantizeLinear, QuantizeLinear → DequantizeLinear between layers, FP16 weights with a Cast.
"""

from __future__ import annotations

import argparse
import os

from irc.export_onnx import export_onnx
from irc.report import format_bytes
from irc.serialize import read_graph_file


def add_export_parser(sub) -> None:
    """Register ``irc export`` on the ``irc`` command's subparsers."""
    p = sub.add_parser(
        "export",
        help="write a compiled model file as standard ONNX (QDQ form)",
        description=(
            "Write a compiled model file (irc compile -o) as a standard ONNX model in QDQ\n"
            "form: INT8/INT4 weights as ONNX integer initializers with per-channel\n"
            "DequantizeLinear (INT2's odd levels -3..3 as INT4), activations quantized\n"
            "between layers with irc's scales and zero points, FP16 layers as float16\n"
            "weights with a Cast (opset 21). onnxruntime fuses the INT8 layers into its\n"
            "integer kernels and runs INT4/INT2 layers in float."
        ),
        epilog=(
            "examples:\n"
            "  irc compile model.onnx --precision int8 --calib samples.npy -o model.ircm\n"
            "  irc export model.ircm -o model.qdq.onnx\n"
            "  irc export model.ircm -o model.qdq.onnx --int8-weights uint8   # x86 without VNNI"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="a compiled model file, as written by irc compile -o")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="the ONNX file")
    p.add_argument(
        "--activations", default="uint8", choices=("uint8", "int8"),
        help="storage of the int8 activations: uint8 (levels + 128, zero points + 128, the "
        "same reals; default, the form onnxruntime fuses everywhere) or int8 (irc's levels)",
    )  # fmt: skip
    p.add_argument(
        "--int8-weights", default="int8", choices=("int8", "uint8"),
        help="storage of INT8 weights: int8 (default) or uint8 (levels + 128, zero point "
        "128), which onnxruntime computes exactly on x86 CPUs without VNNI",
    )  # fmt: skip


def cmd_export(args) -> int:
    """Run ``irc export``: read the compiled model file, write its ONNX form."""
    # a missing, foreign (ONNX, text IR), truncated or corrupt file: ModelFileError says so
    graph, _ = read_graph_file(args.model)
    proto = export_onnx(graph, args.output, activations=args.activations,
                        int8_weights=args.int8_weights)  # fmt: skip
    opset = proto.opset_import[0].version
    print(
        f"wrote {args.output} ({format_bytes(os.path.getsize(args.output))}, opset {opset}, "
        f"{len(proto.graph.node)} nodes)"
    )
    return 0
