"""GPTQ rounding (``irc.gptq``; statistics from ``irc.run_statistics``): on the calibration
inputs, a layer's output error after GPTQ is below nearest rounding's, its levels stay on
the grid, and they pack exactly."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_builders import small_convnet

import irc
from irc import gptq, quant
from irc.gptq import (
    DAMPING,
    DAMPINGS,
    SCALE_MULTIPLES,
    SPATIAL_MIXES,
    Factors,
    InputMoments,
    InputStatistics,
    choose_damping,
    choose_statistics,
    gptq_levels,
    gptq_levels_many,
    gptq_rounding,
    output_errors,
    round_layer,
)
from irc.interpreter import run_graph
from irc.pass_manager import PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import layer_name
from irc.run_statistics import conv_patches, input_gram, layer_hessians, spatial_gram


class _Op:
    """The parts of a conv2d op that ``input_gram`` reads."""

    def __init__(self, weight_shape, group):
        self.kind = "conv2d"
        self.attrs = {"pads": (1, 1, 1, 1), "strides": (1, 1), "dilations": (1, 1),
                      "group": group}  # fmt: skip

        class _T:
            shape = weight_shape

        class _V:
            type = _T

        self.operands = [None, _V]


def output_error(w, levels, scales, patches, group):
    """Σ ‖(W_q − W)·x‖² over every patch, per group."""
    out = w.shape[0]
    dq = levels.astype(np.float64) * scales.reshape(-1, 1, 1, 1)
    diff = (dq - w).reshape(group, out // group, -1)
    n, c, k = patches.shape
    x = patches.reshape(n, group, (c // group) * k)
    return float(sum(np.sum((x[:, g] @ diff[g].T) ** 2) for g in range(group)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("group", [1, 6])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_gptq_output_error_is_below_nearest(bits, group, seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(32, 6, 1, 1))
    x = (base + 0.5 * rng.normal(size=(32, 6, 7, 7))).astype(np.float32)  # correlated
    w = rng.normal(size=(12, 6 // group, 3, 3)).astype(np.float32)
    op = _Op(w.shape, group)
    hessian = input_gram(op, x)
    scales = quant.weight_scales(w, bits, "mse")
    nearest = quant.quantize_weights(w, scales, bits)
    rounded = gptq_levels(w, scales, bits, hessian, group)
    assert rounded.dtype == np.int8
    assert np.isin(rounded, quant.weight_levels(bits)).all()  # on the grid (odd at INT2)
    patches = conv_patches(x, op.attrs, (3, 3))
    assert output_error(w, rounded, scales, patches, group) < output_error(
        w, nearest, scales, patches, group
    )
    flat = rounded.reshape(12, -1)
    if bits < 8:  # 4- and 2-bit levels are stored packed: they must decode exactly
        assert np.array_equal(quant.unpack(quant.pack(flat, bits), bits, flat.shape), flat)


def test_patches_match_a_direct_convolution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 5))
    w = rng.normal(size=(3, 4, 3, 3))
    patches = conv_patches(x, {"pads": (1, 1, 1, 1), "strides": (2, 2), "dilations": (1, 1)},
                           (3, 3))  # fmt: skip
    y = patches.reshape(len(patches), -1) @ w.reshape(3, -1).T  # [B·OH·OW, O]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.array(
        [
            [
                [np.sum(padded[b, :, i : i + 3, j : j + 3] * w[o]) for o in range(3)]
                for j in range(0, 5, 2)
            ]
            for b in range(2)
            for i in range(0, 5, 2)
        ]
    )
    assert np.allclose(y, want.reshape(-1, 3))


def test_compile_with_gptq_rounds_every_layer_and_runs_bit_exact():

    data = np.random.default_rng(2).normal(size=(16, 3, 16, 16)).astype(np.float32)
    model = irc.compile(small_convnet(), precision="int4", calibration=data, rounding="gptq",
                        progress=False)  # fmt: skip
    assert dict(model.stats)["quantize"]["gptq"] == 4
    (y,) = model(data[:1])
    assert np.array_equal(y, irc.run(model.graph, [data[:1]])[0])  # Numba = reference
    with pytest.raises(irc.InputError, match="rounding"):
        irc.compile(small_convnet(), precision="int4", calibration=data, rounding="floor")


def test_a_calibration_with_statistics_rounds_as_asked():

    data = np.random.default_rng(2).normal(size=(16, 3, 16, 16)).astype(np.float32)
    graph = irc.import_onnx(small_convnet())
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    calibration = irc.calibrate(graph, data, "minmax")
    plain = irc.compile(graph, precision="int4", calibration=calibration, progress=False)
    calibration = calibration.with_statistics(layer_hessians(graph, data, progress=False))
    models = {r: irc.compile(graph, precision="int4", calibration=calibration, rounding=r,
                             progress=False) for r in ("nearest", "gptq")}  # fmt: skip
    assert dict(models["nearest"].stats)["quantize"].get("gptq", 0) == 0
    assert dict(models["gptq"].stats)["quantize"]["gptq"] == 4
    x = data[:1]
    assert np.array_equal(models["nearest"](x)[0], plain(x)[0])  # nearest means nearest
    assert not np.array_equal(models["gptq"](x)[0], plain(x)[0])
    assert calibration.hessians is not None  # the caller's calibration is untouched


@pytest.mark.parametrize("kernel, group, pads", [((3, 3), 1, 1), ((3, 3), 6, 1), ((1, 1), 1, 0),
                                                 ((1, 1), 2, 0)])  # fmt: skip
def test_input_gram_equals_the_float64_sum_over_patches(kernel, group, pads):
    x = np.random.default_rng(1).normal(size=(3, 6, 5, 5)).astype(np.float32)
    op = _Op((12, 6 // group, *kernel), group)
    op.attrs["pads"] = (pads,) * 4
    patches = conv_patches(x.astype(np.float64), op.attrs, kernel)  # [n, C, k]
    n, c, k = patches.shape
    cols = patches.reshape(n, group, (c // group) * k)
    want = np.stack([cols[:, g].T @ cols[:, g] for g in range(group)])
    got = input_gram(op, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def _gram_over_patches(x, op, kernel, group):
    """The float64 Σ x xᵀ per group over every patch."""
    patches = conv_patches(x.astype(np.float64), op.attrs, kernel)  # [B·OH·OW, C, k]
    c, k = patches.shape[1:]
    flat = patches.reshape(len(patches), group, (c // group) * k)
    return np.stack([flat[:, g].T @ flat[:, g] for g in range(group)])


@pytest.mark.parametrize("group", [1, 2, 6])  # 6: depthwise (the Numba kernel)
@pytest.mark.parametrize("strides, dilations", [((1, 1), (1, 1)), ((2, 2), (1, 1)),
                                                ((1, 1), (2, 2))])  # fmt: skip
def test_input_gram_reads_strides_and_dilations_like_the_patches(group, strides, dilations):
    x = np.random.default_rng(2).normal(size=(2, 6, 9, 9)).astype(np.float32)
    op = _Op((12, 6 // group, 3, 3), group)
    op.attrs.update(strides=strides, dilations=dilations, pads=(1, 2, 2, 1))
    want = _gram_over_patches(x, op, (3, 3), group)
    np.testing.assert_allclose(input_gram(op, x), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("group", [1, 6])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_scale_search_is_never_worse_than_gptq_or_nearest_at_the_clipping_scale(bits, group, seed):
    rng = np.random.default_rng(10 + seed)
    base = rng.normal(size=(32, 6, 1, 1))
    x = (base + 0.5 * rng.normal(size=(32, 6, 7, 7))).astype(np.float32)
    w = (rng.standard_t(4, size=(12, 6 // group, 3, 3)) * 0.1).astype(np.float32)  # tails
    op = _Op(w.shape, group)
    hessian = input_gram(op, x)
    patches = conv_patches(x, op.attrs, (3, 3))
    clip = quant.weight_scales(w, bits, "mse")
    levels, scales = gptq_rounding(w, bits, hessian, group)
    assert levels.dtype == np.int8 and levels.shape == w.shape and scales.dtype == np.float32
    assert np.isin(levels, quant.weight_levels(bits)).all()
    if bits < 8:  # the full two's complement range is used
        assert levels.min() == quant.weight_qmin(bits)
    chosen = output_error(w, levels, scales, patches, group)
    plain = output_error(w, gptq_levels(w, clip, bits, hessian, group), clip, patches, group)
    nearest = output_error(w, quant.quantize_weights(w, clip, bits), clip, patches, group)
    assert chosen <= plain * (1 + 1e-9) and chosen <= nearest * (1 + 1e-9)
    if bits == 2:  # four levels: the weight-error clip is far from the output-error one
        assert chosen < 0.95 * plain
    ratio = scales.astype(np.float64) / clip  # each scale one of the tried multiples
    assert np.all(np.min(np.abs(ratio[:, None] - SCALE_MULTIPLES[bits]), axis=1) < 1e-6)
    flat = levels.reshape(12, -1)
    if bits < 8:
        assert np.array_equal(quant.unpack(quant.pack(flat, bits), bits, flat.shape), flat)


def test_output_errors_equal_the_direct_sum():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 5, 5)).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    op = _Op(w.shape, 2)
    hessian = input_gram(op, x)
    patches = conv_patches(x, op.attrs, (3, 3))
    scales = quant.weight_scales(w, 4, "mse")
    levels = quant.quantize_weights(w, scales, 4)
    got = output_errors(w, levels.reshape(1, 4, -1), scales[None], hessian, 2)
    for o in range(4):  # output channel o reads its group's 3 input channels
        inputs = patches[:, 3 * (o // 2) : 3 * (o // 2) + 3]
        want = output_error(w[[o]], levels[[o]], scales[[o]], inputs, 1)
        np.testing.assert_allclose(got[0, o], want, rtol=1e-5)  # float32 products


def _gemm_gram(x):
    return (x.T.astype(np.float64) @ x)[None]


def test_held_out_damping_beats_the_default_where_few_inputs_overfit():
    rng = np.random.default_rng(7)
    k, mix = 256, rng.normal(size=(256, 256)) / 16  # correlated inputs, 256 wide
    draw = lambda n: (rng.normal(size=(n, k)) @ mix).astype(np.float32)  # noqa: E731
    w = rng.normal(size=(64, k)).astype(np.float32)
    fit, held, fresh = draw(24), draw(24), draw(4000)  # 48 inputs for 256 dimensions
    statistics = InputStatistics(_gemm_gram(np.concatenate([fit, held])) / 48,
                                 (_gemm_gram(fit) / 24, _gemm_gram(held) / 24))  # fmt: skip
    damping = choose_damping(w, 4, statistics)
    assert damping in DAMPINGS and damping > DAMPING
    levels, scales, chosen = round_layer(w, 4, statistics)
    assert chosen == damping
    plain, plain_scales = gptq_rounding(w, 4, statistics.hessian, damping=DAMPING)
    h = _gemm_gram(fresh) / len(fresh)
    err = output_errors(w, levels.reshape(1, 64, k), scales[None], h, 1).sum()
    err_plain = output_errors(w, plain.reshape(1, 64, k), plain_scales[None], h, 1).sum()
    assert err < 0.9 * err_plain  # on inputs neither saw


def test_layer_hessians_halves_average_to_the_whole():

    graph = irc.import_onnx(small_convnet())
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    data = np.random.default_rng(4).normal(size=(20, 3, 16, 16)).astype(np.float32)
    statistics = layer_hessians(graph, data, batch_size=8, progress=False)  # 3 batches
    assert len(statistics) == 4
    for s in statistics.values():
        even, odd = s.halves  # batches 0 and 2 (12 inputs), batch 1 (8 inputs)
        np.testing.assert_allclose((12 * even + 8 * odd) / 20, s.hessian, rtol=1e-6)
        assert not np.allclose(even, odd)
    one = layer_hessians(graph, data[:5], batch_size=8, progress=False)  # one batch
    assert all(s.halves is None for s in one.values())


def test_layer_hessians_keep_the_pool_inputs_per_position_statistics():

    graph = irc.import_onnx(small_convnet())
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    data = np.random.default_rng(5).normal(size=(20, 3, 16, 16)).astype(np.float32)
    statistics = layer_hessians(graph, data, batch_size=8, progress=False)
    pooled = {k for k, s in statistics.items() if s.spatial is not None}
    assert pooled == {"fc"}  # the gemm after GlobalAveragePool → Flatten, no conv
    fc = statistics["fc"]
    pool = next(op for op in graph.ops if op.kind == "global_avg_pool")
    seen = {}  # the pool's input in the reference interpreter: [20, 32, 8, 8]

    def observe(op, args, results):
        if op is pool:
            seen["features"] = args[0]

    run_graph(graph, [data], observers=[observe])
    features = seen["features"]
    f = features.astype(np.float64).transpose(0, 2, 3, 1).reshape(20, 64, 32)
    want = np.einsum("bpi,bpj->ij", f, f) / (20 * 64)
    np.testing.assert_allclose(fc.spatial[0], want, rtol=1e-5, atol=1e-9)
    pooled_x = f.mean(axis=1)
    np.testing.assert_allclose(fc.hessian[0], pooled_x.T @ pooled_x / 20, rtol=1e-5, atol=1e-9)
    even, odd = fc.spatial_halves
    np.testing.assert_allclose((12 * even + 8 * odd) / 20, fc.spatial, rtol=1e-6)


def test_shrunk_mixes_in_the_spatial_statistics_at_hs_trace():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2, 50, 6))
    h, s = (a.T @ a)[None], 3.0 * (b.T @ b)[None]
    stats = InputStatistics(h, (h, h), s, (s, s))
    np.testing.assert_array_equal(stats.shrunk(0.0), h)
    full = stats.shrunk(1.0, half=1)
    np.testing.assert_allclose(np.trace(full[0]), np.trace(h[0]))
    np.testing.assert_allclose(full * np.trace(s[0]) / np.trace(h[0]), s)
    np.testing.assert_allclose(stats.shrunk(0.5), 0.5 * h + 0.5 * full)
    assert spatial_gram(np.ones((2, 3, 4, 4), np.float32)).shape == (1, 3, 3)


def test_spatial_statistics_help_a_pooled_layer_with_few_images(monkeypatch):
    """Pooled inputs: 24 images per half for a 128-wide layer, each image 16 positions
    of an image-level vector plus position noise of the same covariance shape: H from the
    pooled vectors overfits, the per-position statistics carry 16× the vectors."""
    rng = np.random.default_rng(9)
    k, positions = 128, 16
    mix = rng.normal(size=(k, k)) / np.sqrt(k)

    def draw(images):
        image = rng.normal(size=(images, 1, k))
        noise = rng.normal(size=(images, positions, k))
        return ((image + noise) @ mix).astype(np.float32)  # [images, positions, K]

    def stats_of(f):
        x = f.mean(axis=1).astype(np.float64)
        flat = f.reshape(-1, k).astype(np.float64)
        return (x.T @ x)[None] / len(f), (flat.T @ flat)[None] / flat.shape[0]

    (h0, s0), (h1, s1) = stats_of(draw(24)), stats_of(draw(24))
    statistics = InputStatistics((h0 + h1) / 2, (h0, h1), (s0 + s1) / 2, (s0, s1))
    w = rng.normal(size=(32, k)).astype(np.float32)
    damping, chosen_mix = choose_statistics(w, 2, statistics)
    assert chosen_mix in SPATIAL_MIXES and chosen_mix > 0
    monkeypatch.setattr(gptq, "CHOICE_ROWS", 8)  # judged on 8 of the 32 rows
    assert choose_statistics(w, 2, statistics)[1] > 0
    monkeypatch.undo()
    levels, scales, _ = round_layer(w, 2, statistics)
    plain, plain_scales, _ = round_layer(w, 2, InputStatistics(statistics.hessian,
                                                               statistics.halves))  # fmt: skip
    fresh, _ = stats_of(draw(4000))
    err = output_errors(w, levels.reshape(1, 32, k), scales[None], fresh, 1).sum()
    err_plain = output_errors(w, plain.reshape(1, 32, k), plain_scales[None], fresh, 1).sum()
    assert err < 0.95 * err_plain  # on images neither saw


def test_centered_statistics_are_the_sums_about_each_layers_input_mean():
    """Every layer of a small convnet (stride-2 stem, depthwise, pointwise, pooled gemm):
    ``centered()`` H is mean Σ (p − μ)(p − μ)ᵀ over the patches p as the kernel reads them
    (padding's zeros included), μ the input's per-channel mean laid out like a weight row;
    the pooled gemm's per-position statistics are centered on the same μ."""

    graph = irc.import_onnx(small_convnet())
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    data = np.random.default_rng(6).normal(size=(20, 3, 16, 16)).astype(np.float32)
    statistics = layer_hessians(graph, data, batch_size=8, progress=False)
    inputs = {}

    def observe(op, args, results):
        if op.kind in ("conv2d", "gemm"):
            inputs[op] = args[0].astype(np.float64)

    run_graph(graph, [data], observers=[observe])
    checked = 0
    for op, x in inputs.items():
        if layer_name(op) not in statistics:
            continue
        centered = statistics[layer_name(op)].centered()
        if op.kind == "gemm":
            rows = x - x.mean(axis=0)
            want = (rows.T @ rows)[None] / len(x)
        else:
            kernel = tuple(op.operands[1].type.shape[2:])
            group = op.attrs["group"]
            patches = conv_patches(x, op.attrs, kernel)  # [B·OH·OW, C, kh·kw]
            patches = patches - x.mean(axis=(0, 2, 3))[None, :, None]
            flat = patches.reshape(len(patches), group, -1)
            want = np.stack([flat[:, g].T @ flat[:, g] for g in range(group)]) / len(x)
        np.testing.assert_allclose(centered.hessian, want, rtol=1e-4, atol=1e-6 * want.max())
        assert not np.allclose(statistics[layer_name(op)].hessian, want)  # ReLU'd: a mean
        checked += 1
    assert checked == 4
    fc = statistics["fc"]
    mu = fc.moments.channel_mean  # [1, 32]: the pooled features' mean over the images
    pooled = next(x for op, x in inputs.items() if op.kind == "gemm")
    np.testing.assert_allclose(mu[0], pooled.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fc.centered().spatial, fc.spatial - mu[:, :, None] * mu[:, None])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("bits", [4, 2])
def test_centered_gptq_leaves_less_error_after_bias_correction(bits, seed):
    """Inputs after a ReLU (a mean as large as their spread): with bias correction taking
    the mean error away, GPTQ on the centered statistics leaves less output error than on
    Σ x xᵀ, which spends part of the rounding on the mean direction (2–3% here)."""
    rng = np.random.default_rng(seed)
    k, out, n = 64, 24, 2000
    x = np.maximum(rng.normal(0.5, 1.0, size=(n, k)), 0) * rng.uniform(0.2, 2, size=k)
    w = rng.normal(size=(out, k)).astype(np.float32)
    mu = x.mean(axis=0)
    stats = InputStatistics((x.T @ x)[None] / n, moments=InputMoments(mu[None], 1, mu[None]))

    def error_after_bias_correction(levels, scales):
        e = levels.astype(np.float64) * scales[:, None] - w
        return float(np.sum(((x - mu) @ e.T) ** 2))  # the mean error e·μ is in the bias

    plain = error_after_bias_correction(*round_layer(w, bits, stats)[:2])
    centered = error_after_bias_correction(*round_layer(w, bits, stats.centered())[:2])
    assert centered < 0.99 * plain


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_weights_of_an_input_the_statistics_never_saw_keep_their_nearest_level(bits):
    """An input channel that was zero on every statistics image (a ReLU channel that
    rarely opens) may fire later: GPTQ must not zero its weights, and the other columns
    are rounded as if it were absent."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    x[:, 2] = 0.0  # channel 2 never fires in the statistics
    h = (x.T.astype(np.float64) @ x / len(x))[None]
    w = rng.normal(size=(10, 6)).astype(np.float32)
    scales = quant.weight_scales(w, bits, "mse")
    levels = gptq_levels(w, scales, bits, h, 1)
    nearest = quant.quantize_weights(w, scales, bits)
    assert np.array_equal(levels[:, 2], nearest[:, 2])
    alive = [0, 1, 3, 4, 5]
    without = gptq_levels(w[:, alive], scales, bits, h[:, alive][:, :, alive], 1)
    assert np.array_equal(levels[:, alive], without)


def test_gptq_statistics_read_at_most_calibration_limit_inputs():
    """irc.compile's calibration_limit caps the GPTQ statistics' inputs too: five inputs
    are one batch of eight (no halves to choose a damping on), forty are five."""

    data = np.random.default_rng(5).normal(size=(40, 3, 16, 16)).astype(np.float32)
    models = {limit: irc.compile(small_convnet(), precision="int4", calibration=data,
                                 rounding="gptq", calibration_limit=limit, progress=False)
              for limit in (5, None)}  # fmt: skip
    assert models[5].calibration.count == 5 and models[None].calibration.count == 40
    for statistics in models[5].calibration.hessians.values():
        assert statistics.halves is None
    for statistics in models[None].calibration.hessians.values():
        assert statistics.halves is not None


def test_a_slightly_indefinite_hessian_is_damped_until_it_factors():
    """Statistics of a few inputs, centered in floating point, can leave H with a small
    negative eigenvalue: the damping is raised until its Cholesky factor exists, and the
    levels stay on the grid (irc bench on 4 calibration images failed here)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6))
    h = x.T @ x - 0.05 * np.eye(6)  # rank 2, pushed below zero
    assert np.linalg.eigvalsh(h).min() < 0
    w = rng.normal(size=(4, 6)).astype(np.float32)
    scales = np.abs(w).max(axis=1) / 7
    levels = gptq_levels(w, scales, 4, h[None], group=1)
    assert levels.shape == w.shape and levels.min() >= -8 and levels.max() <= 7


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_many_problems_round_as_each_alone(bits, group):
    """gptq_levels_many (choose_statistics's grid in one pass) gives, per (H, damping),
    exactly the levels of gptq_levels alone, also where one H must be damped further to
    factor (only that problem's diagonal is raised)."""
    rng = np.random.default_rng(bits + group)
    w = rng.normal(size=(12, 6 // group, 3, 3)).astype(np.float32)
    k = w[0].size
    scales = quant.weight_scales(w, bits, "mse")
    hessians = []
    for _ in range(3):
        x = rng.normal(size=(group, 40, k))
        hessians.append(np.einsum("gnk,gnl->gkl", x, x) / 40)
    x = rng.normal(size=(group, 2, k))  # rank 2, pushed below zero: needs more damping
    hessians.append(np.einsum("gnk,gnl->gkl", x, x) - 0.05 * np.eye(k)[None])
    dampings = [0.01, 0.1, 1.0, 0.01]
    together = gptq_levels_many(w, scales, bits, hessians, dampings, group)
    for h, d, levels in zip(hessians, dampings, together):
        np.testing.assert_array_equal(levels, gptq_levels(w, scales, bits, h, group, d))


def test_factors_kept_across_bit_widths_round_the_same():
    """A Factors kept over one layer's roundings at INT8, INT4 and INT2 (what the
    sensitivity pass does) gives the levels, scales and dampings of rounding each alone,
    and prepares each (H, damping) once: the INT4 and INT2 roundings add no entry unless
    they choose another damping."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(96, 40)).astype(np.float32)
    halves = (_gemm_gram(x[:48]) / 48, _gemm_gram(x[48:]) / 48)
    statistics = InputStatistics(_gemm_gram(x) / 96, halves)
    w = rng.normal(size=(16, 40)).astype(np.float32)
    factors = Factors()
    dampings = set()
    for bits in (8, 4, 2):
        alone = round_layer(w, bits, statistics)
        kept = round_layer(w, bits, statistics, factors=factors)
        for a, b in zip(alone, kept):
            np.testing.assert_array_equal(a, b)
        dampings.add(kept[2])
    assert len(factors._entries) == 1 + len(dampings)  # the grid's stack, then each full H


def _round_batch_numpy(block, target, feedback, safe, row_scale, levels, errors, start, bits):
    """The column loop of one lazy batch as numpy array operations (the oracle)."""
    end = start + block.shape[1]
    for j in range(start, end):
        i = j - start
        q = quant.round_levels(block[:, i] / safe, bits).astype(np.float32)
        levels[:, j] = q
        errors[:, j] = target[:, j] - q * row_scale
        if j + 1 < end:
            block[:, i + 1 :] += feedback[:, j + 1 : end, j, None] * errors[:, j, None, :]


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize(("groups", "k", "rows", "start"), [(1, 40, 7, 0), (3, 70, 5, 64)])
def test_compiled_column_loop_gives_the_numpy_loops_bits(bits, groups, k, rows, start):
    rng = np.random.default_rng(bits * 100 + groups)
    scale = np.float32(2.0 ** (1 - bits))
    target = (rng.standard_normal((groups, k, rows)) * 0.7).astype(np.float32)
    feedback = np.tril(rng.standard_normal((groups, k, k)) * 0.2, -1).astype(np.float32)
    row_scale = (rng.uniform(0.5, 2.0, (groups, rows)) * scale).astype(np.float32)
    row_scale[0, 0] = 0.0  # a channel of zeros: scale 1 for the division
    safe = np.where(row_scale > 0, row_scale, np.float32(1.0))
    grid = quant.weight_levels(bits)
    block = target[:, start:] * np.float32(1.3)  # as if earlier columns had fed it
    got = [np.zeros((groups, k, rows), np.float32) for _ in range(2)]
    want = [np.zeros((groups, k, rows), np.float32) for _ in range(2)]
    mine = block.copy()
    gptq.round_batch(mine, target, feedback, safe, row_scale, *got, start, bits,
                     float(grid[0]), float(grid[-1]))  # fmt: skip
    _round_batch_numpy(block, target, feedback, safe, row_scale, *want, start, bits)
    assert np.array_equal(mine, block)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert set(np.unique(got[0][:, start:])) <= set(grid.astype(np.float32))
