"""The sensitivity analysis: how much each layer suffers at each candidate precision.

Everything runs on compiled kernels: the float model is compiled once (Numba, batch B,
its convolutions channels last as in a compiled model), and each layer at each precision
is its own compiled *layer program* (``layer_programs``: quantize → integer kernel →
dequantize, reading and writing the layer's layout), which replaces the layer's float
kernel in the float model (``CompiledModel.replace_kernel``).

``analyze_variants`` measures several *variants* in one pass (a calibration and the
precisions measured with it: ``rounding.analyze_best`` measures nearest rounding and
GPTQ's), sharing the float model, its reference runs and its snapshots; a *column* is one
precision of one variant. Per batch of the sample data (8 inputs by default):

1. one observed float run, keeping the model output and each layer's input and output;
2. per column, one observed run with every layer replaced: ``sqnr_delta``;
3. per layer, a snapshot of the float run just before it (``CompiledModel.snapshot``, each
   taken from the one before); per column, the layer's program runs on the layer's float
   input, which gives the local metrics (``sqnr``, ``mse``, ``norm_error``), and the run
   resumes from the snapshot with the layer's output replaced by the program's, which
   gives ``omega`` and ``output_nsr`` (the cost: layers × columns runs of the model from
   the layer on);
4. per layer, two more runs from its snapshot, the layer float but its input (then its
   output) rounded to int8 at the calibrated range: the table's ``activations``, what a
   float layer whose neighbours are integer still pays (at most layers × 2 runs: a value
   one layer writes and only the next reads is rounded once for both).

    >>> table = analyze(graph, calibration, images, labels=labels, progress=True)
    >>> table.save("sensitivity.csv")
    >>> nearest, gptq = analyze_variants(graph, [(plain, CANDIDATES), (with_gptq, ("int8",))],
    ...                                  images, labels=labels)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from irc.build import build
from irc.calibration.progress import Progress
from irc.compiled import CompiledModel
from irc.decision.layer_programs import layer_program
from irc.decision.table import CANDIDATES, LayerInfo, SensitivityTable
from irc.errors import InputError
from irc.ir import Graph, Op
from irc.measure import cross_entropy, energy_ratio_db
from irc.precision import layer_name
from irc.quant import activation_params, dequantize, quantize
from irc.run_statistics import padded_batch
from irc.specialize import specialize
from irc.support import quantizable_layers

METRICS = ("sqnr", "mse", "sqnr_delta", "norm_error", "omega", "output_nsr")


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


class _Reference:
    """A reference tensor of one batch (its first ``rows`` samples are real) and its
    energy, summed once however many tensors are compared with it."""

    def __init__(self, array: np.ndarray, rows: int):
        self.array = array
        self.values = array[:rows].reshape(rows, -1)
        self.rows = rows
        self._signal = None

    def signal(self) -> float:
        if self._signal is None:
            self._signal = float(np.sum(np.square(self.values, dtype=np.float64)))
        return self._signal


@dataclass(frozen=True)
class _Difference:
    """A tested tensor against its reference over one batch: the sums a ``_Pair`` adds."""

    signal: float
    noise: float
    elements: int
    norm: float  # Σ over samples of the error's norm / elements per sample
    samples: int


def _difference(ref: _Reference, test: np.ndarray) -> _Difference:
    """``test`` (a batch like ``ref``'s array) against ``ref``: the difference in the
    arrays' float32, each sample's squared norm by one BLAS dot product (blocked sums, a
    relative error near 1e-6), the totals in float64."""
    rows = ref.rows
    error = np.subtract(test[:rows].reshape(rows, -1), ref.values)
    per_sample = np.matmul(error[:, None, :], error[:, :, None]).reshape(rows)
    per_sample = per_sample.astype(np.float64)
    norm = float(np.sum(np.sqrt(per_sample) / error.shape[1]))
    return _Difference(ref.signal(), float(np.sum(per_sample)), error.size, norm, rows)


class _Pair:
    """Running sums comparing a tested tensor with its reference, sample by sample."""

    def __init__(self):
        self.signal = self.noise = self.elements = self.norm = 0.0
        self.samples = 0

    def add(self, difference: _Difference) -> None:
        self.signal += difference.signal
        self.noise += difference.noise
        self.elements += difference.elements
        self.norm += difference.norm
        self.samples += difference.samples

    def sqnr(self) -> float:
        return energy_ratio_db(self.signal, self.noise)

    def mse(self) -> float:
        return self.noise / max(self.elements, 1)

    def nsr(self) -> float:
        return self.noise / max(self.signal, 1e-300)

    def norm_error(self) -> float:
        return self.norm / max(self.samples, 1)


@dataclass
class _Sums:
    """Every running sum of one layer in one column."""

    local: _Pair = field(default_factory=_Pair)
    chain_in: _Pair = field(default_factory=_Pair)
    chain_out: _Pair = field(default_factory=_Pair)
    output: _Pair = field(default_factory=_Pair)
    loss_change: float = 0.0

    def metrics(self, images: int, labelled: bool) -> dict[str, float]:
        """The table's metrics from these sums over ``images`` samples."""
        return {
            "sqnr": self.local.sqnr(),
            "mse": self.local.mse(),
            "sqnr_delta": _delta(self.chain_in.sqnr(), self.chain_out.sqnr()),
            "norm_error": self.local.norm_error(),
            "omega": self.loss_change / images if labelled else self.output.nsr(),
            "output_nsr": self.output.nsr(),
        }


@dataclass
class _Column:
    """One precision of one variant: its layer programs by layer name."""

    variant: int
    precision: str
    programs: dict[str, CompiledModel]


@dataclass
class _Batch:
    """One batch of the sample and what the float run gave on it: the model output and,
    by value name, each layer's input and output (a value once, however many layers)."""

    x: np.ndarray
    rows: int
    labels: np.ndarray | None
    reference: _Reference | None = None
    reference_loss: np.ndarray | None = None
    saved: dict[str, _Reference] = field(default_factory=dict)


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
    rounding_memo: dict | None = None,
) -> SensitivityTable:
    """The sensitivity table of ``graph`` (float, after the float pipeline; only read).

    ``calibration``: value name → (lo, hi) for the activations. ``data``: the sample
    inputs [N, ...] of the graph's one input; ``labels`` [N] class indices make Ω the
    change of the cross-entropy loss. ``precisions``: the candidates measured.
    ``rounding_memo``: a dict that keeps each layer's rounding at each precision
    (``irc.stages.quantize``), for the plans compiled after on the same calibration.
    """
    (table,) = analyze_variants(graph, [(calibration, precisions)], data, labels=labels,
                                batch_size=batch_size, num_threads=num_threads,
                                weights=weights, progress=progress,
                                rounding_memo=rounding_memo)  # fmt: skip
    return table


