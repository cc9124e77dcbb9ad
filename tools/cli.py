"""The ``irc`` command: dump, run and optimise models (ONNX or irc text IR).

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
    _add_opt_parser(sub)
    return parser


def _add_opt_parser(sub) -> None:
    from irc.pipelines import DEFAULT_FLOAT_PIPELINE

    opt = sub.add_parser(
        "opt",
        help="run a pipeline of passes over a model and print the IR",
        description=(
            "Run a pipeline of graph passes over an ONNX model or a text IR file (as\n"
            "mlir-opt does) and print the resulting IR on stdout, or to -o FILE. The\n"
            "result is verified; instruments report on stderr."
        ),
        epilog=_pipeline_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(opt)
    opt.add_argument(
        "--pipeline",
        metavar="PIPELINE",
        help="the passes to run; default: the '// pipeline:' line a reproducer starts "
        f"with, else {DEFAULT_FLOAT_PIPELINE}",
    )
    opt.add_argument("-o", "--output", help="write the IR to this file instead of stdout")
    opt.add_argument("--full", action="store_true", help="print every constant in full")
    opt.add_argument("--timing", action="store_true", help="report each pass's time and statistics")
    opt.add_argument("--verify-each", action="store_true", help="verify the graph after every pass")
    opt.add_argument(
        "--print-ir-before-all", action="store_true", help="print the IR before every pass"
    )
    opt.add_argument(
        "--print-ir-after-all", action="store_true", help="print the IR after every pass"
    )
    opt.add_argument(
        "--print-ir-after-change",
        action="store_true",
        help="print the IR after every pass whose statistics say it changed something",
    )
    opt.add_argument(
        "--dump-dir", metavar="DIR", help="write the IR after pass i to DIR/ii-NAME.irc"
    )
    opt.add_argument(
        "--stop-after",
        type=_count,
        metavar="N",
        help="run only the first N passes (to bisect a pipeline)",
    )
    opt.add_argument(
        "--reproducer-dir",
        metavar="DIR",
        help="when a pass fails, write DIR/reproducer.irc: the IR it got, in full, under a "
        "'// pipeline:' line with the passes from it on (feed it back to irc opt)",
    )


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got '{text}'")
    return n


def _pipeline_help() -> str:
    """The pipeline syntax and every registered pass, for ``irc opt --help``."""
    import dataclasses

    from irc.pass_manager import available_passes

    lines = [
        "pipeline syntax:",
        "  PASS[{OPTION=VALUE,...}],PASS...   e.g. canonicalize,fuse{acts=relu,clip}",
        "  a list option takes values up to the next OPTION=; booleans are true/false",
        "",
        "passes:",
    ]
    for name, cls in available_passes().items():
        options = ",".join(f"{f.name}={_option_text(f.default)}" for f in dataclasses.fields(cls))
        title = name + (f"{{{options}}}" if options else "")
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"  {title}")
        if doc:
            lines.append(f"      {doc}")
    return "\n".join(lines)


def _option_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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


def _emit(text: str, path: str | None) -> None:
    """Write command output to ``path``, or to stdout without one."""
    if path:
        with open(path, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def cmd_dump(args) -> int:
    from irc.printer import print_graph
    from irc.stats import format_stats

    graph = _load(args)
    text = format_stats(graph) + "\n" if args.stats else print_graph(graph, full=args.full)
    _emit(text, args.output)
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


def cmd_opt(args) -> int:
    import time

    from irc.pass_manager import PassContext, PassManager
    from irc.printer import print_graph
    from irc.verifier import verify_graph

    ctx = PassContext(
        verify_each=args.verify_each,
        timing=args.timing,
        print_ir_before_all=args.print_ir_before_all,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after_change=args.print_ir_after_change,
        dump_dir=args.dump_dir,
        stop_after=args.stop_after,
        reproducer_dir=args.reproducer_dir,
        out=sys.stderr,
    )
    pipeline = args.pipeline if args.pipeline is not None else _pipeline_of(args.model)
    manager = PassManager(pipeline, ctx)  # a bad pipeline fails before the model loads
    graph = _load(args)
    start = time.perf_counter()
    manager.run(graph)
    seconds = time.perf_counter() - start
    verify_graph(graph)
    if args.timing:
        report = ctx.report()
        sys.stderr.write((report + "\n" if report else "") + f"total: {seconds * 1e3:.1f} ms\n")
    text = print_graph(graph, full=args.full)
    _emit(text, args.output)
    return 0


def _pipeline_of(path: str) -> str:
    """The pipeline a reproducer names in its first line, else the default float pipeline."""
    from irc.pipelines import DEFAULT_FLOAT_PIPELINE

    prefix = "// pipeline:"
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8", errors="replace")
    except OSError:
        return DEFAULT_FLOAT_PIPELINE  # loading the model reports the problem
    return first[len(prefix) :].strip() if first.startswith(prefix) else DEFAULT_FLOAT_PIPELINE


_COMMANDS = {"dump": cmd_dump, "run": cmd_run, "opt": cmd_opt}

if __name__ == "__main__":
    sys.exit(main())
