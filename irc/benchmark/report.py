"""The benchmark as a markdown table and a JSON document.

The markdown table is what docs/results.md shows: one line per configuration with its size
(and ratio to FP32), batch-1 latency (and ratios to irc's uniform INT8 and onnxruntime
INT8 where those were measured), top-1 (and its change from irc FP32) and compile time.
"""

from __future__ import annotations

import json
from pathlib import Path

from irc.benchmark.runner import BenchResult

HEADER = (
    "| configuration | size (MB) | vs FP32 | latency (ms) | / irc INT8 | / ort INT8 "
    "| top-1 | Δ top-1 | compile (s) |"
)


def markdown(result: BenchResult) -> str:
    """The results table with a caption saying how it was measured."""
    lines = [
        f"{Path(result.model).name}: top-1 on {result.eval_images} labelled images; "
        f"calibration on {result.calib_images} other images, sensitivity on the first "
        f"{result.sample}; {result.rounding} rounding; batch-1 latency on "
        f"{result.threads} thread(s), medians of {result.runs} interleaved rounds",
        "",
        HEADER,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    latency = {r.name: r.latency_ms for r in result.rows if r.latency_ms}
    fp32 = _value(result, "irc fp32", "top1")
    for r in result.rows:
        if r.error:
            continue
        cells = [
            r.name if r.runtime == "irc" else f"{r.name} (onnxruntime)",
            _num(r.bytes and r.bytes / 1e6, ".2f"),
            _num(r.bytes and result.fp32_bytes / r.bytes, ".2f", "×"),
            _num(r.latency_ms, ".2f"),
            _ratio(r.latency_ms, latency.get("uniform-int8")),
            _ratio(r.latency_ms, latency.get("ort int8")),
            _num(r.top1, ".2f"),
            _num(None if r.top1 is None or fp32 is None else r.top1 - fp32, "+.2f"),
            _num(r.compile_s, ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in result.rows if r.error]
    if failed or result.shared_s:
        lines.append("")
    for r in failed:
        lines.append(f"- {r.name}: no plan meets the budgets ({r.error})")
    if result.shared_s:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.shared_s.items())
        lines.append(f"- shared by the strategy rows (included in their compile time): {parts}")
    return "\n".join(lines) + "\n"


def write_json(result: BenchResult, path) -> None:
    """``result`` as indented JSON."""
    Path(path).write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")


def _value(result: BenchResult, name: str, attr: str):
    try:
        return getattr(result.row(name), attr)
    except KeyError:
        return None


def _num(x, fmt: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{suffix}"


def _ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"
