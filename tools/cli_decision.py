"""The ``irc`` command's precision-decision parts: ``compile --strategy`` and ``inspect``.

``compile --strategy auto --max-size 2.5MB --max-drop 1.0`` chooses each layer's precision
(``irc.decision``) instead of one ``--precision`` for all; ``--report FILE.json`` writes the
decision, its prediction, verification and sensitivity table. Each stage's result is kept
in the stage cache (``irc.decision.stage_cache``; ``--no-cache`` turns it off) and
``--sensitivity FILE`` reuses a table measured before. When the budgets cannot be met, the
report and the best plan verified are still written (``budget_miss``). ``inspect FILE``
prints per layer the precision, sensitivity, predicted and measured latency and bytes of a
compiled model file (the decision's annotations on its IR).
"""

from __future__ import annotations

import argparse
import json
import os

from irc.cli_io import positive_count
from irc.decision import BudgetError, Budgets, parse_latency, parse_size
from irc.decision.choose import drop_phrase, measured_text
from irc.errors import InputError
from irc.precision import layer_name
from irc.report import format_bytes, model_report

try:  # the cluster extra: --dask runs search's evaluations on a Dask cluster
    import distributed
except ImportError:
    distributed = None

STRATEGY_NAMES = ("auto", "uniform-int8", "quantune", "sals", "profile-score", "sigma", "search")


def add_strategy_args(p: argparse.ArgumentParser) -> None:
    """The compile command's decision options."""
    g = p.add_argument_group(
        "choosing precisions per layer",
        "with --strategy, irc measures each layer's sensitivity (on the first --sample "
        "calibration inputs) and cost on this machine, decides, and verifies the compiled "
        "plan against the budgets",
    )
    g.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        help="how to choose each layer's precision (instead of --precision)",
    )
    g.add_argument("--max-size", metavar="SIZE", help="stored model size budget, e.g. 2.5MB")
    g.add_argument(
        "--max-latency",
        metavar="TIME",
        help="batch-1 latency budget: 12ms, or 0.9x (ratio to uniform INT8)",
    )
    g.add_argument(
        "--min-sqnr",
        type=float,
        metavar="DB",
        help="minimum SQNR of the model output against FP32 (dB)",
    )
    g.add_argument(
        "--max-drop",
        type=float,
        metavar="POINTS",
        help="maximum top-1 drop against FP32; needs a --calib folder with labels.txt",
    )
    g.add_argument(
        "--holdout",
        type=holdout_arg,
        metavar="N|DIR",
        help="labelled images --max-drop is checked on, apart from all the compile fits on: "
        "N images of the --calib folder, or a labelled folder DIR; 0: none apart (default: "
        "half the --calib folder)",
    )
    g.add_argument(
        "--evaluations",
        type=positive_count,
        metavar="N",
        help="--strategy search: candidate plans compiled and scored (default 100)",
    )
    g.add_argument(
        "--workers",
        type=positive_count,
        metavar="N",
        help="--strategy search: candidates scored at once, each in a local process (default 2)",
    )
    g.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="--strategy search: run the evaluations on the Dask cluster whose scheduler is "
        "at ADDRESS (needs the cluster extra: pip install 'irc[cluster]')",
    )
    g.add_argument(
        "--sample",
        type=int,
        default=16,
        metavar="N",
        help="calibration inputs used for sensitivity and verification (default 16)",
    )
    g.add_argument(
        "--report",
        metavar="FILE.json",
        help="write the decision (plan, prediction, verification, sensitivity)",
    )
    g.add_argument(
        "--sensitivity",
        metavar="FILE.csv|.json",
        help="the sensitivity table: reused when FILE holds this model's, else measured and "
        "written to FILE",
    )
    g.add_argument(
        "--no-cache",
        action="store_true",
        help="neither reuse nor keep the stages' results (calibration, sensitivity, plan) in "
        "the stage cache ($IRC_CACHE_DIR/stages, default ~/.cache/irc/stages)",
    )
    # fmt: skip


