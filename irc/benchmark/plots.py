"""Pareto plots of a benchmark: size against top-1 and latency against top-1 (PNG).

matplotlib is optional (the ``demo`` extra); without it ``write_plots`` returns no
files and says why.
"""

from __future__ import annotations

from pathlib import Path

from irc.benchmark.runner import BenchResult

AXES = {
    "size": ("bytes", 1e-6, "stored size (MB)"),
    "latency": ("latency_ms", 1.0, "batch-1 latency (ms)"),
}


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: smaller x and higher y (ties kept)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _floor(tops: list[float], span: float = 12.0) -> float:
    """The lowest top-1 drawn: ``span`` points under the best, so that one collapsed
    configuration does not flatten the others (points below are drawn on it, marked ▼)."""
    return max(min(tops), max(tops) - span)


def write_plots(result: BenchResult, out_dir, stem: str) -> tuple[list[Path], str | None]:
    """``{stem}-size.png`` and ``{stem}-latency.png`` in ``out_dir``; (files, why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'irc[demo]')"
    files = []
    for axis, (attr, scale, label) in AXES.items():
        rows = [r for r in result.rows if getattr(r, attr) is not None and r.top1 is not None]
        if not rows:
            continue
        points = [(getattr(r, attr) * scale, r.top1) for r in rows]
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        floor = _floor([y for _, y in points])
        front = pareto(points)
        fx, fy = zip(*sorted(points[i] for i in front))
        ax.step(fx, fy, where="post", color="0.7", zorder=1, label="Pareto front")
        for r, (x, y) in zip(rows, points):
            irc_row = r.runtime == "irc"
            shown = max(y, floor)
            text = r.name if y >= floor else f"{r.name} ({y:.1f}%)"
            ax.scatter(x, shown, marker=("o" if irc_row else "s") if y >= floor else "v",
                       zorder=2, color="tab:blue" if irc_row else "tab:orange",
                       label=("irc" if irc_row else "onnxruntime"))  # fmt: skip
            ax.annotate(text, (x, shown), textcoords="offset points", fontsize=7,
                        xytext=(4, 3) if irc_row else (4, -9))  # fmt: skip
        ax.set_ylim(bottom=floor - 0.5)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"top-1 (%) on {result.eval_images} images")
        ax.set_title(f"{Path(result.model).name}: {label.split(' (')[0]} against top-1")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(out_dir) / f"{stem}-{axis}.png"
        fig.savefig(path)
        plt.close(fig)
        files.append(path)
    return files, None
