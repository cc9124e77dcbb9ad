"""A Pareto plot of ``bench_user_path.py`` results: compression against top-1 change.

Each JSON file (``bench_user_path.py --json``) gives one point per run: x is the model's
compression (FP32 bytes over stored bytes), y its val1300 top-1 minus FP32's, marked by
strategy; ``search`` runs add their shorter searches' best plans (``--checkpoints``) as
hollow points. The upper right is better.

    python bench/plot_user_path.py /tmp/runs/*_mobilenetv2_bn.json -o mnv2-pareto.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

MARKERS = {"auto": "o", "search": "*", "sals": "s", "sigma": "^", "uniform-int8": "D",
           "quantune": "v", "profile-score": "P"}  # fmt: skip


def points(rows: dict) -> list[tuple[str, float, float, bool]]:
    """(label, compression, top-1 change, hollow) of each run in one results file."""
    strategy = rows["strategy"]
    out = []
    for run in rows["runs"]:
        out.append((strategy, run["ratio"], run["delta"], False))
        for count, shorter in run.get("checkpoints", {}).items():
            out.append((f"{strategy} ({count} evaluations)", shorter["ratio"], shorter["delta"],
                        True))  # fmt: skip
    return out


def plot(files: list[Path], output: Path) -> None:
    """Draw every run of ``files`` on one axes and save it to ``output``."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    model = None
    for path in files:
        rows = json.loads(path.read_text())
        model = rows["model"]
        for label, ratio, delta, hollow in points(rows):
            marker = MARKERS.get(rows["strategy"], "x")
            face = "none" if hollow else None
            ax.scatter(ratio, delta, marker=marker, s=70, facecolors=face,
                       label=None if label in seen else label,
                       color=f"C{sorted(MARKERS).index(rows['strategy']) % 10}")  # fmt: skip
            seen.add(label)
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel("compression (FP32 bytes / stored bytes)")
    ax.set_ylabel("top-1 change against FP32 (points, val1300)")
    ax.set_title(f"{model}: strategies through irc.compile")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="bench_user_path.py JSON files")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    plot(args.files, args.output)


if __name__ == "__main__":
    main()
