"""The sensitivity table: layer × candidate precision → metrics, shared by every strategy.

Metrics (one array [layers, precisions] each; fp32 is the reference and is not a column):

- ``sqnr`` (dB), ``mse``: QuantuneV2's local metrics, the layer's own output at that
  precision against FP32, both computed from the same float input;
- ``sqnr_delta`` (dB): QuantuneV2's SQNR-delta, from one run with *every* layer at that
  precision: the SQNR of the layer's input minus that of its output (what the layer adds
  to the noise it was given);
- ``norm_error``: the profiling paper's ‖Y_fp − Y_q‖₂ / N (per sample, N the output size);
- ``omega``: AMPQ/SALS's Ω = E[(L(W) − L(W + ΔW))²] with only that layer quantized, L the
  per-sample cross-entropy when labels are given, else ``output_nsr``;
- ``output_nsr``: the model output's noise-to-signal power ratio with only that layer
  quantized (noise powers of independent layers add, so irc's ``auto`` predicts a plan's
  output SQNR as −10·log10 of their sum).

A table measured under ``rounding="best"`` (``irc.decision.rounding``) also holds, per
layer and precision, the weight rounding whose metrics it keeps (``nearest`` / ``gptq``).

``activations`` ([layers, 2], or None for a table measured without it) is, per layer, the
model output's noise-to-signal ratio with only the layer's input (column 0) or only its
output (column 1) rounded to int8 at its calibrated range, the layer itself exact: what
a float layer among integer ones still pays, since its neighbours read and write int8
(``irc.decision.planning``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np

from irc.errors import InputError

METRICS = ("sqnr", "mse", "sqnr_delta", "norm_error", "omega", "output_nsr")
CANDIDATES = ("fp16", "int8", "int4", "int2")  # the precisions measured (fp32 is the reference)
ACTIVATION_COLUMNS = ("act_in_nsr", "act_out_nsr")  # ``activations`` in a CSV file


@dataclass(frozen=True)
class LayerInfo:
    """What the strategies know of a layer besides its metrics."""

    name: str
    kind: str  # conv2d | gemm
    weight_shape: tuple[int, ...]
    output_shape: tuple[int, ...]  # per sample (batch dimension dropped)
    macs: int  # multiply-accumulates per sample
    depthwise: bool = False

    @property
    def params(self) -> int:
        """Weights in the layer (bias excluded)."""
        return int(np.prod(self.weight_shape))

    @property
    def out_channels(self) -> int:
        """Output channels (rows of per-channel scales)."""
        return int(self.weight_shape[0])


@dataclass
class SensitivityTable:
    """Per layer and candidate precision, every metric of the module docstring."""

    layers: list[LayerInfo]
    precisions: tuple[str, ...]
    metrics: dict[str, np.ndarray]
    images: int = 0
    loss: str = "output"  # "cross-entropy" when labels were given
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    rounding: np.ndarray | None = None  # [layers, precisions] of "nearest" / "gptq", or None
    activations: np.ndarray | None = None  # [layers, 2]: input, output rounded alone

    def __post_init__(self):
        shape = (len(self.layers), len(self.precisions))
        for name, values in self.metrics.items():
            if values.shape != shape:
                raise ValueError(f"metric {name} has shape {values.shape}")
        if self.rounding is not None and self.rounding.shape != shape:
            raise ValueError(f"rounding has shape {self.rounding.shape}")
        if self.activations is not None and self.activations.shape != (len(self.layers), 2):
            raise ValueError(f"activations has shape {self.activations.shape}")

    @property
    def names(self) -> list[str]:
        """Layer names, in graph order."""
        return [layer.name for layer in self.layers]

    def index(self, name: str) -> int:
        """The row of layer ``name``."""
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(f"layer {name!r} is not in the sensitivity table")

    def get(self, metric: str, layer: str, precision: str) -> float:
        """One entry (fp32 gives the metric's value at no error)."""
        if precision == "fp32":
            return _AT_REFERENCE[metric]
        return float(self.metrics[metric][self.index(layer), self.precisions.index(precision)])

    def column(self, metric: str, precision: str) -> np.ndarray:
        """The metric for every layer at ``precision``."""
        if precision == "fp32":
            return np.full(len(self.layers), _AT_REFERENCE[metric])
        return self.metrics[metric][:, self.precisions.index(precision)]

    def rounding_of(self, layer: str, precision: str) -> str | None:
        """The weight rounding chosen for ``layer`` at ``precision`` (None when the table
        chose none: the calibration's statistics decide, as for every layer)."""
        if self.rounding is None or precision not in self.precisions:
            return None
        return str(self.rounding[self.index(layer), self.precisions.index(precision)])

    # -- files
    def rows(self) -> list[dict]:
        """One dict per (layer, precision): layer facts and every metric."""
        out = []
        for i, layer in enumerate(self.layers):
            for j, p in enumerate(self.precisions):
                row = {"layer": layer.name, "kind": layer.kind, "params": layer.params,
                       "macs": layer.macs, "precision": p}  # fmt: skip
                row.update({m: float(v[i, j]) for m, v in self.metrics.items()})
                if self.rounding is not None:
                    row["rounding"] = str(self.rounding[i, j])
                if self.activations is not None:
                    row.update(zip(ACTIVATION_COLUMNS, map(float, self.activations[i])))
                out.append(row)
        return out

    def to_csv(self) -> str:
        """The table as CSV text, one line per (layer, precision)."""
        rows = self.rows()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["layer"])
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_dict(self) -> dict:
        """A JSON-ready dict (``from_dict`` reads it back)."""
        out = {
            "precisions": list(self.precisions),
            "images": self.images,
            "loss": self.loss,
            "seconds": self.seconds,
            "layers": [
                {
                    "name": x.name,
                    "kind": x.kind,
                    "weight_shape": list(x.weight_shape),
                    "output_shape": list(x.output_shape),
                    "macs": x.macs,
                    "depthwise": x.depthwise,
                }  # fmt: skip
                for x in self.layers
            ],
            "metrics": {
                m: [[_json_float(v) for v in row] for row in a.tolist()]
                for m, a in self.metrics.items()
            },  # fmt: skip
        }
        if self.rounding is not None:
            out["rounding"] = self.rounding.tolist()
        if self.activations is not None:
            out["activations"] = [[_json_float(v) for v in row]
                                  for row in self.activations.tolist()]  # fmt: skip
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SensitivityTable:
        """The table ``to_dict`` wrote."""
        layers = [
            LayerInfo(
                x["name"],
                x["kind"],
                tuple(x["weight_shape"]),
                tuple(x["output_shape"]),
                int(x["macs"]),
                bool(x.get("depthwise", False)),
            )  # fmt: skip
            for x in data["layers"]
        ]
        metrics = {m: np.array(v, dtype=np.float64).reshape(len(layers), -1)
                   for m, v in data["metrics"].items()}  # fmt: skip
        rounding = data.get("rounding")
        if rounding is not None:
            rounding = np.array(rounding, dtype=object)
        activations = data.get("activations")
        if activations is not None:
            activations = np.array(activations, dtype=np.float64).reshape(len(layers), 2)
        return cls(layers, tuple(data["precisions"]), metrics, int(data.get("images", 0)),
                   data.get("loss", "output"), float(data.get("seconds", 0.0)),
                   rounding=rounding, activations=activations)  # fmt: skip

    def save(self, path) -> None:
        """Write ``.csv`` or ``.json`` (by the file's suffix)."""
        text = self.to_csv() if str(path).endswith(".csv") else json.dumps(self.to_dict())
        with open(path, "w") as f:
            f.write(text)


