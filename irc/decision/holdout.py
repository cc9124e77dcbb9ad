"""The labelled images a strategy compile scores top-1 on, apart from all it fits.

A top-1 drop budget (and the ``search`` strategy) needs labelled images that neither the
calibration ranges, the GPTQ rounding statistics nor the sensitivity sample saw, or the
check grades the plan on what it was fitted to. ``holdout`` (``CompileOptions.holdout``,
``--holdout``) says which:

- ``None`` (default): when the calibration data is a labelled folder and top-1 is needed,
  half its images, spread over the folder (``split_images``), are held out; the compile
  fits on the other half;
- ``N``: hold out ``N`` images of the calibration folder the same way;
- a folder (or ``ImageSet``) with a ``labels.txt``: score on it, fit on all the
  calibration data;
- ``0``: hold nothing out; top-1 is scored on the calibration images themselves.

A drop is a paired difference (the same images through FP32 and through the plan), so its
95% interval comes from the images on which the two disagree (``paired_drop``).

    >>> fitted, held_out = holdout_split(options)       # options.calibration: a folder
    >>> hits = held_out.correct(model)                  # bool per image
    >>> drop, margin = paired_drop(float_hits, hits)     # points, ± 95% half-width
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from irc.calibration import image_set, is_labelled, load_labelled_folder, split_images
from irc.calibration.data import fit_preprocess
from irc.calibration.images import ImageSet, is_image_source
from irc.errors import InputError
from irc.measure import batch_logits, cross_entropy

HOLDOUT_SHARE = 0.5  # of a labelled calibration folder, when holdout is None
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


@dataclass
class HeldOut:
    """Labelled images to score compiled models on: ``images`` [N, ...], ``labels`` [N],
    ``source`` (what they are, for reports) and ``apart`` (False when the compile also fitted
    on them)."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    apart: bool = True

    def __len__(self) -> int:
        return len(self.labels)

    def score(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(per image whether ``model``'s top-1 class is its label, bool [N]; per image the
        cross-entropy at its label, [N]) of a compiled model (its first output)."""
        batch = model.graph.inputs[0].type.shape[0]
        logits = batch_logits(lambda x: model(x)[0], self.images, batch)
        return np.argmax(logits, axis=1) == self.labels, cross_entropy(logits, self.labels)

    def correct(self, model) -> np.ndarray:
        """Per image, whether ``model``'s top-1 class is its label (bool [N])."""
        return self.score(model)[0]


def paired_drop(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(top-1 points lost by ``test`` against ``reference``, the 95% half-width of that
    drop), both per-image hit arrays over the same images: the normal interval of the mean
    of the per-image differences (+1 where only the reference is right, -1 where only the
    test is)."""
    differences = reference.astype(np.float64) - test.astype(np.float64)
    n = len(differences)
    if n == 0:
        raise InputError("a top-1 drop needs at least one labelled image")
    drop = float(differences.mean())
    spread = float(np.sqrt(max(np.mean(differences**2) - drop**2, 0.0) / max(n - 1, 1)))
    return 100.0 * drop, 100.0 * Z95 * spread


def needs_top1(options) -> bool:
    """Whether the compile scores top-1: a drop budget, or the ``search`` strategy."""
    budgets = options.budgets
    return options.strategy == "search" or (budgets is not None and budgets.max_drop is not None)


def holdout_split(graph, options):
    """(``options`` with ``calibration`` the images to fit on, the ``HeldOut`` to score on or
    None); see the module docstring. Only a compile that scores top-1 without an
    ``evaluate`` function holds images out; images are preprocessed for float ``graph``."""
    holdout, data = options.holdout, options.calibration
    if not needs_top1(options) or options.evaluate is not None:
        return options, None
    if holdout is not None and not isinstance(holdout, int) and is_image_source(holdout):
        return options, load_held_out(holdout, graph, options, apart=True)
    if not is_image_source(data) or not is_labelled(data):
        if options.strategy == "search":
            raise InputError(
                "strategy 'search' scores plans on labelled images: give a calibration "
                "folder with labels.txt, or holdout=a labelled folder"
            )
        if holdout not in (None, 0):
            raise InputError(
                "holdout: a number of held-out images needs a labelled calibration folder "
                "(labels.txt); give a labelled folder to hold out instead"
            )
        return options, None
    if isinstance(holdout, bool) or not (holdout is None or isinstance(holdout, int)):
        raise InputError(
            f"holdout must be a number of images, a labelled folder or None; got {holdout!r}"
        )
    whole = image_set(data)
    if holdout == 0:
        return options, load_held_out(whole, graph, options, apart=False,
                                      limit=options.calibration_limit)  # fmt: skip
    count = holdout if holdout is not None else _default_count(whole)
    fitted, held = split_images(whole, count)
    return options.replace(calibration=fitted), load_held_out(held, graph, options, apart=True)


def _default_count(whole: ImageSet) -> int:
    if len(whole) < 2:
        raise InputError(
            f"holdout: the calibration folder {os.fspath(whole.folder)!r} has {len(whole)} "
            "labelled image; a top-1 check needs images to fit on and images to score on"
        )
    return max(1, int(len(whole) * HOLDOUT_SHARE))


def load_held_out(source, graph, options, *, apart: bool, limit: int | None = None) -> HeldOut:
    """The labelled images of ``source`` (a folder or ``ImageSet``), preprocessed for
    ``graph`` as the calibration data is."""
    if not is_labelled(source):
        raise InputError(f"holdout: {str(source)!r} has no labels.txt")
    preprocess = fit_preprocess(graph, options.preprocess)
    xs, ys = zip(*load_labelled_folder(source, preprocess, limit=limit))
    return HeldOut(np.concatenate(xs), np.concatenate(ys), str(source), apart)
