"""The ``irc`` command: dump, run, optimise, compile, report on, benchmark and export models.

``dump``, ``run`` and ``opt`` take an ONNX model or irc text IR (``-``: read from standard
input); ``dump --format dot`` draws the graph for Graphviz; ``compile`` writes a
compiled model file (``irc.load`` reads it), which ``run``, ``report``, ``inspect`` and
``export`` (to ONNX QDQ) also take. ``zoo`` writes pretrained models as ONNX; ``bench``
measures every strategy beside onnxruntime (``cli_zoo``, ``cli_bench``, ``cli_export``,
``cli_decision`` hold those parts).

Errors caused by the input print one line on stderr and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

import numpy as np

import irc
from irc.build import load_model
from irc.calibration import COMPILE_METHOD, METHODS
from irc.calibration.images import preprocess_spec
from irc.calibration.progress import duration
from irc.cli_io import (
    STDIN,
    graph_from_bytes,
    positive_count,
    read_inputs,
    read_stdin,
    summarize,
    write_outputs,
)
from irc.errors import InputError, IrcError
from irc.graph_dot import dot_to_svg, graph_to_dot
from irc.interpreter import run_graph
from irc.loader import load_graph
from irc.memory_plan import print_memory_plan
from irc.pass_manager import PassContext, PassManager, available_passes
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.printer import print_graph
from irc.report import format_bytes, model_report
from irc.serialize import describe_metadata, is_model_file, read_graph_file
from irc.stats import format_stats
from irc.tools.cli_bench import add_bench_parser, cmd_bench
from irc.tools.cli_decision import (
    BudgetError,
    add_inspect_parser,
    add_strategy_args,
    budget_miss,
    budgets_from_args,
    cmd_inspect,
    decision_lines,
    search_settings,
    write_decision_files,
)
from irc.tools.cli_export import add_export_parser, cmd_export
from irc.tools.cli_zoo import add_zoo_parser, cmd_zoo
from irc.verifier import verify_graph

EXIT_USAGE = 2


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,…, got '{text}'")
    try:
        return name, tuple(int(d) for d in dims.split(",") if d)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dimensions must be integers, got '{dims}'") from None


def _add_model_args(
    p: argparse.ArgumentParser, what: str = "an .onnx model or an irc text IR file"
):
    p.add_argument("model", help=what + " ('-' reads it from standard input)")
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
            "--full is given; a --full dump parses back into a graph that runs. --format dot "
            "draws the graph instead, as Graphviz DOT text: a node per op (its kind, result "
            "types, attributes and, for a layer, its precision; constants are listed in the "
            "label of the op using them rather than drawn) and an edge per operand."
        ),
    )
    _add_model_args(dump)
    dump.add_argument(
        "--full",
        action="store_true",
        help="print every constant in full (--format dot: every per-axis scale of a type)",
    )
    dump.add_argument(
        "--stats",
        action="store_true",
        help="print a per-layer table (op, output shape, params, MACs) instead",
    )
    dump.add_argument(
        "--format",
        choices=("ir", "dot", "svg"),
        default="ir",
        help="ir: the text IR (default); dot: the graph as Graphviz DOT text; svg: that "
        "graph drawn by Graphviz's dot program (which must be on PATH)",
    )
    dump.add_argument("-o", "--output", help="write to this file instead of stdout ('-': stdout)")

    run = sub.add_parser(
        "run",
        help="run a model (reference interpreter, or a compiled model file)",
        description=(
            "Run a model on inputs read from .npy files (one --input per model input, in order, "
            "or NAME=FILE.npy) or from one .npz holding every input by name. An ONNX model or "
            "text IR runs in the reference interpreter; a compiled model file (irc compile -o) "
            "runs its compiled code."
        ),
    )
    _add_model_args(run, "an .onnx model, an irc text IR file or a compiled model file")
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
    run.add_argument(
        "--threads", type=positive_count, metavar="N", help="threads (compiled model files only)"
    )
    _add_opt_parser(sub)
    _add_compile_parser(sub)
    _add_report_parser(sub)
    add_inspect_parser(sub, _add_model_args)
    add_zoo_parser(sub)
    add_bench_parser(sub)
    add_export_parser(sub)
    return parser


def _add_opt_parser(sub) -> None:
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
    opt.add_argument(
        "-o", "--output", help="write the IR to this file instead of stdout ('-': stdout)"
    )
    opt.add_argument("--full", action="store_true", help="print every constant in full")
    opt.add_argument(
        "--timing",
        "--mlir-timing",
        action="store_true",
        help="report each pass's time and statistics",
    )
    opt.add_argument("--verify-each", action="store_true", help="verify the graph after every pass")
    opt.add_argument(
        "--print-ir-before-all",
        "--mlir-print-ir-before-all",
        action="store_true",
        help="print the IR before every pass",
    )
    opt.add_argument(
        "--print-ir-after-all",
        "--mlir-print-ir-after-all",
        action="store_true",
        help="print the IR after every pass",
    )
    opt.add_argument(
        "--print-ir-after-change",
        "--mlir-print-ir-after-change",
        action="store_true",
        help="print the IR after every pass whose statistics say it changed something",
    )
    opt.add_argument(
        "--dump-dir", metavar="DIR", help="write the IR after pass i to DIR/ii-NAME.irc"
    )
    opt.add_argument(
        "--stop-after",
        type=_stop_after,
        metavar="PASS|N",
        help="stop after the first run of the pass named PASS (e.g. fold-batchnorm), or after "
        "the first N passes (to bisect a pipeline)",
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


def _stop_after(text: str) -> int | str:
    """An argparse type: a pass count >= 0, or a pass name."""
    if text[:1].isalpha():
        return text
    return _count(text)


def _stop_index(passes: list, stop_after: int | str | None) -> int | None:
    """How many passes ``--stop-after`` runs: N as given, or up to the first run of PASS."""
    if not isinstance(stop_after, str):
        return stop_after
    names = [p.name for p in passes]
    if stop_after not in names:
        valid = ", ".join(dict.fromkeys(names)) or "none"
        raise InputError(
            f"--stop-after: pass '{stop_after}' is not in the pipeline; its passes: {valid}"
        )
    return names.index(stop_after) + 1


def _pipeline_help() -> str:
    """The pipeline syntax and every registered pass, for ``irc opt --help``."""
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
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning
            return _COMMANDS[args.command](args)
    except IrcError as e:
        if args.debug:
            raise
        # one line: an error's first line names its cause (a VerifyError's, the first
        # problem, counting the others); --debug shows the whole message and traceback
        first, *rest = str(e).splitlines() or [type(e).__name__]
        print(
            f"irc: error: {first}" + (" (--debug shows the rest)" if rest else ""), file=sys.stderr
        )
        return EXIT_USAGE
    except (OSError, MemoryError) as e:
        if args.debug:
            raise
        print(f"irc: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command prints it: ``irc: warning: MESSAGE`` on stderr (``--debug``
    keeps Python's form, with the file and line that raised it)."""
    print(f"irc: warning: {message}", file=sys.stderr)