def read_table(path, layers: list[LayerInfo]) -> SensitivityTable:
    """The table ``save`` wrote to ``path``, checked against ``layers`` (the model's, in
    graph order): InputError naming the file, and the first layer that differs, when it is
    unreadable or of another model. A ``.csv`` keeps no shapes: ``layers`` give them, its
    kinds, parameter and MAC counts are compared."""
    try:
        with open(path) as f:
            text = f.read()
        if str(path).endswith(".csv"):
            table = _from_rows(list(csv.DictReader(io.StringIO(text))), layers, path)
        else:
            table = SensitivityTable.from_dict(json.loads(text))
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise InputError(f"--sensitivity: cannot read the table '{path}': {e}") from None
    problem = mismatch(table, layers)
    if problem:
        raise InputError(f"--sensitivity: '{path}' is the table of another model: {problem}")
    return table


def mismatch(table: SensitivityTable, layers: list[LayerInfo]) -> str | None:
    """How ``table`` differs from a table of ``layers`` (the first differing layer, or the
    precisions), or None when it is one of them."""
    for i, layer in enumerate(layers):
        if i >= len(table.layers):
            return f"it has no layer '{layer.name}'"
        if table.layers[i] != layer:
            return (
                f"layer {i} is '{table.layers[i].name}' {_facts(table.layers[i])}, the "
                f"model's '{layer.name}' {_facts(layer)}"
            )
    if len(table.layers) > len(layers):
        return f"it has a layer '{table.layers[len(layers)].name}' the model has not"
    missing = [p for p in CANDIDATES if p not in table.precisions]
    return f"it has no column for {', '.join(missing)}" if missing else None


