"""Statistics gathered from compiled programs as they run: activation ranges for
calibration, and each layer's input statistics for GPTQ rounding.

    >>> calibration = calibrate(graph, images, "minmax")        # compiled float program
    >>> statistics = layer_hessians(graph, images)                 # layer → InputStatistics
    >>> statistics = rounding_statistics(graph, folder, preprocess="torchvision", skip=16)

Both run the float graph's compiled program (``irc.build``) through its public observer
API (``CompiledModel.run_observed``): calibration as the reference interpreter would be
run (the same observers, the same ranges up to float rounding in the last bits), at a
fraction of its time. What the statistics become is ``irc.calibration``'s (ranges) and
``irc.gptq``'s (levels) business.

A layer's statistics are summed from its input as the kernel reads it (padding, strides):
``input_gram`` (Σ x xᵀ per group; depthwise layers through a Numba kernel that sums their
tiny grams in place), ``input_moments`` (first moments, which center them), and for a
gemm fed by a global average pool ``spatial_gram`` of the pool's input.
"""

from __future__ import annotations

import numpy as np

from irc.backends.numba.statistics import depthwise_gram
from irc.build import build
from irc.calibration import Calibration
from irc.calibration import calibrate as calibrate_with
from irc.calibration.data import sample_inputs
from irc.calibration.progress import Progress
from irc.errors import InputError
from irc.gptq import InputMoments, InputStatistics
from irc.ir import Graph
from irc.opdef import has_trait
from irc.ops.shape_rules import conv_output_size
from irc.precision import layer_name
from irc.specialize import specialize
from irc.support import quantizable_layers

# calibration inputs (at most) whose statistics GPTQ rounding uses: with 64, the late layers'
# statistics (a 1280-wide classifier input: rank 64) let GPTQ fit its own images and lose
# top-1 on others (MobileNetV2, one FP32/8 plan: 73.0 with 64, 75.9 with 224)
GPTQ_SAMPLES = 256


class ProgramRunner:
    """Runs a float graph's compiled program, observed, at each set of input shapes it is
    given (one program per shape: the last batch of a calibration set is often shorter).
    A ``run`` for ``irc.calibration.calibrate``."""

    def __init__(self, graph: Graph, num_threads: int | None = None):
        self.graph, self.num_threads = graph, num_threads
        self.models: dict[tuple, object] = {}

    def __call__(self, batch: dict[str, np.ndarray], observers) -> None:
        shapes = {name: tuple(array.shape) for name, array in batch.items()}
        key = tuple(sorted(shapes.items()))
        if key not in self.models:
            self.models[key] = build(specialize(self.graph, shapes), num_threads=self.num_threads,
                                     cache=False)  # fmt: skip
        self.models[key].run_observed(observers, batch)


def calibrate(graph: Graph, data, method: str = "minmax", *, num_threads: int | None = None,
              **options) -> Calibration:  # fmt: skip
    """``irc.calibration.calibrate`` on ``graph``'s compiled float program (``options`` as
    there); ``graph`` is only read."""
    return calibrate_with(graph, data, method, run=ProgramRunner(graph, num_threads), **options)


def rounding_statistics(
    graph: Graph, data, *, preprocess=None, skip: int = 0, limit: int | None = None,
    progress: bool = True, num_threads=None,
) -> dict[str, InputStatistics]:  # fmt: skip
    """``layer_hessians`` over up to ``GPTQ_SAMPLES`` inputs of ``data`` after the first
    ``skip`` (a sensitivity sample, which must not judge rounding fitted to it), or over the
    last ones if there are too few; of ``data`` (as for ``irc.calibration.model_batches``)
    at most the first ``limit`` inputs are read."""
    if isinstance(data, Calibration):
        raise InputError("GPTQ rounding statistics need calibration data, not a Calibration")
    count = skip + GPTQ_SAMPLES if limit is None else min(limit, skip + GPTQ_SAMPLES)
    sample, _ = sample_inputs(graph, data, preprocess, count)
    sample = sample[skip:] if len(sample) > skip else sample[-GPTQ_SAMPLES:]
    return layer_hessians(graph, sample, progress=progress, num_threads=num_threads)


def padded_batch(data: np.ndarray, start: int, batch: int) -> tuple[np.ndarray, int]:
    """``batch`` rows from ``start`` (the last batch repeats its last row) and the real count."""
    chunk = data[start : start + batch]
    rows = len(chunk)
    if rows < batch:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - rows, axis=0)])
    return np.ascontiguousarray(chunk), rows


def _windows(x: np.ndarray, op_attrs: dict, kernel: tuple[int, int]) -> np.ndarray:
    """A view of a conv's input windows: [B, C, OH, OW, kh, kw] (padding, strides, dilations)."""
    top, left, bottom, right = op_attrs["pads"]
    sh, sw = op_attrs["strides"]
    dh, dw = op_attrs["dilations"]
    padded = x
    if any(op_attrs["pads"]):
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    span_h, span_w = _spans(kernel, op_attrs)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    return windows[:, :, ::sh, ::sw, ::dh, ::dw]


