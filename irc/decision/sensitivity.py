"""The sensitivity analysis: how much each layer suffers at each candidate precision.

Everything runs on compiled kernels: the float model is compiled once (Numba, batch B),
and each layer at each precision is its own compiled *layer program*
(``layer_programs``: quantize → integer kernel → dequantize), which replaces the layer's
float kernel in the float model (``CompiledModel.replace_kernel``). Per batch of the
sample data:

1. one observed float run, keeping each layer's input and output; every layer program
   runs on that input: the local metrics (``sqnr``, ``mse``, ``norm_error``);
2. per precision, one observed run with every layer replaced: ``sqnr_delta``;
3. per layer and precision, one run with that layer alone replaced: ``omega`` and
   ``output_nsr`` (the cost: layers × precisions inferences, linear in the layers; each
   resumes from a snapshot taken just before the layer, ``CompiledModel.snapshot``).

    >>> table = analyze(graph, calibration, images, labels=labels, progress=True)
    >>> table.save("sensitivity.csv")
"""

from __future__ import annotations

import time

import numpy as np

from irc.build import build
from irc.calibration.progress import Progress
from irc.compiled import CompiledModel
from irc.decision.layer_programs import layer_program
from irc.decision.table import CANDIDATES, LayerInfo, SensitivityTable
from irc.errors import InputError
from irc.ir import Graph, Op
from irc.measure import energy_ratio_db
from irc.precision import layer_name
from irc.run_statistics import padded_batch
from irc.specialize import specialize
from irc.support import quantizable_layers


def layer_info(op: Op) -> LayerInfo:
    """The facts about layer ``op`` the strategies use."""
    w = tuple(op.operands[1].type.shape)
    out = tuple(op.result.type.shape[1:])
    if op.kind == "conv2d":
        macs = int(np.prod(out)) * int(np.prod(w[1:]))
        depthwise = op.attrs["group"] > 1 and w[1] == 1
    else:
        macs = int(np.prod(w))
        depthwise = False
    return LayerInfo(layer_name(op), op.kind, w, out, macs, depthwise)


class _Pair:
    """Running sums comparing a tested tensor with its reference, sample by sample."""

    def __init__(self):
        self.signal = self.noise = self.elements = self.norm = 0.0
        self.samples = 0

    def add(self, ref: np.ndarray, test: np.ndarray, rows: int) -> None:
        ref = ref[:rows].reshape(rows, -1).astype(np.float64)
        diff = test[:rows].reshape(rows, -1).astype(np.float64) - ref
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum(diff * diff))
        self.elements += ref.size
        self.norm += float(np.sum(np.sqrt(np.sum(diff * diff, axis=1)) / ref.shape[1]))
        self.samples += rows

    def sqnr(self) -> float:
        return energy_ratio_db(self.signal, self.noise)

    def mse(self) -> float:
        return self.noise / max(self.elements, 1)

    def nsr(self) -> float:
        return self.noise / max(self.signal, 1e-300)

    def norm_error(self) -> float:
        return self.norm / max(self.samples, 1)


