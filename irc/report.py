"""What a compiled model stores, layer by layer: precision, parameters and bytes.

    >>> print(model.report())                 # CompiledModel.report() → model_report(graph)
    layer                           op       output          precision  params  bytes  FP32 …
    /features/features.0/…/Conv     qconv2d  [1,32,112,112]  int4          864  1,088  3,584 …
    ...
    size 2.10 MB vs FP32 13.95 MB (6.64× smaller)

A *layer* is an op with a constant weight: ``conv2d`` / ``gemm`` (float: fp32, or fp16 when
the weight is a ``cast`` of a float16 constant) and ``qconv2d`` / ``qgemm`` (integer: int8,
int4, int2 from the weight's type). A layer's bytes are what a saved model stores for it:
the weight payload as stored (packed bytes for int4/int2) plus its per-channel scales and
the bias payload, each at the width a file stores it in (``irc.derived_constants``): 2
bytes a weight scale (4 where a layer's scales lack a float16's significand), and an int32 bias's
levels in the narrowest of int8, int16 and int32 that holds them (on an elided graph,
whose values are unknown, 4 bytes each). What a file does not store is not counted: an
integer layer's requantization ``multiplier`` and ``shift`` and its int32 bias's scales,
which its other scales determine and loading recomputes; were they hand-edited away from
that, they are stored and counted (4 bytes an element).
Its FP32 bytes are ``params * 4 + bias elements * 4``. Constants that belong to no layer
count as *other* bytes in both totals. Works on elided graphs too (sizes come from types,
an elided payload at its type's width).
Output shapes are in the model's own (ONNX) order, also for channels-last layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from irc.derived_constants import derived_payloads, stored_nbytes
from irc.ir import Graph, Op, Value
from irc.opdef import has_trait
from irc.ops.shape_rules import logical_shape
from irc.precision import PRECISIONS, layer_name
from irc.tensor import ElidedTensor, tensor_value_type

INT_PRECISION = {"i8": "int8", "i4": "int4", "i2": "int2"}
FLOAT_PRECISION = {"f32": "fp32", "f16": "fp16"}


@dataclass(frozen=True)
class LayerRow:
    """One layer of the report; byte counts as described in the module docstring."""

    name: str
    kind: str
    shape: tuple
    precision: str
    params: int
    weight_bytes: int  # weight payload + its scales, as stored
    bias_bytes: int  # bias payload as stored (+ its scales, where stored)
    requant_bytes: int  # multiplier + shift payloads of an integer layer, where stored
    fp32_bytes: int  # params * 4 + bias elements * 4

    @property
    def bytes(self) -> int:
        """Everything stored for the layer."""
        return self.weight_bytes + self.bias_bytes + self.requant_bytes

    @property
    def ratio(self) -> float:
        """FP32 bytes over stored bytes (how many times smaller the layer is)."""
        return self.fp32_bytes / self.bytes if self.bytes else 1.0


@dataclass(frozen=True)
class ReportTotals:
    """Sums over the layers, plus the constants that belong to no layer."""

    layers: int
    params: int
    layer_bytes: int
    layer_fp32_bytes: int
    other_bytes: int
    counts: dict = field(default_factory=dict)  # precision -> number of layers

    @property
    def bytes(self) -> int:
        """Every constant byte the model stores."""
        return self.layer_bytes + self.other_bytes

    @property
    def fp32_bytes(self) -> int:
        """The same model with every layer in FP32 (other constants unchanged)."""
        return self.layer_fp32_bytes + self.other_bytes

    @property
    def ratio(self) -> float:
        """The compression ratio: FP32 bytes over stored bytes."""
        return self.fp32_bytes / self.bytes if self.bytes else 1.0


@dataclass(frozen=True)
class ModelReport:
    """Per-layer rows and totals; ``str()`` is an aligned table, ``to_dict()`` JSON-able.
    ``kernels``: the instruction set of a compiled model's integer kernels ("" for a graph)."""

    graph: str
    layers: list[LayerRow]
    totals: ReportTotals
    kernels: str = ""

    def to_dict(self) -> dict:
        """Plain dicts, lists and numbers (``json.dumps`` takes it as is)."""
        rows = []
        for row in self.layers:
            d = asdict(row)
            d["shape"] = list(row.shape)
            d["bytes"], d["ratio"] = row.bytes, round(row.ratio, 4)
            rows.append(d)
        t = self.totals
        totals = {
            "layers": t.layers, "params": t.params, "bytes": t.bytes,
            "fp32_bytes": t.fp32_bytes, "ratio": round(t.ratio, 4),
            "layer_bytes": t.layer_bytes, "layer_fp32_bytes": t.layer_fp32_bytes,
            "other_bytes": t.other_bytes, "counts": dict(t.counts),
        }  # fmt: skip
        kernels = {"kernels": self.kernels} if self.kernels else {}
        return {"graph": self.graph, "layers": rows, "totals": totals, **kernels}

    def to_text(self, max_name: int = 56) -> str:
        """An aligned table, one layer a line, then the totals."""
        header = ("layer", "op", "output", "precision", "params", "bytes", "FP32 bytes", "ratio")
        body = [
            (
                _clip(row.name, max_name),
                row.kind,
                "[" + ",".join(map(str, row.shape)) + "]",
                row.precision,
                f"{row.params:,}",
                f"{row.bytes:,}",
                f"{row.fp32_bytes:,}",
                f"{row.ratio:.1f}×",
            )  # fmt: skip
            for row in self.layers
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        right = {4, 5, 6, 7}

        def line(cells) -> str:
            parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                     enumerate(zip(cells, widths))]  # fmt: skip
            return "  ".join(parts).rstrip()

        lines = [line(header), line(["-" * w for w in widths])]
        lines += [line(r) for r in body]
        t = self.totals
        counts = ", ".join(f"{n} {p}" for p, n in t.counts.items()) or "none"
        lines.append("")
        lines.append(f"{t.layers} layer(s): {counts}; {t.params:,} parameters")
        lines.append(
            f"layers {format_bytes(t.layer_bytes)} (FP32 {format_bytes(t.layer_fp32_bytes)}), "
            f"other constants {format_bytes(t.other_bytes)}"
        )
        lines.append(
            f"size {format_bytes(t.bytes)} vs FP32 {format_bytes(t.fp32_bytes)} "
            f"({t.ratio:.2f}× smaller)"
        )
        if self.kernels:
            lines.append(f"integer kernels: {self.kernels}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def format_bytes(n: int) -> str:
    """``n`` bytes in MB (10^6) from 0.1 MB up, else in kB or B."""
    if n >= 100_000:
        return f"{n / 1e6:.2f} MB"
    if n >= 1000:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def _clip(name: str, width: int) -> str:
    if len(name) <= width:
        return name
    return "…" + name[-(width - 1) :]


def payload_nbytes(value) -> int:
    """Bytes of a constant payload (an array, or an elided tensor's stored type)."""
    if isinstance(value, ElidedTensor):
        t = value.type
        return t.num_elements * t.dtype.numpy.itemsize
    return int(np.asarray(value).nbytes)


def constant_bytes(op: Op) -> int:
    """Every tensor attribute's payload bytes of a ``constant`` / ``qconstant`` op, as a
    model file stores them (``irc.derived_constants.stored_nbytes``)."""
    return sum(
        stored_nbytes(op, k, v)
        for k, v in op.attrs.items()
        if isinstance(v, (np.ndarray, ElidedTensor))
    )


def _producer(value: Value, kind: str) -> Op | None:
    """The ``kind`` op producing ``value``, or None."""
    op = value.producer
    return op if op is not None and op.kind == kind else None


def _constant_producer(value: Value) -> Op | None:
    """The constant or qconstant producing ``value``, or None."""
    op = value.producer
    return op if op is not None and has_trait(op.kind, "constant") else None


def _weight_source(op: Op) -> tuple[Op, str] | None:
    """The constant op holding ``op``'s weight and the layer's precision, or None."""
    if len(op.operands) < 2:
        return None
    weight = op.operands[1]
    if has_trait(op.kind, "integer-layer"):
        const = _producer(weight, "qconstant")
        precision = INT_PRECISION.get(weight.type.dtype.short)
        return (const, precision) if const is not None and precision else None
    const = _producer(weight, "constant")
    if const is None:
        cast = _producer(weight, "cast")
        const = _producer(cast.operands[0], "constant") if cast is not None else None
    if const is None:
        return None
    stored = tensor_value_type(const.attrs["value"]).dtype.short
    return const, FLOAT_PRECISION.get(stored, stored)


def _qconstant_bytes(op: Op, derived: set) -> int:
    """Stored payload bytes of a constant, and of a qconstant's scales, leaving out the
    ``derived`` payloads ((id(op), attribute) pairs)."""
    keys = ("value", "scales") if op.kind == "qconstant" else ("value",)
    return sum(stored_nbytes(op, k, op.attrs[k]) for k in keys if (id(op), k) not in derived)


def _layer_row(op: Op, const: Op, precision: str, counted: set[int], derived: set) -> LayerRow:
    def take(source: Op | None) -> int:
        if source is None or id(source) in counted:
            return 0
        counted.add(id(source))
        return _qconstant_bytes(source, derived)

    params = _elements(op.operands[1])
    weight_bytes = take(const)
    bias_bytes = bias_elems = requant = 0
    if len(op.operands) > 2:
        bias = op.operands[2]
        bias_elems = _elements(bias)
        bias_bytes = take(_constant_producer(bias))
    for extra in op.operands[3:]:
        requant += take(_constant_producer(extra))
    shape = tuple(op.results[0].type.shape)
    if op.attrs.get("layout", "nchw") != "nchw":  # in the model's own order, as FP32 layers
        shape = logical_shape(shape, op.attrs, op.label())
    return LayerRow(layer_name(op), op.kind, shape, precision, params, weight_bytes,
                    bias_bytes, requant, 4 * (params + bias_elems))  # fmt: skip


def _elements(value: Value) -> int:
    shape = value.type.shape
    return math.prod(d for d in shape if isinstance(d, int))


def model_report(graph: Graph) -> ModelReport:
    """The report of ``graph`` (any level; constants may be elided)."""
    rows: list[LayerRow] = []
    counted: set[int] = set()
    derived = derived_payloads(graph)
    for op in graph.ops:
        if not (has_trait(op.kind, "layer") or has_trait(op.kind, "integer-layer")):
            continue
        source = _weight_source(op)
        if source is not None:
            rows.append(_layer_row(op, *source, counted, derived))
    other = sum(
        constant_bytes(op)
        for op in graph.ops
        if has_trait(op.kind, "constant") and id(op) not in counted
    )
    counts = {p: n for p in PRECISIONS if (n := sum(r.precision == p for r in rows))}
    for row in rows:  # a precision outside PRECISIONS (an f64 weight) is still counted
        if row.precision not in PRECISIONS:
            counts[row.precision] = counts.get(row.precision, 0) + 1
    totals = ReportTotals(
        layers=len(rows),
        params=sum(r.params for r in rows),
        layer_bytes=sum(r.bytes for r in rows),
        layer_fp32_bytes=sum(r.fp32_bytes for r in rows),
        other_bytes=other,
        counts=counts,
    )
    return ModelReport(graph.name, rows, totals)


__all__ = ["LayerRow", "ModelReport", "ReportTotals", "format_bytes", "model_report"]