def search_settings(args) -> tuple[dict | None, object]:
    """(``strategy_options``, ``executor``) of the search options; the executor a Dask
    client of ``--dask``'s scheduler. InputError when given without ``--strategy search``."""
    given = [f for f in ("evaluations", "workers", "dask") if getattr(args, f) is not None]
    if args.strategy != "search":
        if given:
            raise InputError(f"--{given[0]} needs --strategy search")
        return None, None
    options = {}
    if args.evaluations is not None:
        options["evaluations"] = args.evaluations
    if args.workers is not None:
        options["width"] = args.workers
    if args.dask is None:
        return options or None, None
    if distributed is None:
        raise InputError("--dask needs dask.distributed: pip install 'irc[cluster]'")
    try:
        return options or None, distributed.Client(args.dask, timeout=30)
    except OSError as e:
        raise InputError(f"--dask: cannot reach the scheduler at {args.dask!r}: {e}") from None


def holdout_arg(text: str):
    """``--holdout``: a count of images (an int) or a labelled folder (a path)."""
    if text.isdigit():
        return int(text)
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"'{text}' is neither a number nor a folder")
    return text


def budgets_from_args(args):
    """A ``Budgets`` from the compile command's options (None when no strategy)."""
    if args.strategy is None:
        given = [o for o in ("max_size", "max_latency", "min_sqnr", "max_drop", "report",
                             "sensitivity", "holdout") if getattr(args, o) is not None]  # fmt: skip
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InputError(f"{flag} needs --strategy (e.g. --strategy auto)")
        return None
    if args.precision != "fp32":
        raise InputError("give --precision or --strategy, not both")
    seconds, ratio = parse_latency(args.max_latency) if args.max_latency else (None, None)
    return Budgets(
        max_bytes=parse_size(args.max_size) if args.max_size else None,
        max_latency=seconds, max_latency_ratio=ratio,
        min_sqnr=args.min_sqnr, max_drop=args.max_drop,
    )  # fmt: skip


def write_decision_files(model, args) -> None:
    """The ``--report`` file of a strategy-compiled model (the compile wrote
    ``--sensitivity``'s)."""
    choice = getattr(model, "choice", None)
    if choice is None:
        return
    if args.report:
        with open(args.report, "w") as f:
            json.dump(choice.to_dict(), f, indent=1)


def best_plan_path(output: str) -> str:
    """Where a missed budget's best plan goes: ``OUTPUT`` with ``.best-plan.json`` for its
    suffix."""
    return os.path.splitext(output)[0] + ".best-plan.json"


def budget_miss(error: BudgetError, args) -> BudgetError:
    """After budgets were missed: write ``--report`` (every attempt, the best plan marked as
    not meeting the budgets) and the best plan as a ``--precision`` plan file beside the
    output; the error again, its one line saying where they are."""
    partial = error.partial
    first = (str(error).splitlines() or ["the budgets cannot be met"])[0]
    if partial is None:
        return error
    written = []
    best = partial.best
    if best is not None:
        path = best_plan_path(args.output)
        with open(path, "w") as f:
            json.dump(partial.best_plan(), f, indent=1)
        written.append(f"the best plan reached is in {path} (measured {measured_text(best[1])})")
    else:
        written.append("no plan was verified")
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"error": first, **partial.to_dict()}, f, indent=1)
        written.append(f"the report in {args.report}")
    found = BudgetError(f"{first}; {', '.join(written)}")
    found.partial = partial
    return found


def decision_lines(model) -> list[str]:
    """Lines on what the strategy chose and what the compiled plan measured."""
    choice = getattr(model, "choice", None)
    return [] if choice is None else summary_lines(choice.summary())


def summary_lines(s: dict) -> list[str]:
    """``decision_lines`` from a decision summary (``Choice.summary()``, or a model file's
    metadata)."""
    v, p = s["verified"], s["predicted"]
    drop = "" if v["drop"] is None else f", top-1 drop {drop_phrase(v)}"
    sqnr = "inf" if v["output_sqnr_db"] is None else f"{v['output_sqnr_db']:.1f}"
    tries = f"{s['tries']} verified tr{'y' if s['tries'] == 1 else 'ies'}"
    if s.get("reused"):
        tries += ", reused from the stage cache"
    return [
        f"strategy {s['strategy']} under {s['budgets']} ({tries}; sensitivity on "
        f"{s['sensitivity_images']} inputs)",
        f"  predicted {format_bytes(p['bytes'])}, {p['latency_ms']:.2f} ms; measured "
        f"{format_bytes(v['bytes'])}, {_ms(v.get('latency_ms'))}, output SQNR {sqnr} dB{drop}",
    ]