def analyze_variants(
    graph: Graph,
    variants,
    data: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    batch_size: int = 8,
    num_threads: int | None = None,
    weights: str = "mse",
    progress: bool = True,
    rounding_memo: dict | None = None,
) -> list[SensitivityTable]:
    """One sensitivity table per variant of ``variants`` ((calibration, precisions) pairs),
    all measured in one pass over ``data``; arguments as for ``analyze``. Each table's
    ``seconds`` is its columns' share of the time."""
    start = time.perf_counter()
    data = np.asarray(data, dtype=np.float32)
    _check_sample(graph, data, labels)
    ops = quantizable_layers(graph)
    fixed = graph.inputs[0].type.shape[0]  # a batch the model's shapes depend on stays
    batch = fixed if isinstance(fixed, int) else min(batch_size, len(data))
    count = len(ops) * sum(len(precisions) for _, precisions in variants)
    batches = (len(data) + batch - 1) // batch
    bar = Progress(count * (1 + 2 * batches) + 2 * len(ops) * batches, label="sensitivity",
                   unit="run", enabled=progress)  # fmt: skip
    model = float_model(graph, batch, data.shape[1:], num_threads)
    layers = {n: model.op_named(n) for n in (layer_name(op) for op in ops)}
    nhwc = {n for n, op in layers.items() if op.attrs.get("layout") == "nhwc"}
    memo = {} if rounding_memo is None else rounding_memo
    columns = _columns(graph, ops, variants, batch, num_threads, weights, nhwc, memo, bar)
    sums = {(n, c): _Sums() for n in layers for c in range(len(columns))}
    sides = {layer_name(op): _Sides(op, variants[0][0]) for op in ops}
    for start_row in range(0, len(data), batch):
        x, rows = padded_batch(data, start_row, batch)
        y = None if labels is None else np.asarray(labels[start_row : start_row + rows])
        _measure_batch(model, layers, columns, sums, _Batch(x, rows, y), bar, sides)
    bar.close()
    seconds = time.perf_counter() - start
    activations = np.array([[sides[n].input.nsr(), sides[n].output.nsr()] for n in layers])
    return [
        _table(ops, columns, sums, v, len(data), labels is not None, seconds, activations)
        for v in range(len(variants))
    ]


class _Sides:
    """A layer's int8 input and output ranges (None where uncalibrated) and the output
    noise of rounding each alone."""

    def __init__(self, op: Op, calibration):
        self.ranges = [_range(calibration, v.name) for v in (op.operands[0], op.result)]
        self.input, self.output = _Pair(), _Pair()


