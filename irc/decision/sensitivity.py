"""The sensitivity analysis: how much each layer suffers at each candidate precision.

Everything runs on compiled kernels: the float model is compiled once (Numba, batch B),
and each layer at each precision is its own compiled *layer program*
(``layer_programs``: quantize → integer kernel → dequantize), swapped in for the layer's
float kernel in the float driver. Per batch of the sample data:

1. one float run, in which each layer's kernel also runs every layer program on the same
   float input: the local metrics (``sqnr``, ``mse``, ``norm_error``);
2. per precision, one run with every layer swapped: ``sqnr_delta``;
3. per layer and precision, one run with that layer alone swapped: ``omega`` and
   ``output_nsr`` (the cost: layers × precisions inferences, linear in the layers; each
   resumes from the arena as the float run left it before the layer).

    >>> table = analyze(graph, calibration, images, labels=labels, progress=True)
    >>> table.save("sensitivity.csv")
"""

from __future__ import annotations

import time

import numpy as np

from irc.calibration.progress import Progress
from irc.decision.layer_programs import layer_program
from irc.decision.table import CANDIDATES, LayerInfo, SensitivityTable
from irc.errors import InputError
from irc.ir import Graph, Op
from irc.passes.quantize import integer_form_problem
from irc.precision import layer_name, layers


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
        if self.noise == 0.0:
            return float("inf")
        return 10.0 * np.log10(max(self.signal, 1e-300) / self.noise)

    def mse(self) -> float:
        return self.noise / max(self.elements, 1)

    def nsr(self) -> float:
        return self.noise / max(self.signal, 1e-300)

    def norm_error(self) -> float:
        return self.norm / max(self.samples, 1)


def quantizable_layers(graph: Graph) -> list[Op]:
    """The layers a plan may put at an integer precision (the rest stay float)."""
    return [op for op in layers(graph) if integer_form_problem(op) is None]


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
    batch = min(batch_size, len(data))
    model, kernel_of, namespace = float_driver(graph, ops, batch, data.shape[1:], num_threads)
    float_kernels = {ident: namespace[ident] for ident in kernel_of.values()}
    steps = len(ops) * len(precisions)
    batches = (len(data) + batch - 1) // batch
    bar = Progress(steps * (1 + 2 * batches), label="sensitivity", unit="run",
                   enabled=progress)  # fmt: skip
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
    names = [layer_name(op) for op in ops]
    for start_row in range(0, len(data), batch):
        x, rows = _padded(data, start_row, batch)
        y_labels = None if labels is None else np.asarray(labels[start_row : start_row + rows])
        saved: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        # 1. float run: record each layer's input and output, run its programs beside it
        for n in names:
            namespace[kernel_of[n]] = _recording(float_kernels[kernel_of[n]], n, saved)
        (reference,) = _first(model._driver.run(x))
        for n in names:
            xin, yout = saved[n]
            for p in precisions:
                local[n, p].add(yout, programs[n, p](xin)[0], rows)
        ref_loss = None if y_labels is None else _cross_entropy(reference[:rows], y_labels)

        # 2. every layer at p: the noise each layer adds to what it was given
        for p in precisions:
            for n in names:
                namespace[kernel_of[n]] = _swapped(programs[n, p], n, saved, rows,
                                                   chain_in[n, p], chain_out[n, p])  # fmt: skip
            model._driver.run(x)
            bar.update(len(names))

        # 3. one layer at p, the rest float: the model output's change. Runs resume from a
        # snapshot of the arena taken just before the layer, so only the calls from the
        # layer on are made again (half the work of whole runs, on average)
        for n in names:
            namespace[kernel_of[n]] = float_kernels[kernel_of[n]]
        driver, arena = model._driver, model._driver.arena
        calls = len(model.program.calls)
        done = 0
        for n in names:
            at = int(kernel_of[n][1:])
            driver.run_range(done, at, x)
            snapshot, done = arena.copy(), at
            for p in precisions:
                namespace[kernel_of[n]] = _swapped(programs[n, p])
                (y,) = _first(driver.run_range(at, calls, x))
                arena[...] = snapshot
                output[n, p].add(reference, y, rows)
                if ref_loss is not None:
                    change = _cross_entropy(y[:rows], y_labels) - ref_loss
                    loss_change[n, p] += float(np.sum(change * change))
                bar.update(1)
            namespace[kernel_of[n]] = float_kernels[kernel_of[n]]
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


def float_driver(graph: Graph, ops: list[Op], batch: int, sample_shape, num_threads):
    """The float model compiled at ``batch``; layer name → its kernel's identifier in the
    driver; the driver's namespace (swap ``namespace[ident]`` to replace a layer's kernel)."""
    import irc

    name = graph.inputs[0].name
    model = irc.compile(graph, {name: (batch, *sample_shape)}, pipeline="",
                        num_threads=num_threads, cache=False)  # fmt: skip
    kernel_of = _kernel_idents(model, [layer_name(op) for op in ops])
    return model, kernel_of, model._driver.namespace


def _kernel_idents(model, names: list[str]) -> dict[str, str]:
    """Layer name → the driver's kernel identifier (``k<i>``) that runs it."""
    found = {}
    for i, op in enumerate(model.program.calls):
        if op.kind in ("conv2d", "gemm"):
            found[layer_name(op)] = f"k{i}"
    missing = [n for n in names if n not in found]
    if missing:
        raise InputError(f"layers {missing[:3]} are not kernels of the compiled float model")
    return {n: found[n] for n in names}


def _recording(kernel, name: str, saved: dict):
    """``kernel``, also keeping a copy of its input and output under ``name``."""

    def run(x, *rest):
        kernel(x, *rest)
        saved[name] = (x.copy(), rest[-1].copy())

    return run


def _swapped(program, name=None, saved=None, rows=0, noise_in=None, noise_out=None):
    """A kernel that runs ``program`` instead (writing the float kernel's output array);
    with ``saved``, it also compares its input and output with the float run's."""

    def run(x, *rest):
        out = rest[-1]
        out[...] = program(x)[0]
        if saved is not None:
            ref_in, ref_out = saved[name]
            noise_in.add(ref_in, x, rows)
            noise_out.add(ref_out, out, rows)

    return run


def _first(outputs):
    return outputs[:1]


def _padded(data: np.ndarray, start: int, batch: int) -> tuple[np.ndarray, int]:
    """``batch`` rows from ``start`` (the last batch repeats its last row) and the real count."""
    chunk = data[start : start + batch]
    rows = len(chunk)
    if rows < batch:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - rows, axis=0)])
    return np.ascontiguousarray(chunk), rows


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