def _ms(value) -> str:
    """Milliseconds as the summary prints them; "latency not saved" when absent (a model
    file keeps no measured timings unless saved with them)."""
    return "latency not saved" if value is None else f"{value:.2f} ms"


def inspect_rows(graph) -> list[dict]:
    """Per layer: the report's row joined with the decision's annotations."""
    notes = {}
    for op in graph.ops:
        found = {k[5:]: v for k, v in op.attrs.items() if k.startswith("note_")}
        if found:
            notes[layer_name(op)] = found
    rows = []
    for row in model_report(graph).layers:
        n = notes.get(row.name, {})
        rows.append({
            "layer": row.name, "op": row.kind, "precision": row.precision,
            "output_nsr": n.get("output_nsr"), "local_sqnr_db": n.get("local_sqnr"),
            "predicted_us": n.get("predicted_us"), "measured_us": n.get("measured_us"),
            "bytes": row.bytes, "fp32_bytes": row.fp32_bytes, "reason": n.get("reason"),
        })  # fmt: skip
    return rows


def format_inspect(rows: list[dict], max_name: int = 48) -> str:
    """An aligned table of ``inspect_rows``: numbers formatted, a note of another kind (a
    string, a list: a hand-edited or foreign file) printed as it is, a missing one as -."""
    header = ("layer", "precision", "out NSR", "SQNR dB", "pred µs", "meas µs", "bytes", "reason")

    def num(v, fmt):
        if v is None:
            return "-"
        if isinstance(v, bool) or not isinstance(v, int | float):
            return str(v)
        try:
            return format(v, fmt)
        except OverflowError:  # an int too large for a float
            return str(v)

    body = [
        (
            r["layer"] if len(r["layer"]) <= max_name else "…" + r["layer"][-max_name + 1 :],
            r["precision"],
            num(r["output_nsr"], ".2e"),
            num(r["local_sqnr_db"], ".1f"),
            num(r["predicted_us"], ".0f"),
            num(r["measured_us"], ".0f"),
            f"{r['bytes']:,}",
            "" if r["reason"] is None else str(r["reason"]),
        )  # fmt: skip
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()  # fmt: skip

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def add_inspect_parser(sub, add_model_args) -> None:
    """``irc inspect FILE``."""
    p = sub.add_parser(
        "inspect",
        help="per layer: precision, sensitivity, predicted and measured latency, bytes",
        description=(
            "Print, per layer of a compiled model file, the precision chosen, its sensitivity "
            "(output noise-to-signal ratio with that layer alone quantized; local SQNR), the "
            "latency the cost model predicted and the one measured in the compiled model, the "
            "bytes stored and the reason for the choice; then the decision's summary. Models "
            "compiled without --strategy show the precisions and bytes only."
        ),
    )
    add_model_args(p, "a compiled model file (or an .onnx / text IR model)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def cmd_inspect(args, load) -> int:
    """Run ``irc inspect``; ``load(args)`` gives (graph, metadata or None)."""
    graph, meta = load(args)
    rows = inspect_rows(graph)
    decision = (meta or {}).get("decision")
    if args.json:
        totals = model_report(graph).to_dict()["totals"]
        print(json.dumps({"metadata": meta, "layers": rows, "totals": totals,
                          "decision": decision}, indent=1))  # fmt: skip
        return 0
    print(format_inspect(rows))
    t = model_report(graph).totals
    print(f"\nsize {format_bytes(t.bytes)} vs FP32 {format_bytes(t.fp32_bytes)} "
          f"({t.ratio:.2f}× smaller)")  # fmt: skip
    for line in summary_lines(decision) if decision else []:
        print(line)
    return 0