def analyze(
    graph: Graph,
    calibration,
    data: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    precisions=CANDIDATES,
    batch_size: int = 8,
    num_threads: int | None = None,
    weights: str = "mse",
    progress: bool = True,
) -> SensitivityTable:
    """The sensitivity table of ``graph`` (float, after the float pipeline; only read).

    ``calibration``: value name → (lo, hi) for the activations. ``data``: the sample
    inputs [N, ...] of the graph's one input; ``labels`` [N] class indices make Ω the
    change of the cross-entropy loss. ``precisions``: the candidates measured.
    """

    start = time.perf_counter()
    data = np.asarray(data, dtype=np.float32)
    if len(graph.inputs) != 1:
        raise InputError("sensitivity analysis needs a model with one input")
    if data.ndim < 1 or len(data) == 0:
        raise InputError("sensitivity analysis needs at least one sample input (data is empty)")
    if labels is not None and len(labels) != len(data):
        raise InputError(f"labels: {len(labels)} labels for {len(data)} samples")
    ops = quantizable_layers(graph)
    if not ops:
        raise InputError("the model has no layer that can be quantized (conv2d / gemm)")
    fixed = graph.inputs[0].type.shape[0]  # a batch the model's shapes depend on stays
    batch = fixed if isinstance(fixed, int) else min(batch_size, len(data))
    steps = len(ops) * len(precisions)
    batches = (len(data) + batch - 1) // batch
    bar = Progress(steps * (1 + 2 * batches), label="sensitivity", unit="run",
                   enabled=progress)  # fmt: skip
    model = float_model(graph, batch, data.shape[1:], num_threads)
    compiled_op = {n: model.op_named(n) for n in (layer_name(op) for op in ops)}
    programs = {}
    for op in ops:
        for p in precisions:
            programs[layer_name(op), p] = layer_program(
                graph, op, p, calibration, batch, num_threads, weights
            )
            bar.update(1)

    local = {(n, p): _Pair() for n, p in programs}
    chain_in = {(n, p): _Pair() for n, p in programs}
    chain_out = {(n, p): _Pair() for n, p in programs}
    output = {(n, p): _Pair() for n, p in programs}
    loss_change = {(n, p): 0.0 for n, p in programs}
    names = list(compiled_op)
    layer_of = {id(op): n for n, op in compiled_op.items()}
    for start_row in range(0, len(data), batch):
        x, rows = padded_batch(data, start_row, batch)
        y_labels = None if labels is None else np.asarray(labels[start_row : start_row + rows])
        saved: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def record(op, args, results, saved=saved) -> None:
            if id(op) in layer_of:
                saved[layer_of[id(op)]] = (args[0].copy(), results[0].copy())

        # 1. float run: each layer's input and output; its programs run on that input
        (reference,) = model.run_observed([record], x)[:1]
        for n in names:
            xin, yout = saved[n]
            for p in precisions:
                local[n, p].add(yout, programs[n, p](xin)[0], rows)
        ref_loss = None if y_labels is None else _cross_entropy(reference[:rows], y_labels)

        # 2. every layer at p: the noise each layer adds to what it was given
        for p in precisions:
            pairs = {n: (chain_in[n, p], chain_out[n, p]) for n in names}

            def compare(op, args, results, pairs=pairs, saved=saved, rows=rows) -> None:
                if id(op) in layer_of:
                    n = layer_of[id(op)]
                    ref_in, ref_out = saved[n]
                    pairs[n][0].add(ref_in, args[0], rows)
                    pairs[n][1].add(ref_out, results[0], rows)

            for n in names:
                model.replace_kernel(compiled_op[n], _replaced_by(programs[n, p]))
            model.run_observed([compare], x)
            bar.update(len(names))
        for n in names:
            model.restore_kernel(compiled_op[n])

        # 3. one layer at p, the rest float: the model output's change. Runs resume from a
        # snapshot taken just before the layer, so only the calls from the layer on are
        # made again (half the work of whole runs, on average)
        snapshot = None
        for n in names:
            snapshot = model.snapshot(compiled_op[n], x, start=snapshot)
            for p in precisions:
                model.replace_kernel(compiled_op[n], _replaced_by(programs[n, p]))
                (y,) = model.run_from(snapshot, x)[:1]
                output[n, p].add(reference, y, rows)
                if ref_loss is not None:
                    change = _cross_entropy(y[:rows], y_labels) - ref_loss
                    loss_change[n, p] += float(np.sum(change * change))
                bar.update(1)
            model.restore_kernel(compiled_op[n])
    bar.close()

    shape = (len(names), len(precisions))
    metrics = {m: np.zeros(shape) for m in ("sqnr", "mse", "sqnr_delta", "norm_error",
                                             "omega", "output_nsr")}  # fmt: skip
    for i, n in enumerate(names):
        for j, p in enumerate(precisions):
            metrics["sqnr"][i, j] = local[n, p].sqnr()
            metrics["mse"][i, j] = local[n, p].mse()
            metrics["norm_error"][i, j] = local[n, p].norm_error()
            metrics["sqnr_delta"][i, j] = _delta(chain_in[n, p].sqnr(), chain_out[n, p].sqnr())
            metrics["output_nsr"][i, j] = output[n, p].nsr()
            metrics["omega"][i, j] = (
                loss_change[n, p] / len(data) if labels is not None else output[n, p].nsr()
            )
    return SensitivityTable(
        [layer_info(op) for op in ops], tuple(precisions), metrics, len(data),
        "cross-entropy" if labels is not None else "output", time.perf_counter() - start,
    )  # fmt: skip


def float_model(graph: Graph, batch: int, sample_shape, num_threads) -> CompiledModel:
    """The float model (``graph``, only read) compiled at ``batch`` for sensitivity runs."""
    name = graph.inputs[0].name
    return build(specialize(graph, {name: (batch, *sample_shape)}), num_threads=num_threads,
                 cache=False)  # fmt: skip


def _replaced_by(program):
    """A kernel function that runs layer ``program`` instead (writing the float kernel's
    output array)."""

    def run(x, *rest):
        rest[-1][...] = program(x)[0]

    return run


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy of ``logits`` [B, C] at ``labels`` [B]."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.sum(np.exp(z), axis=1))
    return log_norm - z[np.arange(len(labels)), labels]


SQNR_CEILING = 120.0  # dB: a noiseless value (the model's input) counts as this clean


def _delta(sqnr_in: float, sqnr_out: float) -> float:
    """SQNR lost across a layer (dB), each side capped at ``SQNR_CEILING``."""
    return float(min(sqnr_in, SQNR_CEILING) - min(sqnr_out, SQNR_CEILING))