def _load(args):
    """The model's graph; a compiled model file gives its final (saved) graph; ``-`` reads
    text IR or an ONNX model from standard input."""
    if args.model == STDIN:
        return graph_from_bytes(_stdin_data(args), dict(args.input_shape) or None)
    if is_model_file(args.model):
        if args.input_shape:
            raise InputError("a compiled model has fixed input shapes: drop --input-shape")
        return read_graph_file(args.model)[0]
    return load_graph(args.model, dict(args.input_shape) or None)


def _stdin_data(args) -> bytes:
    """Standard input's bytes, read once per command (kept on ``args``)."""
    if getattr(args, "stdin_data", None) is None:
        args.stdin_data = read_stdin()
    return args.stdin_data


def _emit(text: str, path: str | None) -> None:
    """Write command output to ``path``, or to stdout without one or with ``-``."""
    if path and path != STDIN:
        with open(path, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def cmd_dump(args) -> int:
    if args.stats and args.format != "ir":
        raise InputError(f"--stats prints a table, not a graph: drop --format {args.format}")
    graph = _load(args)
    if args.stats:
        text = format_stats(graph) + "\n"
    elif args.format == "ir":
        text = print_graph(graph, full=args.full)
    else:
        text = graph_to_dot(graph, full=args.full)
        if args.format == "svg":
            text = dot_to_svg(text)
    _emit(text, args.output)
    return 0


def cmd_run(args) -> int:
    if is_model_file(args.model):
        if args.input_shape:
            raise InputError("a compiled model has fixed input shapes: drop --input-shape")
        model = load_model(args.model, num_threads=args.threads, warmup=False)
        graph = model.graph
        outputs = list(model(_warn_non_finite(read_inputs(args.input, graph))))
    else:
        if args.threads is not None:
            raise InputError("--threads applies to compiled model files (irc compile -o FILE)")
        graph = _load(args)
        outputs = run_graph(graph, _warn_non_finite(read_inputs(args.input, graph)))
    names = [v.name for v in graph.outputs]
    if args.output:
        write_outputs(args.output, names, outputs)
    else:
        print(summarize(names, outputs))
    return 0


def _warn_non_finite(inputs: dict) -> dict:
    """``inputs``, after a warning on stderr for each float input holding NaN or ±inf (float
    ops follow IEEE; a quantize reads NaN as the zero point and saturates ±inf)."""
    for name, array in inputs.items():
        if np.issubdtype(array.dtype, np.floating):
            nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            if nan or inf:
                print(f"irc: warning: input '{name}' holds {nan} NaN and {inf} infinite values; "
                      "float layers follow IEEE, integer layers read NaN as the zero point and "
                      "saturate ±inf", file=sys.stderr)  # fmt: skip
    return inputs


def cmd_opt(args) -> int:
    ctx = PassContext(
        verify_each=args.verify_each,
        timing=args.timing,
        print_ir_before_all=args.print_ir_before_all,
        print_ir_after_all=args.print_ir_after_all,
        print_ir_after_change=args.print_ir_after_change,
        dump_dir=args.dump_dir,
        reproducer_dir=args.reproducer_dir,
        out=sys.stderr,
    )
    pipeline = args.pipeline if args.pipeline is not None else _pipeline_of(args)
    manager = PassManager(pipeline, ctx)  # a bad pipeline fails before the model loads
    ctx.stop_after = _stop_index(manager.passes, args.stop_after)
    graph = _load(args)
    start = time.perf_counter()
    manager.run(graph)
    seconds = time.perf_counter() - start
    verify_graph(graph)
    if args.timing:
        report = ctx.report()
        sys.stderr.write((report + "\n" if report else "") + f"total: {seconds * 1e3:.1f} ms\n")
    text = print_graph(graph, full=args.full)
    plan = ctx.analyses.get("memory_plan")
    if plan is not None:  # plan-memory ran: its plan follows the IR, as comments
        text += print_memory_plan(graph, plan)
    _emit(text, args.output)
    return 0


def _pipeline_of(args) -> str:
    """The pipeline a reproducer names in its first line, else the default float pipeline."""
    prefix = "// pipeline:"
    try:
        if args.model == STDIN:
            head = _stdin_data(args)[:4096].split(b"\n", 1)[0]
        else:
            with open(args.model, "rb") as f:
                head = f.readline(4096)
    except OSError:
        return DEFAULT_FLOAT_PIPELINE  # loading the model reports the problem
    first = head.decode("utf-8", errors="replace")
    return first[len(prefix) :].strip() if first.startswith(prefix) else DEFAULT_FLOAT_PIPELINE


def _add_compile_parser(sub) -> None:
    p = sub.add_parser(
        "compile",
        help="compile (and quantize) a model into one file that irc run / irc.load read",
        description=(
            "Compile an ONNX model or text IR for this CPU, quantizing its layers to the\n"
            "given precision (integer precisions calibrate activation ranges on --calib\n"
            "data), save the compiled model to -o FILE and print its size report."
        ),
        epilog=(
            "examples:\n"
            "  irc compile model.onnx --precision fp16 -o model.ircm\n"
            "  irc compile model.onnx --precision int8 --calib samples.npy -o model.ircm\n"
            "  irc compile model.onnx --precision plan.json --calib images/ \\\n"
            "      --preprocess torchvision --calib-limit 256 -o model.ircm\n"
            "  irc compile model.onnx --calib images/ --preprocess torchvision \\\n"
            "      --strategy auto --max-size 2.3MB --max-drop 1.0 -o model.ircm \\\n"
            "      --report decision.json      # then: irc inspect model.ircm\n"
            'plan.json maps layer names to precisions: {"default": "int8", "fc": "fp32"}\n'
            "(irc report model.onnx lists the layer names)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the model file to write")
    p.add_argument(
        "--precision", default="fp32", metavar="PRECISION|PLAN.json",
        help="int8, int4, int2 (weights; activations are int8), fp16 or fp32 (default) for "
        "every layer, or a JSON file mapping layer names to precisions",
    )  # fmt: skip
    p.add_argument(
        "--calib", metavar="DATA",
        help="calibration data for integer layers: a .npy array [N, ...], a .npz of arrays "
        "by input name, or a folder of images (with --preprocess)",
    )  # fmt: skip
    p.add_argument("--calib-limit", type=positive_count, metavar="N", help="use at most N samples")
    p.add_argument(
        "--calib-method", default=COMPILE_METHOD, choices=(COMPILE_METHOD, *METHODS),
        help="how activation ranges are chosen from the statistics: minmax keeps every value "
        "seen, mse the range of least int8 error, auto (default) the one of those two whose "
        "INT8 model is nearer the float one; graph outputs always keep every value seen",
    )  # fmt: skip
    p.add_argument(
        "--preprocess", choices=("torchvision", "imagenet", "efficientnet-lite"),
        help="how images of a --calib folder become input arrays; the resize and crop follow "
        "the model's input size when it is static and square (224 px: resize 256, crop 224)",
    )  # fmt: skip
    p.add_argument(
        "--image-size", type=positive_count, metavar="N",
        help="with --preprocess: crop N, resize in the preset's ratio (256/224 · N)",
    )  # fmt: skip
    p.add_argument("--resize", type=positive_count, metavar="N",
                   help="with --preprocess: resize the shorter side to N")  # fmt: skip
    p.add_argument("--crop", type=positive_count, metavar="N",
                   help="with --preprocess: centre-crop N x N")  # fmt: skip
    p.add_argument(
        "--weights", default="mse", choices=("mse", "minmax"),
        help="weight clipping per channel: least squared error (default) or the largest value",
    )  # fmt: skip
    p.add_argument(
        "--rounding", choices=("nearest", "gptq", "best"),
        help="weight rounding: nearest level, GPTQ's error-compensating rounding from up to "
        "256 calibration inputs' statistics, or (with --strategy) best: per layer and "
        "precision whichever of the two the sensitivity table measures better (default: best "
        "with --strategy, else nearest)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=positive_count, metavar="N",
        help="Numba threads for the warm-up run (irc run --threads sets a saved model's)",
    )  # fmt: skip
    p.add_argument(
        "--no-progress", action="store_true",
        help="show no progress on stderr (a bar per stage on a terminal, plain lines otherwise)",
    )  # fmt: skip
    add_strategy_args(p)


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="print a model's per-layer precision and size report",
        description=(
            "Print, per layer, the op, output shape, precision, parameters and bytes stored, "
            "and the model's size against FP32. Takes a compiled model file (its metadata is "
            "shown too) or an ONNX / text IR model."
        ),
    )
    _add_model_args(p, "a compiled model file, an .onnx model or an irc text IR file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _precision_arg(text: str):
    """A precision name, or the plan mapping of a JSON file."""
    if not text.lower().endswith(".json"):
        return text
    try:
        with open(text) as f:
            plan = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"--precision: cannot read the plan file '{text}': {e}") from None
    if not isinstance(plan, dict) or not all(isinstance(v, str) for v in plan.values()):
        raise InputError(f"--precision: '{text}' must map layer names to precision names")
    return plan


def _calibration_arg(path: str | None):
    """Calibration data: an array from .npy, a dict from .npz, or a folder path."""
    if path is None or os.path.isdir(path):
        return path
    if not os.path.isfile(path):
        raise InputError(f"--calib: '{path}' does not exist")
    if not path.endswith((".npy", ".npz")):
        raise InputError(f"--calib: '{path}' is not a .npy/.npz file or a folder of images")
    try:
        data = np.load(path, allow_pickle=False)
        return dict(data) if path.endswith(".npz") else data
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"--calib: '{path}' is not a readable .npy/.npz file: {e}") from None


