"""The held-out images of a strategy compile (``irc.decision.holdout``): the split leaves no
image on both sides and spreads over a class-sorted folder, the paired drop and its interval
match a hand count, and a drop budget is verified on images the calibration never read."""

from __future__ import annotations

import numpy as np
import pytest
from image_folders import PRE, labelled_folder
from onnx_builders import small_convnet

import irc
from irc.calibration import image_set, split_images
from irc.decision import Budgets
from irc.decision.choose import Verification, _missed, _warn_about_drop, drop_over
from irc.decision.holdout import HeldOut, paired_drop
from irc.errors import InputError


def test_the_split_is_disjoint_complete_and_spread_over_the_classes(tmp_path):
    folder = labelled_folder(tmp_path / "imgs", 12)
    rest, held = split_images(folder, 6)
    assert len(rest) == len(held) == 6
    assert not set(rest.names) & set(held.names)
    assert sorted(rest.names + held.names) == sorted(image_set(folder).names)
    assert set(held.labels) == {0, 1, 2} and set(rest.labels) == {0, 1, 2}
    assert held.names[0] == "c0_000.png" and held.names[-1] == "c2_011.png"
    whole = dict(zip(image_set(folder).names, image_set(folder).labels))
    assert all(whole[n] == y for n, y in zip(held.names, held.labels))


@pytest.mark.parametrize("count", [0, 12, -1, True])
def test_a_split_that_leaves_a_side_empty_is_refused(tmp_path, count):
    folder = labelled_folder(tmp_path / "imgs", 12)
    with pytest.raises(InputError, match="holdout: cannot hold out"):
        split_images(folder, count)


def test_the_paired_drop_and_its_interval_match_a_hand_count():
    reference = np.array([1, 1, 1, 0, 1, 1], bool)
    test = np.array([1, 0, 1, 1, 0, 1], bool)
    drop, margin = paired_drop(reference, test)
    # differences 0, 1, 0, -1, 1, 0: mean 1/6, variance (3/6 - 1/36) * 6/5
    assert drop == pytest.approx(100 / 6)
    assert margin == pytest.approx(100 * 1.959964 * np.sqrt((0.5 - 1 / 36) * 6 / 5 / 6))
    assert paired_drop(reference, reference) == (0.0, 0.0)


def _compile(folder, **settings):
    return irc.compile(small_convnet(), calibration=str(folder), preprocess=PRE,
                       strategy="auto", budgets=Budgets(max_drop=100.0), sensitivity_limit=4,
                       num_threads=1, progress=False, stage_cache=False,
                       **settings)  # fmt: skip


def test_a_drop_budget_is_checked_on_images_the_calibration_never_read(tmp_path):
    folder = labelled_folder(tmp_path / "imgs", 16)
    model = _compile(folder)
    v = model.choice.verification
    assert v.top1_images == 8 and v.top1_apart is True and v.drop_margin is not None
    assert model.calibration.count == 8  # the other half
    assert "held-out images" in model.choice.verification.drop_text()


def test_holdout_counts_zero_and_folders(tmp_path):
    folder = labelled_folder(tmp_path / "imgs", 16)
    other = labelled_folder(tmp_path / "other", 5)
    four = _compile(folder, holdout=4).choice.verification
    assert (four.top1_images, four.top1_apart) == (4, True)
    none = _compile(folder, holdout=0)
    assert none.choice.verification.top1_images == 16 and not none.choice.verification.top1_apart
    assert none.calibration.count == 16
    elsewhere = _compile(folder, holdout=str(other))
    assert elsewhere.choice.verification.top1_images == 5 and elsewhere.calibration.count == 16


def test_a_count_without_a_labelled_folder_is_refused():
    data = np.zeros((8, 3, 16, 16), np.float32)
    with pytest.raises(InputError, match="labelled calibration folder"):
        irc.compile(small_convnet(), calibration=data, strategy="auto",
                    budgets=Budgets(max_drop=1.0), holdout=4, labels=np.zeros(8, int),
                    progress=False, stage_cache=False)  # fmt: skip


@pytest.mark.parametrize("margin, over", [(2.16, False), (0.3, True), (None, True)])
def test_a_drop_is_over_its_budget_only_beyond_its_interval(margin, over):
    v = Verification(bytes=1, latency=0.001, output_sqnr=20.0, top1=80.0, float_top1=81.56,
                     drop_margin=margin, top1_images=128, top1_apart=True)  # fmt: skip
    assert drop_over(Budgets(max_drop=1.0), v) is over
    assert bool(_missed(Budgets(max_drop=1.0), v)) is over


def test_a_drop_accepted_within_its_interval_is_warned_about():
    v = Verification(bytes=1, latency=0.001, output_sqnr=20.0, top1=80.0, float_top1=81.56,
                     drop_margin=2.16, top1_images=128, top1_apart=True)  # fmt: skip
    with pytest.warns(UserWarning) as caught:
        _warn_about_drop(Budgets(max_drop=1.0), v)
    texts = [str(w.message) for w in caught]
    assert any("within its 95% interval" in t for t in texts)
    assert any("too few to check a 1-point budget" in t for t in texts)


def test_held_out_images_past_the_last_full_batch_are_scored():
    """A model of static batch 4 on 6 held-out images: the last 2 go in a padded batch
    and are scored like the rest (labels: the reference interpreter's top-1 classes)."""
    images = np.random.default_rng(7).normal(size=(6, 3, 16, 16)).astype(np.float32)
    model = irc.compile(small_convnet(), input_shapes={"x": (4, 3, 16, 16)}, num_threads=1,
                        progress=False)  # fmt: skip
    graph = irc.import_onnx(small_convnet(), input_shapes={"x": (1, 3, 16, 16)})
    labels = np.array([np.argmax(irc.run(graph, [x[None]])[0]) for x in images])
    hits, losses = HeldOut(images, labels, "six images").score(model)
    assert hits.shape == (6,) and hits.all()
    assert losses.shape == (6,) and np.all(losses >= 0)
