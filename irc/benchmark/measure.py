"""Measuring compiled models the same way for every row of a benchmark.

``accuracy`` runs any ``batch -> logits`` callable over labelled images; ``interleaved``
times several runners called in turn once per round (so a noisy neighbour slows all of
them alike) and keeps the medians.
"""

from __future__ import annotations

import time

import numpy as np


def accuracy(run, images: np.ndarray, labels: np.ndarray, batch: int = 1) -> tuple[float, float]:
    """Top-1 and top-5 in percent of ``run(batch) -> logits`` over the images.

    A compiled model has a static batch, so the last batch is padded with zeros (and the
    padding's logits dropped).
    """
    if len(images) == 0:
        raise ValueError("accuracy: no images")
    top1 = top5 = 0
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        if len(x) < batch:
            x = np.concatenate([x, np.zeros((batch - len(x),) + x.shape[1:], x.dtype)])
        logits = np.asarray(run(np.ascontiguousarray(x)))[: len(images) - start]
        want = labels[start : start + len(logits)]
        best = np.argsort(-logits, axis=1)[:, :5]
        top1 += int(np.sum(best[:, 0] == want))
        top5 += int(np.sum(np.any(best == want[:, None], axis=1)))
    return 100.0 * top1 / len(images), 100.0 * top5 / len(images)


def interleaved(runners: dict, x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of each runner ``run(x)``, all called in turn once per round."""
    for _ in range(warmup):
        for run in runners.values():
            run(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(ts)) for name, ts in times.items()}