def cmd_compile(args) -> int:
    if is_model_file(args.model):
        raise InputError(f"'{args.model}' is already a compiled model (irc run / report it)")
    start = time.perf_counter()
    budgets = budgets_from_args(args)
    strategy_options, executor = search_settings(args)
    try:
        model = irc.compile(
            args.model, dict(args.input_shape) or None, num_threads=args.threads,
            precision=_precision_arg(args.precision), calibration=_calibration_arg(args.calib),
            calibration_method=args.calib_method, weight_clipping=args.weights,
            preprocess=preprocess_spec(args.preprocess, image_size=args.image_size,
                                       resize=args.resize, crop=args.crop),
            calibration_limit=args.calib_limit,
            progress=not args.no_progress, strategy=args.strategy, budgets=budgets,
            sensitivity_limit=args.sample, rounding=args.rounding,
            stage_cache=not args.no_cache, sensitivity_table=args.sensitivity,
            holdout=args.holdout, strategy_options=strategy_options, executor=executor,
        )  # fmt: skip
    except BudgetError as e:
        raise budget_miss(e, args) from None
    finally:
        if executor is not None:
            executor.close()
    seconds = time.perf_counter() - start
    model.save(args.output)
    write_decision_files(model, args)
    print(model.report().to_text())
    for line in decision_lines(model):
        print(line)
    print(time_summary(seconds, model.compile_seconds))
    print(f"wrote {args.output} ({format_bytes(os.path.getsize(args.output))})")
    return 0


