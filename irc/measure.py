"""Measuring models the same way everywhere: accuracy, latency, output SQNR.

``accuracy`` (and ``top1``) runs any ``batch -> logits`` callable over labelled images
(``batch_logits``), ``cross_entropy`` scores logits at labels;
``interleaved`` times several runners called in turn once per round (so a noisy neighbour
slows all of them alike) and keeps the medians (``interleaved_cpu`` the process CPU time of
each call beside its wall time); ``sqnr_db`` compares outputs with a
reference. The decision's verification, the benchmark and the bench scripts use these.
"""

from __future__ import annotations

import time

import numpy as np


def batch_logits(run, images: np.ndarray, batch: int = 1) -> np.ndarray:
    """``run(batch) -> logits`` over the images, stacked [N, C]. A compiled model has a
    static batch, so the last batch is padded with zeros (and the padding's logits
    dropped)."""
    rows = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        if len(x) < batch:
            x = np.concatenate([x, np.zeros((batch - len(x),) + x.shape[1:], x.dtype)])
        rows.append(np.asarray(run(np.ascontiguousarray(x)))[: len(images) - start])
    return np.concatenate(rows)


def accuracy(run, images: np.ndarray, labels: np.ndarray, batch: int = 1) -> tuple[float, float]:
    """Top-1 and top-5 in percent of ``run(batch) -> logits`` over the images (batched as
    ``batch_logits``)."""
    if len(images) == 0:
        raise ValueError("accuracy: no images")
    want = np.asarray(labels)
    best = np.argsort(-batch_logits(run, images, batch), axis=1)[:, :5]
    top1 = int(np.sum(best[:, 0] == want))
    top5 = int(np.sum(np.any(best == want[:, None], axis=1)))
    return 100.0 * top1 / len(images), 100.0 * top5 / len(images)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy of ``logits`` [B, C] at ``labels`` [B], in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.log(np.sum(np.exp(z), axis=1)) - z[np.arange(len(labels)), labels]


def top1(run, images: np.ndarray, labels: np.ndarray, batch: int = 1) -> float:
    """Top-1 in percent of ``run(batch) -> logits`` over the images (see ``accuracy``)."""
    return accuracy(run, images, labels, batch)[0]


def sqnr_db(test: np.ndarray, reference: np.ndarray) -> float:
    """Signal to quantization noise of ``test`` against ``reference`` in dB (float64 sums;
    inf when they are equal)."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((np.asarray(test, np.float64) - reference) ** 2))
    return energy_ratio_db(float(np.sum(reference**2)), noise)


def energy_ratio_db(signal: float, noise: float) -> float:
    """``signal`` over ``noise`` energy in dB (inf without noise): the SQNR of summed
    squares, for callers that accumulate them."""
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-300) / noise))


def interleaved(runners: dict, x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of each runner ``run(x)``, all called in turn once per round."""
    return {name: wall for name, (wall, _) in interleaved_cpu(runners, x, runs, warmup).items()}


def interleaved_cpu(runners: dict, x: np.ndarray, runs: int,
                    warmup: int = 3) -> dict[str, tuple[float, float]]:  # fmt: skip
    """(median wall seconds, median process CPU seconds) of each runner ``run(x)``, all
    called in turn once per round. On a shared machine the CPU time of a one-thread run
    counts only this process's work, so its ratios move less than wall-time ones."""
    for _ in range(warmup):
        for run in runners.values():
            run(x)
    walls: dict[str, list[float]] = {name: [] for name in runners}
    cpus: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start, cpu = time.perf_counter(), time.process_time()
            run(x)
            cpus[name].append(time.process_time() - cpu)
            walls[name].append(time.perf_counter() - start)
    return {name: (float(np.median(walls[name])), float(np.median(cpus[name]))) for name in runners}
