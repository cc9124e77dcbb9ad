"""The ``irc`` command: dump and run models (ONNX or irc text IR).

Errors caused by the input print one line on stderr and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from irc.errors import IrcError

EXIT_USAGE = 2


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,…, got '{text}'")
    try:
        return name, tuple(int(d) for d in dims.split(",") if d)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dimensions must be integers, got '{dims}'") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx model or an irc text IR file")
    p.add_argument(
        "--input-shape",
        action="append",
        type=_parse_shape,
        default=[],
        metavar="NAME=D0,D1,…",
        help="specialise an input's symbolic dimensions (repeatable), e.g. input=1,3,224,224",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="irc", description="irc: a mixed-precision quantizing compiler for CPUs."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    dump = sub.add_parser(
        "dump",
        help="print a model's IR",
        description=(
            "Print the IR of an ONNX model or a text IR file. Large constants are elided unless "
            "--full is given; a --full dump parses back into a graph that runs."
        ),
    )
    _add_model_args(dump)
    dump.add_argument("--full", action="store_true", help="print every constant in full")
    dump.add_argument(
        "--stats",
        action="store_true",
        help="print a per-layer table (op, output shape, params, MACs) instead",
    )
    dump.add_argument("-o", "--output", help="write to this file instead of stdout")

    run = sub.add_parser(
        "run",
        help="run a model in the reference interpreter",
        description=(
            "Run a model on inputs read from .npy files (one --input per model input, in order, "
            "or NAME=FILE.npy) or from one .npz holding every input by name."
        ),
    )
    _add_model_args(run)
    run.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="[NAME=]FILE",
        help="an input array (.npy), or a .npz with all inputs by name",
    )
    run.add_argument(
        "-o",
        "--output",
        help="write the outputs here (.npy for one output, "
        ".npz for several); without it, print a summary",
    )
    return parser


def main(argv=None) -> int:
    """Entry point of the ``irc`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except IrcError as e:
        if args.debug:
            raise
        first, *rest = str(e).splitlines() or [type(e).__name__]
        print(
            f"irc: error: {first}" + (f" (+{len(rest)} more lines; --debug)" if rest else ""),
            file=sys.stderr,
        )
        return EXIT_USAGE
    except (OSError, MemoryError) as e:
        if args.debug:
            raise
        print(f"irc: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _load(args):
    from irc.loader import load_graph

    return load_graph(args.model, dict(args.input_shape) or None)


def cmd_dump(args) -> int:
    from irc.printer import print_graph
    from irc.stats import format_stats

    graph = _load(args)
    text = format_stats(graph) + "\n" if args.stats else print_graph(graph, full=args.full)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args) -> int:
    from irc.cli_io import read_inputs, summarize, write_outputs
    from irc.interpreter import run_graph

    graph = _load(args)
    inputs = read_inputs(args.input, graph)
    outputs = run_graph(graph, inputs)
    names = [v.name for v in graph.outputs]
    if args.output:
        write_outputs(args.output, names, outputs)
    else:
        print(summarize(names, outputs))
    return 0


_COMMANDS = {"dump": cmd_dump, "run": cmd_run}

if __name__ == "__main__":
    sys.exit(main())