def _spans(kernel: tuple[int, int], op_attrs: dict) -> tuple[int, int]:
    """The input rows and columns one (dilated) window covers."""
    (kh, kw), (dh, dw) = kernel, op_attrs["dilations"]
    return (kh - 1) * dh + 1, (kw - 1) * dw + 1


def _output_size(x: np.ndarray, op_attrs: dict, kernel: tuple[int, int]) -> tuple[int, int]:
    """A conv's output rows and columns for input ``x`` [B, C, H, W]."""
    top, left, bottom, right = op_attrs["pads"]
    (sh, sw), (dh, dw) = op_attrs["strides"], op_attrs["dilations"]
    return (conv_output_size(x.shape[2], kernel[0], sh, top, bottom, dh),
            conv_output_size(x.shape[3], kernel[1], sw, left, right, dw))  # fmt: skip


def conv_patches(x: np.ndarray, op_attrs: dict, kernel: tuple[int, int]) -> np.ndarray:
    """Input patches of a conv: [B·OH·OW, C, kh·kw] (the weight's (c, kh, kw) order)."""
    windows = _windows(x, op_attrs, kernel)
    b, c, oh, ow = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(b * oh * ow, c, kernel[0] * kernel[1])


def input_gram(op, x: np.ndarray) -> np.ndarray:
    """Σ x xᵀ of one batch of layer ``op``'s input, per group: [G, K, K] (float64; the
    products are float32: matrix products, except for depthwise layers, whose C tiny
    grams ``irc.backends.numba.statistics.depthwise_gram`` sums in place)."""
    x = np.asarray(x, np.float32)
    if op.kind == "gemm":
        rows = x.reshape(x.shape[0], -1)
        return (rows.T @ rows).astype(np.float64)[None]
    kernel = tuple(op.operands[1].type.shape[2:])
    group, c = op.attrs["group"], x.shape[1]
    if group == c and kernel != (1, 1):  # depthwise
        top, left, bottom, right = op.attrs["pads"]
        padded = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (top, bottom), (left, right), (0, 0)))
        oh, ow = _output_size(x, op.attrs, kernel)
        return depthwise_gram(padded, *kernel, *op.attrs["strides"], *op.attrs["dilations"],
                              oh, ow)  # fmt: skip
    columns = _windows(x, op.attrs, kernel).transpose(1, 4, 5, 0, 2, 3)  # (c, kh, kw) order
    if group == 1:  # [K, B·positions], one symmetric product
        columns = columns.reshape(c * kernel[0] * kernel[1], -1)
        return (columns @ columns.T).astype(np.float64)[None]
    columns = columns.reshape(group, c // group * kernel[0] * kernel[1], -1)
    return np.matmul(columns, columns.transpose(0, 2, 1)).astype(np.float64)


def input_moments(op, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First moments of one batch of layer ``op``'s input: the sum of its input vectors as
    the kernel reads them (patches, padding's zeros included) per group, [G, K], and the
    sum of ``x`` per channel, [C] (float64 both)."""
    x = np.asarray(x, np.float32)
    if op.kind == "gemm":
        rows = x.reshape(x.shape[0], -1).sum(axis=0, dtype=np.float64)
        return rows[None], rows
    kernel = tuple(op.operands[1].type.shape[2:])
    group = op.attrs["group"]
    images = x.sum(axis=0, dtype=np.float64)  # [C, H, W]: the batch summed first
    top, left, bottom, right = op.attrs["pads"]
    padded = np.pad(images, ((0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = op.attrs["strides"], op.attrs["dilations"]
    oh, ow = _output_size(x, op.attrs, kernel)
    taps = [padded[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh,
                   j * dw : j * dw + (ow - 1) * sw + 1 : sw].sum(axis=(1, 2))
            for i in range(kernel[0]) for j in range(kernel[1])]  # fmt: skip
    patch_sum = np.stack(taps, axis=1)  # [C, kh·kw]: the weight's (c, kh, kw) order
    return patch_sum.reshape(group, -1), images.sum(axis=(1, 2))


def pooled_source(op):
    """The ``global_avg_pool`` op whose result (through reshapes) is gemm ``op``'s input,
    or None."""
    if op.kind != "gemm":
        return None
    value = op.operands[0]
    while value.producer is not None and value.producer.kind == "reshape":
        value = value.producer.operands[0]
    producer = value.producer
    return producer if producer is not None and producer.kind == "global_avg_pool" else None


def spatial_gram(x: np.ndarray) -> np.ndarray:
    """Σ over a batch of images ([B, C, H, W]) of the mean f fᵀ over their positions:
    [1, C, C] (float64; float32 products)."""
    b, c = x.shape[:2]
    columns = np.asarray(x, np.float32).transpose(1, 0, 2, 3).reshape(c, -1)
    positions = columns.shape[1] // max(b, 1)
    return (columns @ columns.T).astype(np.float64)[None] / max(positions, 1)


def layer_hessians(graph: Graph, data: np.ndarray, *, batch_size: int = 8, num_threads=None,
                   progress: bool = True) -> dict[str, InputStatistics]:  # fmt: skip
    """Layer name → ``InputStatistics`` over ``data`` ([N, ...], the graph's one input):
    mean Σ x xᵀ ([G, K, K]) over all of it and over each half (alternate batches; none
    with fewer than two batches), with the first moments that center them, for every layer
    that can be quantized, and for a gemm fed by a global average pool the per-position
    statistics of the pool's input; ``graph`` (float, after the float pipeline) is only
    read. The compiled float program runs ``data``, observed, in batches of ``batch_size``
    (of the graph's batch when the shapes were specialised with a static one)."""
    ops = quantizable_layers(graph)
    static = graph.inputs[0].type.shape[0] if graph.inputs[0].type.rank else None
    batch = static if isinstance(static, int) else min(batch_size, len(data))
    model = build(specialize(graph, {graph.inputs[0].name: (batch, *data.shape[1:])}),
                  num_threads=num_threads, cache=False)  # fmt: skip
    by_name = {layer_name(op): op for op in ops}
    fed_by_pool: dict[str, list[str]] = {}  # pool result name -> the layers it feeds
    for op in ops:
        pool = pooled_source(op)
        if pool is not None:
            fed_by_pool.setdefault(pool.results[0].name, []).append(layer_name(op))
    # per half (even batches, odd batches): layer name → summed arrays
    sums: list[dict[str, list[np.ndarray]]] = [{}, {}]
    spatial_sums: list[dict[str, list[np.ndarray]]] = [{}, {}]
    rows = {"n": 0, "half": 0}

    def add(into, key, arrays) -> None:
        half = into[rows["half"]]
        half[key] = [a + b for a, b in zip(half[key], arrays)] if key in half else list(arrays)

    def observe(op, args, results) -> None:
        x = args[0][: rows["n"]] if args else None
        if has_trait(op.kind, "layer") and layer_name(op) in by_name:
            layer = by_name[layer_name(op)]
            add(sums, layer_name(op), (input_gram(layer, x), *input_moments(layer, x)))
        for key in fed_by_pool.get(op.results[0].name, ()):
            add(spatial_sums, key, (spatial_gram(x),))

    counts = [0, 0]
    with Progress(len(data), label="gptq statistics", enabled=progress) as bar:
        for number, start in enumerate(range(0, len(data), batch)):
            x, rows["n"] = padded_batch(np.asarray(data, np.float32), start, batch)
            rows["half"] = number % 2
            model.run_observed([observe], x)
            counts[rows["half"]] += rows["n"]
            bar.update(rows["n"])
    return {key: _statistics(by_name[key], sums, spatial_sums, key, counts)
            for key in sums[0]}  # fmt: skip


def _statistics(op, sums, spatial_sums, key, counts) -> InputStatistics:
    """One layer's ``InputStatistics`` from its sums over the even and odd batches."""
    conv = op.kind == "conv2d"
    group = op.attrs["group"] if conv else 1
    taps = int(np.prod(op.operands[1].type.shape[2:])) if conv else 1
    # per image: input vectors (output positions) and pixels per input channel
    positions = int(np.prod(op.result.type.shape[2:])) if conv else 1
    pixels = int(np.prod(op.operands[0].type.shape[2:])) if conv else 1

    def finish(arrays, images):
        gram, patch_sum, channel_sum = (a / images for a in arrays)
        mean = (channel_sum / pixels).reshape(group, -1)
        return gram, InputMoments(patch_sum, positions, np.repeat(mean, taps, axis=1))

    even, odd = sums[0][key], sums[1].get(key)
    spatial = [spatial_sums[0].get(key), spatial_sums[1].get(key)]
    if spatial[0] is not None and spatial[0][0].shape != even[0].shape:
        spatial = [None, None]  # the gemm reads the pooled values reshaped: not per channel
    if odd is None:  # no halves to choose a mix on: the per-position statistics go unused
        gram, moments = finish(even, counts[0])
        return InputStatistics(gram, moments=moments)
    whole, moments = finish([a + b for a, b in zip(even, odd)], sum(counts))
    (h0, m0), (h1, m1) = finish(even, counts[0]), finish(odd, counts[1])
    if spatial[0] is None or spatial[1] is None:
        return InputStatistics(whole, (h0, h1), moments=moments, half_moments=(m0, m1))
    spatial_halves = (spatial[0][0] / counts[0], spatial[1][0] / counts[1])
    spatial_whole = (spatial[0][0] + spatial[1][0]) / sum(counts)
    return InputStatistics(whole, (h0, h1), spatial_whole, spatial_halves, moments, (m0, m1))