def _range(calibration, name: str) -> tuple[float, int] | None:
    """The int8 (scale, zero point) of value ``name``'s calibrated range, or None."""
    try:
        lo, hi = calibration[name]
    except KeyError:
        return None
    return activation_params(lo, hi)


def _rounded(x: np.ndarray, params: tuple[float, int]) -> np.ndarray:
    """``x`` rounded to the int8 levels of ``params`` and back (float32)."""
    scale, zero_point = params
    return dequantize(quantize(x, scale, zero_point), scale, zero_point).astype(np.float32)


def _check_sample(graph: Graph, data: np.ndarray, labels) -> None:
    """InputError unless ``graph`` has one input and a layer to quantize, and ``data`` is
    a non-empty sample with as many ``labels`` (when given)."""
    if len(graph.inputs) != 1:
        raise InputError("sensitivity analysis needs a model with one input")
    if data.ndim < 1 or len(data) == 0:
        raise InputError("sensitivity analysis needs at least one sample input (data is empty)")
    if labels is not None and len(labels) != len(data):
        raise InputError(f"labels: {len(labels)} labels for {len(data)} samples")
    if not quantizable_layers(graph):
        raise InputError("the model has no layer that can be quantized (conv2d / gemm)")


def _columns(graph, ops, variants, batch, num_threads, weights, nhwc, memo,
             bar) -> list[_Column]:  # fmt: skip
    """Every variant's precisions, each with its layer programs (compiled at ``batch``;
    channels last for the layers named in ``nhwc``). The variants share one rounding memo:
    their calibrations differ only in GPTQ statistics, which the memo's keys tell apart.
    Layer by layer, so that what one layer's roundings share (its GPTQ factors) is still
    kept when the next precision needs it."""
    columns = [_Column(v, p, {}) for v, (_, precisions) in enumerate(variants)
               for p in precisions]  # fmt: skip
    for op in ops:
        name = layer_name(op)
        for column in columns:
            calibration = variants[column.variant][0]
            column.programs[name] = layer_program(graph, op, column.precision, calibration,
                                                  batch, num_threads, weights,
                                                  channels_last=name in nhwc,
                                                  rounding_memo=memo)  # fmt: skip
            bar.update(1)
    return columns


def _measure_batch(model: CompiledModel, layers: dict[str, Op], columns: list[_Column],
                   sums: dict, batch: _Batch, bar: Progress,
                   sides: dict[str, _Sides]) -> None:  # fmt: skip
    """Add one batch to ``sums`` and ``sides``: the float run, then per column every layer
    replaced, then per layer and column that layer alone replaced, then per layer its
    input and its output rounded alone (steps 1–4 of the module docstring)."""
    _float_run(model, layers, batch)
    for c, column in enumerate(columns):
        _every_layer_replaced(model, layers, column, {n: sums[n, c] for n in layers}, batch)
        bar.update(len(layers))
    snapshot = None
    written = None
    for n, op in layers.items():
        snapshot = model.snapshot(op, batch.x, start=snapshot)
        layer_in, layer_out = batch.saved[op.operands[0].name], batch.saved[op.result.name]
        written = _rounded_sides(model, op, snapshot, sides[n], batch, layer_out, written)
        bar.update(2)
        for c, column in enumerate(columns):
            y = column.programs[n](layer_in.array)[0]
            sums[n, c].local.add(_difference(layer_out, y))
            model.replace_kernel(op, _writing(y))
            _add_output(sums[n, c], model.run_from(snapshot, batch.x)[0], batch)
            bar.update(1)
        model.restore_kernel(op)


def _rounded_sides(model: CompiledModel, op: Op, snapshot, sides: _Sides, batch: _Batch,
                   layer_out: _Reference, written):  # fmt: skip
    """The model output, resumed at ``snapshot``, with ``op``'s float kernel reading its
    input rounded to int8, then with its float output rounded, added to ``sides``.
    ``written``: the layer before's (output value, its range, output difference); when
    that value is this layer's input and nothing else reads it, rounding either is the
    same run, made once. Returns this layer's ``written``."""
    float_kernel = model.kernel(op)
    in_params, out_params = sides.ranges
    if in_params is not None:
        if written is not None and written[:2] == (op.operands[0], in_params):
            difference = written[2]
        else:

            def rounded_input(x, *rest):
                float_kernel(_rounded(x, in_params), *rest)

            model.replace_kernel(op, rounded_input)
            difference = _difference(batch.reference, model.run_from(snapshot, batch.x)[0])
        sides.input.add(difference)
    written = None
    if out_params is not None:
        model.replace_kernel(op, _writing(_rounded(layer_out.array, out_params)))
        difference = _difference(batch.reference, model.run_from(snapshot, batch.x)[0])
        sides.output.add(difference)
        if len(op.result.users()) == 1 and op.result not in model.graph.outputs:
            written = (op.result, out_params, difference)
    model.restore_kernel(op)
    return written


