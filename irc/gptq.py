"""Error-compensating weight rounding (GPTQ / OBQ): choose each layer's integer levels so
that its *output* error on the calibration inputs stays small, without retraining.

For a layer y = W·x (a conv's x is its input patch), the output error of rounded weights
is (W_q − W)·X, whose squared norm is (W_q − W) H (W_q − W)ᵀ with H = Σ x xᵀ over the
calibration inputs. GPTQ rounds one input column at a time, nearest level on the fixed
per-channel grid (``irc.quant``'s scales), and spreads that column's error over the
columns not yet rounded in proportion to H⁻¹ (its upper Cholesky factor), so later
roundings compensate. ``gptq_levels`` computes the same levels in the equivalent
nearest-plane form: each column's target is its weight plus the errors of the columns
rounded before it, weighted by one Cholesky factor of H itself (no inverse), in float32
passes over column-contiguous rows (the classifier's 11,000 candidate rows in 2 s). The
levels stay on the layer's grid ([-127, 127], [-8, 7], {-3, -1, 1, 3}), so kernels,
packing and the bit-exact guarantees are unchanged.

    >>> statistics = layer_hessians(graph, inputs)   # irc.run_statistics: name → InputStatistics
    >>> h = statistics[name].hessian                 # [G, K, K]
    >>> levels = gptq_levels(w, scales, bits, h, group=1)
    >>> levels, scales = gptq_rounding(w, bits, h, group=1)
    >>> levels, scales, damping = round_layer(w, bits, statistics[name], group=1)

``gptq_rounding`` also chooses each output channel's scale by that output error: GPTQ
runs at several multiples of the weight-error clipping scale at once (one pass, the
candidates as extra rows), nearest rounding at that scale is one more candidate, and each
channel keeps the candidate with the least (W_q − W) H (W_q − W)ᵀ. The weight-error clip
is not the output-error one: on MobileNetV2 the choice lowers the layers' output error by
0.6 dB on average at INT4 and by 0.2–5 dB at INT2 (INT2's four levels gain most).

``round_layer`` (what the quantize pass runs) also chooses the damping added to H, by
output error on held-out inputs: H is also kept for each half of the inputs, GPTQ fitted
on one half is judged on the other. A few hundred images overfit the wide late layers:
on MobileNetV2's classifier (one 1280-wide input per image) damping 1.0 instead of 0.01
lowers the held-out INT2 output error by 1.2 dB, while early layers keep 0.01.

A gemm after a global average pool (the classifier) sees one input vector per image, so
H from a few hundred images is a poor estimate of the statistics it will meet (rank 224
for MobileNetV2's 1280 inputs). ``layer_hessians`` also keeps, for such a layer, the
statistics of the pool's input, one vector per position (7·7 per image), and
``round_layer`` mixes them into H (``InputStatistics.shrunk``), how much chosen with the
damping on the held-out half. On MobileNetV2's classifier the per-position statistics
alone are chosen, and they lower the held-out output error by 17% at INT2 and 37% at INT4.

Bias correction (``passes/quantize.py``) then takes the mean output error (W_q − W)·μ away,
so what is left is (W_q − W) C (W_q − W)ᵀ with C the input's covariance about its per-channel
mean μ. ``layer_hessians`` keeps each layer's first moments (``input_moments``), and the
quantize pass rounds a layer with no fused activation on ``InputStatistics.centered``: on
MobileNetV2 its projections (after a ReLU6: inputs with a large mean) lose 5–15% of their
INT4 output error. Behind a ReLU6 the output error counts only where the output is not
clamped, where the input's mean is another; centered there, MobileNetV2's depthwise layers
lost up to 60% at INT2, so those keep H.

An input that is zero on every statistics image (a ReLU channel that rarely opens: 8 of
the 1152 inputs of EfficientNet-Lite0's block-14 projection on 224 images) leaves H silent
on its weights. They keep their nearest level and feed no error to the others; zeroing
them (what GPTQ's reference does) cost that layer 0.006 output NSR at INT8 on the 32
sensitivity images, where one such channel opens, against 0.00004 by nearest rounding.
Per layer, on 256 val images, GPTQ's output error is then below nearest rounding's on
every EfficientNet-Lite0 layer (median ratio 0.62 at INT4 and INT2, worst 0.91 and 0.94).

Grouped and depthwise convolutions have one H per group (a depthwise 3×3 layer: C
matrices of 9×9). Gathering them from a running model is ``irc.run_statistics``'s; this
module only turns weights and statistics into levels, and depends on ``irc.quant`` alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from irc import quant
from irc.gptq_columns import round_batch

DAMPING = 0.01  # of the mean diagonal, added to H (as GPTQ does) so it inverts
BLOCK = 64  # columns per lazy batch of error feedback
# least diagonal of a centered H, as a fraction of the uncentered one (float cancellation)
CENTERED_FLOOR = 1e-6


@dataclass(frozen=True)
class InputMoments:
    """What centers a layer's statistics: per image, the sum of its input vectors
    (``patch_sum`` [G, K]) and their number (``positions``), and the input's mean per
    channel laid out like a weight row (``channel_mean`` [G, K]: what bias correction
    takes the rounding's mean error with)."""

    patch_sum: np.ndarray
    positions: int
    channel_mean: np.ndarray

    def center(self, h: np.ndarray) -> np.ndarray:
        """Mean Σ (x − μ)(x − μ)ᵀ from H = mean Σ x xᵀ (per image, sums over positions)."""
        s, mu = self.patch_sum, self.channel_mean
        cross = s[:, :, None] * mu[:, None, :]
        square = self.positions * mu[:, :, None] * mu[:, None, :]
        centered = h - cross - cross.transpose(0, 2, 1) + square
        index = np.arange(h.shape[1])  # cancellation must not leave a varying input at 0
        floor = CENTERED_FLOOR * h[:, index, index]
        centered[:, index, index] = np.maximum(centered[:, index, index], floor)
        return centered


class Factors:
    """The act order and error feedback of damped statistics (``prepare``), kept for the
    last ``size`` sets of (H, damping): one layer rounded at several bit widths (the
    sensitivity pass, a search's plans) then factors each H once. Keyed by the arrays'
    identity; each entry keeps its arrays alive, so an identity is never reused while it
    is a key."""

    def __init__(self, size: int = 8):
        self.size = size
        self._entries: OrderedDict = OrderedDict()

    def get(self, hessians, dampings, make):
        """``make()``'s (order, feedback) for these ``hessians`` and ``dampings``, made
        once while kept."""
        key = tuple((id(h), float(d)) for h, d in zip(hessians, dampings))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[1]
        value = make()
        self._entries[key] = (list(hessians), value)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


def gptq_levels(
    w: np.ndarray, scales, bits: int, hessian: np.ndarray, group: int = 1,
    damping=DAMPING, problems: int = 1, prepared=None,
) -> np.ndarray:  # fmt: skip
    """Integer levels of ``w`` ([O, ...], output channels first) on the per-channel grid
    ``scales``, rounded column by column with GPTQ's error feedback under ``hessian``
    ([G, K, K], K = the weight's elements per output channel and group), ``damping``
    times its mean diagonal added to the diagonal (a number, or one per group [G, 1]).
    ``problems`` > 1: the groups are that many independent problems of G / problems groups
    each, rounded in one pass (``gptq_levels_many``). ``prepared``: ``prepare``'s result
    for this hessian and damping, when the caller has it."""
    out = w.shape[0]
    flat = w.reshape(out, -1).astype(np.float64)
    k = flat.shape[1]
    if hessian.shape != (group, k, k):
        raise ValueError(f"hessian has shape {hessian.shape}, expected {(group, k, k)}")
    work = flat.reshape(group, out // group, k).copy()
    s = np.asarray(scales, np.float64).reshape(group, out // group)
    order, feedback = prepared if prepared is not None else prepare(hessian, damping, problems)
    # columns contiguous: [G, K, R] (R = O/G rows), in float32 for the matrix products
    target = np.ascontiguousarray(
        np.take_along_axis(work, order[:, None, :], axis=2).transpose(0, 2, 1), np.float32
    )
    row_scale = s.astype(np.float32)[:, None, :]  # [G, 1, R]
    safe = np.where(row_scale > 0, row_scale, np.float32(1.0))
    levels = np.empty(target.shape, np.float32)
    errors = np.empty(target.shape, np.float32)  # w − q·s per column rounded so far
    # lazy batches: a block's targets take the errors of every column before it in one
    # matrix product; within the block, column by column
    grid = quant.weight_levels(bits)
    safe_rows, scale_rows = np.ascontiguousarray(safe[:, 0]), np.ascontiguousarray(row_scale[:, 0])
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        block = target[:, start:end].copy()
        if start:
            block += np.matmul(feedback[:, start:end, :start], errors[:, :start])
        round_batch(block, target, feedback, safe_rows, scale_rows, levels, errors, start,
                    bits, float(grid[0]), float(grid[-1]))  # fmt: skip
    nearest_zero = quant.round_levels(np.zeros(1), bits)[0]  # 0, or 1 on the odd INT2 grid
    levels[np.broadcast_to(row_scale == 0, levels.shape)] = nearest_zero
    ordered = levels.transpose(0, 2, 1)  # [G, R, K] in act order
    unordered = np.empty(ordered.shape, np.int8)
    np.put_along_axis(unordered, order[:, None, :], ordered.astype(np.int8), axis=2)
    return unordered.reshape(w.shape)


def prepare(hessian: np.ndarray, damping=DAMPING, problems: int = 1):
    """(act order [G, K], error feedback [G, K, K] float32) of ``hessian`` [G, K, K] with
    ``damping`` times its mean diagonal added to the diagonal: what ``gptq_levels``
    rounds with, independent of the weights and the bit width."""
    k = hessian.shape[1]
    group = hessian.shape[0]
    h = hessian.astype(np.float64).copy()
    index = np.arange(k)
    diagonal = h[:, index, index].copy()
    # an input that was zero on every statistics image may fire on others (a ReLU channel
    # that rarely opens): H is silent on its weights, which keep their nearest level (a
    # unit diagonal, no coupling, so no feedback reaches or leaves them); zeroing them
    # cost EfficientNet-Lite0's block-14 projection 0.006 output NSR on 32 other images
    dead = diagonal == 0
    diagonal[dead] = 1.0
    h[:, index, index] = diagonal + damping * diagonal.mean(axis=1, keepdims=True)
    # act order: round the columns with the most input energy first (per group), so the
    # error feedback lands on the columns that matter least
    order = np.argsort(-h[:, index, index], axis=1, kind="stable")  # [G, K]
    g_index = np.arange(group)[:, None]
    h = h[g_index[:, :, None], order[:, :, None], order[:, None, :]]
    feedback = _positive_feedback(h, problems)  # [G, K, K] float32, strictly lower
    return order, feedback


def gptq_levels_many(w: np.ndarray, scales, bits: int, hessians, dampings, group: int = 1,
                     factors: Factors | None = None) -> list[np.ndarray]:  # fmt: skip
    """``gptq_levels(w, scales, bits, h, group, d)`` for each pair of ``hessians`` and
    ``dampings``, the same levels, computed as one stacked problem (its column loop run
    once, not once per pair); ``factors`` keeps the stack's preparation."""
    count = len(hessians)
    stacked_h = np.concatenate([np.asarray(h) for h in hessians])  # [count·G, K, K]
    damping = np.repeat(np.asarray(dampings, np.float64), group)[:, None]
    stacked_w = np.concatenate([w] * count)
    stacked_scales = np.concatenate([np.asarray(scales).reshape(-1)] * count)
    prepared = None
    if factors is not None:
        prepared = factors.get(hessians, dampings, lambda: prepare(stacked_h, damping, count))
    levels = gptq_levels(stacked_w, stacked_scales, bits, stacked_h, group * count, damping,
                         problems=count, prepared=prepared)  # fmt: skip
    return list(levels.reshape(count, *w.shape))


def _positive_feedback(h: np.ndarray, problems: int = 1, tries: int = 8) -> np.ndarray:
    """``_feedback`` of ``h``; where ``h`` is not positive definite (statistics of a few
    inputs, centered in floating point, can leave it slightly indefinite), its diagonal is
    raised by ``DAMPING`` times its mean, then ten times that, until it is. With
    ``problems`` > 1, each problem's groups (``gptq_levels``) are raised on their own."""
    if problems > 1:
        try:
            return _feedback(h)
        except np.linalg.LinAlgError:
            size = h.shape[0] // problems
            return np.concatenate([_positive_feedback(h[i * size : (i + 1) * size], 1, tries)
                                   for i in range(problems)])  # fmt: skip
    index = np.arange(h.shape[1])
    mean = h[:, index, index].mean(axis=1, keepdims=True)
    extra = DAMPING
    for _ in range(tries - 1):
        try:
            return _feedback(h)
        except np.linalg.LinAlgError:
            h = h.copy()
            h[:, index, index] += extra * mean
            extra *= 10.0
    return _feedback(h)


def _feedback(h: np.ndarray) -> np.ndarray:
    """F [G, K, K] float32, strictly lower triangular, for H = Bᵀ B with B lower
    triangular: F[l, j] = B[l, j] / B[l, l]. Rounding the columns in order, column l's
    target is its weight plus Σ_{j<l} F[l, j]·(w_j − q_j): the value that minimizes the
    output error given the columns already rounded (Babai's nearest plane, which is GPTQ's
    error feedback without H⁻¹). B comes from one Cholesky factor of H with its order
    reversed. One float32 copy of B, scaled and masked in place."""
    reversed_lower = np.linalg.cholesky(h[:, ::-1, ::-1])  # J H J = L Lᵀ
    lower = np.swapaxes(reversed_lower, 1, 2)[:, ::-1, ::-1]  # B = J Lᵀ J, H = Bᵀ B
    inverse_diagonal = 1.0 / np.diagonal(lower, axis1=1, axis2=2)
    feedback = np.ascontiguousarray(lower, dtype=np.float32)
    feedback *= inverse_diagonal[:, :, None].astype(np.float32)
    feedback *= np.tri(h.shape[1], k=-1, dtype=np.float32)  # the strictly lower part
    return feedback


# multiples of the weight-error clipping scale tried per channel, by bit width: INT2's
# four levels want a scale far from their weight-error optimum (on the odd grid, larger:
# MobileNetV2's classifier picks 1.07–1.4), INT8 barely moves
SCALE_MULTIPLES = {
    8: (0.95, 1.0, 1.05),
    4: tuple(np.round(np.linspace(0.7, 1.15, 10), 3)),
    2: tuple(np.round(np.linspace(0.8, 1.6, 13), 3)),
}


def gptq_rounding(
    w: np.ndarray, bits: int, hessian: np.ndarray, group: int = 1, clipping: str = "mse",
    damping: float = DAMPING, clip_scales: np.ndarray | None = None,
    factors: Factors | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(int8 levels, float32 per-channel scales) of ``w`` that keep its output error
    under ``hessian`` small: GPTQ at each of ``SCALE_MULTIPLES[bits]`` times the
    ``clipping`` scale (``irc.quant.weight_scales``, or ``clip_scales`` when given), and
    nearest rounding at that scale, the least output error kept per output channel. Never
    worse than nearest rounding on the statistics H describes."""
    base = quant.weight_scales(w, bits, clipping) if clip_scales is None else clip_scales
    out = w.shape[0]
    multiples = np.asarray(SCALE_MULTIPLES[bits], np.float64)
    candidates = (base[None, :] * multiples[:, None].astype(np.float32)).astype(np.float32)
    positive = base > 0
    candidates[:, ~positive] = base[~positive]  # a channel of zeros keeps scale 1
    # every candidate's rows side by side within each group: [G, A·O/G] rows of one GPTQ
    per_group = out // group
    rows = np.broadcast_to(w.reshape(1, group, per_group, -1),
                           (len(multiples), group, per_group, w[0].size))  # fmt: skip
    stacked = rows.transpose(1, 0, 2, 3).reshape(group * len(multiples) * per_group, -1)
    stacked_scales = candidates.reshape(len(multiples), group, per_group).transpose(1, 0, 2)
    prepared = None
    if factors is not None:
        prepared = factors.get([hessian], [damping], lambda: prepare(hessian, damping))
    levels = gptq_levels(stacked, stacked_scales.reshape(-1), bits, hessian, group, damping,
                         prepared=prepared)  # fmt: skip
    levels = levels.reshape(group, len(multiples), per_group, -1).transpose(1, 0, 2, 3)
    levels = levels.reshape(len(multiples), out, -1)
    nearest = quant.quantize_weights(w, base, bits).reshape(1, out, -1)
    all_levels = np.concatenate([levels, nearest])  # [A+1, O, K]
    all_scales = np.concatenate([candidates, base[None]])  # [A+1, O]
    errors = output_errors(w, all_levels, all_scales, hessian, group)  # [A+1, O]
    best = np.argmin(errors, axis=0)  # ties: the first (GPTQ at the smallest multiple)
    channel = np.arange(out)
    chosen = all_levels[best, channel].reshape(w.shape).astype(np.int8)
    return chosen, all_scales[best, channel].astype(np.float32)


def output_errors(w, levels, scales, hessian, group: int) -> np.ndarray:
    """(W_q − W) H (W_q − W)ᵀ per candidate and output channel: ``levels`` [A, O, K] at
    ``scales`` [A, O] against ``w`` [O, ...] under ``hessian`` [G, K, K] → [A, O]. The
    errors are formed in float64 and multiplied in float32 (a relative error near 1e-6,
    enough to rank candidates), the sums per channel in float64."""
    a, out, k = levels.shape
    per_group = out // group
    error = levels.astype(np.float64) * scales[:, :, None].astype(np.float64)
    error -= w.reshape(1, out, k).astype(np.float64)
    error = error.reshape(a, group, per_group, k).transpose(1, 0, 2, 3).reshape(group, -1, k)
    error = error.astype(np.float32)
    weighted = np.matmul(error, hessian.astype(np.float32, copy=False))  # [G, A·O/G, K]
    weighted *= error
    energy = weighted.sum(axis=2, dtype=np.float64)
    return energy.reshape(group, a, per_group).transpose(1, 0, 2).reshape(a, out)


# dampings a layer may get, chosen by held-out output error: H from a few hundred inputs
# overfits where a layer sees few input vectors for its width (the 1280-wide classifier
# sees one per image: 224 for 1280 dimensions); heavier damping pulls toward nearest there
DAMPINGS = (0.01, 0.1, 0.3, 1.0)


# weights of the per-position statistics mixed into a pooled layer's H, chosen by held-out
# output error: a gemm after a global average pool sees one input vector per image (224
# for MobileNetV2's 1280-wide classifier), its pool's input 7·7 per image
SPATIAL_MIXES = (0.0, 0.5, 1.0)
# output channels a pooled layer's (damping, mix) grid is judged on: GPTQ rounds each row
# on its own given H, so evenly spaced rows estimate the whole layer's held-out error
CHOICE_ROWS = 256


@dataclass(frozen=True)
class InputStatistics:
    """A layer's input statistics: mean Σ x xᵀ over all inputs ([G, K, K]), and over each
    half of them (alternate batches), from which ``choose_damping`` judges overfitting.

    For a gemm whose input is a global average pool, ``spatial`` (and ``spatial_halves``)
    is the same for the pool's input, one vector per position: mean over images of the
    mean f fᵀ over positions ([1, K, K]). Its shape is learned from many more vectors, and
    ``shrunk`` mixes it into H, as a better estimate of the input statistics the layer
    will meet than H from one vector per image."""

    hessian: np.ndarray
    halves: tuple[np.ndarray, np.ndarray] | None = None
    spatial: np.ndarray | None = None
    spatial_halves: tuple[np.ndarray, np.ndarray] | None = None
    moments: InputMoments | None = None  # of all inputs, for ``centered``
    half_moments: tuple[InputMoments, InputMoments] | None = None

    def centered(self) -> InputStatistics:
        """The same statistics about the input's per-channel mean: mean Σ (x − μ)(x − μ)ᵀ
        (each half about its own mean). With bias correction, which removes the mean
        output error (W_q − W)·μ, this is the output error GPTQ should minimize; for
        inputs after a ReLU, whose mean dominates x xᵀ, uncentered statistics spend the
        rounding on an error the bias then cancels. Unchanged without moments."""
        if self.moments is None:
            return self
        halves = spatial_halves = None
        if self.halves is not None:
            halves = tuple(m.center(h) for m, h in zip(self.half_moments, self.halves))
        spatial = None if self.spatial is None else _minus_mean(self.spatial, self.moments)
        if self.spatial_halves is not None:
            spatial_halves = tuple(_minus_mean(s, m) for s, m in
                                   zip(self.spatial_halves, self.half_moments))  # fmt: skip
        return InputStatistics(self.moments.center(self.hessian), halves, spatial,
                               spatial_halves)  # fmt: skip

    def shrunk(self, mix: float, half: int | None = None) -> np.ndarray:
        """H (of one ``half``, or of all inputs) with ``mix`` of its trace moved to the
        per-position statistics: (1 − mix)·H + mix·(tr H / tr S)·S."""
        h = self.hessian if half is None else self.halves[half]
        if mix == 0.0 or self.spatial is None:
            return h
        s = self.spatial if half is None else self.spatial_halves[half]
        scale = np.trace(h, axis1=1, axis2=2) / np.maximum(np.trace(s, axis1=1, axis2=2), 1e-30)
        return (1.0 - mix) * h + mix * scale[:, None, None] * s


def _minus_mean(spatial: np.ndarray, moments: InputMoments) -> np.ndarray:
    """A pool input's per-position mean f fᵀ about its mean (the pooled value's): − μ μᵀ."""
    mu = moments.channel_mean
    return spatial - mu[:, :, None] * mu[:, None, :]


def choose_damping(w: np.ndarray, bits: int, statistics: InputStatistics, group: int = 1,
                   clipping: str = "mse", clip_scales=None) -> float:  # fmt: skip
    """The one of ``DAMPINGS`` under which GPTQ (at the ``clipping`` scales, or
    ``clip_scales``) fitted on one half of the inputs leaves the least output error on the
    other half (``DAMPING`` without halves)."""
    return choose_statistics(w, bits, statistics, group, clipping, clip_scales)[0]


def choose_statistics(w: np.ndarray, bits: int, statistics: InputStatistics, group: int = 1,
                      clipping: str = "mse", clip_scales=None,
                      factors: Factors | None = None) -> tuple[float, float]:  # fmt: skip
    """(damping, spatial mix) under which GPTQ fitted on one half of the inputs leaves the
    least output error on the other half: the dampings of ``DAMPINGS``, and for a pooled
    layer the ``SPATIAL_MIXES`` of ``InputStatistics.shrunk`` too, judged against the
    held-out half's own H (both ways round for a pooled layer, whose held-out halves are
    small, on ``CHOICE_ROWS`` of its output channels). Without halves: (``DAMPING``, 0)."""
    if statistics.halves is None:
        return DAMPING, 0.0
    scales = quant.weight_scales(w, bits, clipping) if clip_scales is None else clip_scales
    out = w.shape[0]
    pooled = statistics.spatial_halves is not None
    mixes = SPATIAL_MIXES if pooled else (0.0,)
    if pooled and group == 1 and out > CHOICE_ROWS:
        rows = np.linspace(0, out - 1, CHOICE_ROWS).round().astype(int)
        w, scales, out = w[rows], np.asarray(scales)[rows], CHOICE_ROWS
    folds = ((0, 1), (1, 0)) if pooled else ((0, 1),)

    grid = [(d, m) for m in mixes for d in DAMPINGS]
    errors = np.zeros(len(grid))
    for fit, held in folds:  # every (damping, mix) of one fold rounded as one problem
        hessians = [statistics.shrunk(m, fit) for _, m in grid]
        fitted = gptq_levels_many(w, scales, bits, hessians, [d for d, _ in grid], group,
                                  factors if not pooled else None)  # fmt: skip
        for i, levels in enumerate(fitted):
            errors[i] += output_errors(w, levels.reshape(1, out, -1), scales[None],
                                       statistics.halves[held], group).sum()  # fmt: skip
    return grid[int(np.argmin(errors))]


def round_layer(w: np.ndarray, bits: int, statistics, group: int = 1, clipping: str = "mse",
                clip_scales=None, factors: Factors | None = None):  # fmt: skip
    """(levels, scales, damping) of ``gptq_rounding`` with the damping (and, for a pooled
    layer, the mix of per-position statistics) ``choose_statistics`` picks; ``statistics``
    is an ``InputStatistics`` or a bare [G, K, K] mean Σ x xᵀ; ``clip_scales``: the
    ``clipping`` scales when the caller has them already; ``factors``: a ``Factors`` kept
    across the roundings of one layer at several bit widths."""
    if not isinstance(statistics, InputStatistics):
        statistics = InputStatistics(np.asarray(statistics))
    if clip_scales is None:
        clip_scales = quant.weight_scales(w, bits, clipping)
    damping, mix = choose_statistics(w, bits, statistics, group, clipping, clip_scales,
                                     factors)  # fmt: skip
    shrunk = statistics.shrunk(mix)
    levels, scales = gptq_rounding(w, bits, shrunk, group, clipping, damping, clip_scales,
                                   factors if shrunk is statistics.hessian else None)  # fmt: skip
    return levels, scales, damping


# ---------------------------------------------------------------------- serialisation
def statistics_arrays(statistics: InputStatistics) -> tuple[dict, dict[str, np.ndarray]]:
    """``statistics`` as (JSON-ready facts, named arrays), read back by
    ``statistics_from_arrays`` (no pickling: plain numeric arrays)."""
    arrays = {"hessian": statistics.hessian}
    for name in ("halves", "spatial_halves"):
        pair = getattr(statistics, name)
        if pair is not None:
            arrays[f"{name}0"], arrays[f"{name}1"] = pair
    if statistics.spatial is not None:
        arrays["spatial"] = statistics.spatial
    positions = {}
    moments = [("moments", statistics.moments)]
    if statistics.half_moments is not None:
        moments += [(f"half_moments{i}", m) for i, m in enumerate(statistics.half_moments)]
    for name, m in moments:
        if m is not None:
            arrays[f"{name}_sum"], arrays[f"{name}_mean"] = m.patch_sum, m.channel_mean
            positions[name] = int(m.positions)
    return {"positions": positions}, arrays


def statistics_from_arrays(facts: dict, arrays: dict[str, np.ndarray]) -> InputStatistics:
    """The ``InputStatistics`` ``statistics_arrays`` described (KeyError on a bad state)."""

    def pair(name):
        return (arrays[f"{name}0"], arrays[f"{name}1"]) if f"{name}0" in arrays else None

    def moments(name):
        if name not in facts["positions"]:
            return None
        return InputMoments(arrays[f"{name}_sum"], int(facts["positions"][name]),
                            arrays[f"{name}_mean"])  # fmt: skip

    halves = None
    if "half_moments0" in facts["positions"]:
        halves = (moments("half_moments0"), moments("half_moments1"))
    return InputStatistics(arrays["hessian"], pair("halves"), arrays.get("spatial"),
                           pair("spatial_halves"), moments("moments"), halves)  # fmt: skip