def time_summary(seconds: float, times: dict[str, float]) -> str:
    """``compiled in 45.2 s: load 0.3 s (1%), calibrate 12.3 s (27%), ...``: each stage of
    ``times`` (``CompiledModel.compile_seconds``) in the order it ran, with its share of
    ``seconds``; the time outside them, when it is noticeable, as ``other``."""
    stages = {name: s for name, s in times.items() if name != "total"}
    rest = seconds - sum(stages.values())
    if rest >= max(0.05, 0.01 * seconds):
        stages["other"] = rest
    whole = seconds if seconds > 0 else 1.0
    steps = [f"{name} {duration(s)} ({100 * s / whole:.0f}%)" for name, s in stages.items()]
    return f"compiled in {duration(seconds)}: {', '.join(steps)}"


def _graph_and_metadata(args):
    """(graph, metadata) of a compiled model file; (graph, None) of an ONNX / IR model."""
    if is_model_file(args.model):
        return read_graph_file(args.model)
    return _load(args), None


def cmd_report(args) -> int:
    graph, meta = _graph_and_metadata(args)
    report = model_report(graph)
    if args.json:
        print(json.dumps({"metadata": meta, **report.to_dict()}, indent=1))
        return 0
    if meta is not None:
        print(describe_metadata(args.model, meta) + "\n")
    print(report.to_text())
    return 0


_COMMANDS = {
    "dump": cmd_dump,
    "run": cmd_run,
    "opt": cmd_opt,
    "compile": cmd_compile,
    "report": cmd_report,
    "inspect": lambda args: cmd_inspect(args, _graph_and_metadata),
    "zoo": cmd_zoo,
    "bench": cmd_bench,
    "export": cmd_export,
}

if __name__ == "__main__":
    sys.exit(main())