def _facts(layer: LayerInfo) -> str:
    return f"({layer.kind}, weight {list(layer.weight_shape)}, output {list(layer.output_shape)})"


def _from_rows(rows: list[dict], layers: list[LayerInfo], path) -> SensitivityTable:
    """A table from ``to_csv``'s rows, its layer facts taken from ``layers`` after its
    names, kinds, parameter and MAC counts are checked against them."""
    names = list(dict.fromkeys(r["layer"] for r in rows))
    precisions = tuple(dict.fromkeys(r["precision"] for r in rows))
    by_name = {x.name: x for x in layers}
    for i, name in enumerate(names):
        x = by_name.get(name)
        row = next(r for r in rows if r["layer"] == name)
        if x is None or i >= len(layers) or layers[i].name != name:
            raise InputError(
                f"--sensitivity: '{path}' is the table of another model: its layer {i} "
                f"'{name}' is not the model's layer {i}"
            )
        if (row["kind"], int(row["params"]), int(row["macs"])) != (x.kind, x.params, x.macs):
            raise InputError(
                f"--sensitivity: '{path}' is the table of another model: layer '{name}' is "
                f"{row['kind']} with {row['params']} parameters, the model's {x.kind} with "
                f"{x.params}"
            )
    metrics = [m for m in METRICS if rows and m in rows[0]]
    cell = {(r["layer"], r["precision"]): r for r in rows}
    values = {m: np.array([[float(cell[n, p][m]) for p in precisions] for n in names])
              for m in metrics}  # fmt: skip
    rounding = None
    if rows and rows[0].get("rounding"):
        rounding = np.array([[cell[n, p]["rounding"] for p in precisions] for n in names],
                            dtype=object)  # fmt: skip
    activations = None
    if rows and all(c in rows[0] for c in ACTIVATION_COLUMNS):
        first = {n: cell[n, precisions[0]] for n in names}
        activations = np.array([[float(first[n][c]) for c in ACTIVATION_COLUMNS]
                                for n in names])  # fmt: skip
    chosen = [by_name[n] for n in names]
    return SensitivityTable(chosen, precisions, values, rounding=rounding,
                            activations=activations)  # fmt: skip


_AT_REFERENCE = {"sqnr": math.inf, "mse": 0.0, "sqnr_delta": 0.0, "norm_error": 0.0,
                 "omega": 0.0, "output_nsr": 0.0}  # fmt: skip


def _json_float(v: float):
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