def _float_run(model: CompiledModel, layers: dict[str, Op], batch: _Batch) -> None:
    """The float run of ``batch``: its output, its loss when labelled, and each layer's
    input and output (copied: the arena is reused)."""
    layer_ids = {id(op) for op in layers.values()}

    def record(op, args, results) -> None:
        if id(op) in layer_ids:
            for value, array in ((op.operands[0], args[0]), (op.result, results[0])):
                if value.name not in batch.saved:
                    batch.saved[value.name] = _Reference(array.copy(), batch.rows)

    (output,) = model.run_observed([record], batch.x)[:1]
    batch.reference = _Reference(output, batch.rows)
    if batch.labels is not None:
        batch.reference_loss = cross_entropy(output[: batch.rows], batch.labels)


def _every_layer_replaced(model: CompiledModel, layers: dict[str, Op], column: _Column,
                          sums: dict[str, _Sums], batch: _Batch) -> None:  # fmt: skip
    """One run with every layer replaced by its program in ``column``: each layer's input
    and output against the float run's (the noise a layer adds to what it was given; a
    value one layer writes and the next reads is compared once)."""
    layer_of = {id(op): n for n, op in layers.items()}
    differences: dict[str, _Difference] = {}

    def compare(op, args, results) -> None:
        if id(op) not in layer_of:
            return
        n = layer_of[id(op)]
        for pair, value, array in ((sums[n].chain_in, op.operands[0], args[0]),
                                   (sums[n].chain_out, op.result, results[0])):  # fmt: skip
            if value.name not in differences:
                differences[value.name] = _difference(batch.saved[value.name], array)
            pair.add(differences[value.name])

    for n, op in layers.items():
        model.replace_kernel(op, _replaced_by(column.programs[n]))
    model.run_observed([compare], batch.x)
    for op in layers.values():
        model.restore_kernel(op)


def _add_output(sums: _Sums, y: np.ndarray, batch: _Batch) -> None:
    """Add model output ``y`` (one layer replaced) against the float run's to ``sums``."""
    sums.output.add(_difference(batch.reference, y))
    if batch.labels is not None:
        change = cross_entropy(y[: batch.rows], batch.labels) - batch.reference_loss
        sums.loss_change += float(np.sum(change * change))


def _table(ops: list[Op], columns: list[_Column], sums: dict, variant: int, images: int,
           labelled: bool, seconds: float,
           activations: np.ndarray) -> SensitivityTable:  # fmt: skip
    """The table of ``variant``'s columns (with every variant's ``activations``);
    ``seconds`` (the whole pass) shared by columns."""
    names = [layer_name(op) for op in ops]
    own = [(c, column) for c, column in enumerate(columns) if column.variant == variant]
    metrics = {m: np.zeros((len(names), len(own))) for m in METRICS}
    for i, n in enumerate(names):
        for j, (c, _) in enumerate(own):
            for m, value in sums[n, c].metrics(images, labelled).items():
                metrics[m][i, j] = value
    return SensitivityTable(
        [layer_info(op) for op in ops], tuple(column.precision for _, column in own), metrics,
        images, "cross-entropy" if labelled else "output",
        seconds * len(own) / max(len(columns), 1), activations=activations,
    )  # fmt: skip


def float_model(graph: Graph, batch: int, sample_shape, num_threads) -> CompiledModel:
    """The float model (``graph``, only read) compiled at ``batch`` for sensitivity runs,
    its convolutions channels last."""
    name = graph.inputs[0].name
    return build(specialize(graph, {name: (batch, *sample_shape)}), pipeline="channels-last",
                 num_threads=num_threads, cache=False)  # fmt: skip


def _replaced_by(program):
    """A kernel function that runs layer ``program`` instead (writing the float kernel's
    output array)."""

    def run(x, *rest):
        rest[-1][...] = program(x)[0]

    return run


def _writing(values: np.ndarray):
    """A kernel function that writes ``values`` as its output (a layer program's output,
    computed before on the same input)."""

    def run(x, *rest):
        rest[-1][...] = values

    return run


SQNR_CEILING = 120.0  # dB: a noiseless value (the model's input) counts as this clean


def _delta(sqnr_in: float, sqnr_out: float) -> float:
    """SQNR lost across a layer (dB), each side capped at ``SQNR_CEILING``."""
    return float(min(sqnr_in, SQNR_CEILING) - min(sqnr_out, SQNR_CEILING))
