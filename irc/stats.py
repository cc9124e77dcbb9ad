"""Per-layer statistics of a graph: output shape, parameter count and multiply-accumulates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from irc.ir import Graph, Op
from irc.opdef import has_trait


@dataclass(frozen=True)
class LayerStats:
    """One op's row: name, kind, output shape, parameters (constant operands), MACs."""

    name: str
    kind: str
    shape: tuple
    params: int
    macs: int


def _constant_bytes(op: Op) -> int:
    """Bytes a constant stores: its payload (packed bytes for packed weights)."""
    value = op.attrs["value"]
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    t = op.result.type
    return _numel(t.shape) * max(1, t.dtype.bits // 8)


def _numel(shape) -> int:
    """Element count with symbolic dims counted as 1 (per-sample figures)."""
    return math.prod(d if isinstance(d, int) else 1 for d in shape)


def op_macs(op: Op) -> int:
    """Multiply-accumulates of one op (linear layers only; other ops count 0)."""
    out = op.results[0].type.shape if op.results else ()
    if op.kind in ("conv2d", "qconv2d"):
        w = op.operands[1].type.shape
        return _numel(out) * w[1] * w[2] * w[3]
    if op.kind == "qgemm":
        return _numel(out) * op.operands[1].type.shape[1]
    if op.kind == "gemm":
        a = op.operands[0].type.shape
        k = a[0] if op.attrs["trans_a"] else a[1]
        return _numel(out) * (k if isinstance(k, int) else 1)
    if op.kind == "matmul":
        k = op.operands[0].type.shape[-1]
        return _numel(out) * (k if isinstance(k, int) else 1)
    return 0


def layer_stats(graph: Graph) -> list[LayerStats]:
    """A row per non-constant op; constants count as parameters of the ops that use them
    (a quantized layer's requantization multipliers and shifts are not parameters)."""
    rows = []
    for op in graph.ops:
        if has_trait(op.kind, "constant"):
            continue
        operands = op.operands[:3] if has_trait(op.kind, "integer-layer") else op.operands
        params = sum(
            _numel(v.type.shape)
            for v in operands
            if v.producer is not None and has_trait(v.producer.kind, "constant")
        )
        shape = op.results[0].type.shape if op.results else ()
        rows.append(LayerStats(op.name or op.results[0].name, op.kind, shape, params, op_macs(op)))
    return rows


def format_stats(graph: Graph) -> str:
    """The per-layer table with totals, as printed by ``irc dump --stats``."""
    rows = layer_stats(graph)
    headers = ("#", "layer", "op", "output shape", "params", "MACs")
    body = [
        (
            str(i),
            r.name,
            r.kind,
            "[" + ",".join(str(d) for d in r.shape) + "]",
            f"{r.params:,}",
            f"{r.macs:,}",
        )
        for i, r in enumerate(rows)
    ]
    widths = [
        max(len(h), *(len(b[k]) for b in body)) if body else len(h) for k, h in enumerate(headers)
    ]
    right = {0, 4, 5}

    def line(cells):
        return "  ".join(
            c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])] + [line(b) for b in body]
    params = sum(r.params for r in rows)
    macs = sum(r.macs for r in rows)
    weight_bytes = sum(_constant_bytes(op) for op in graph.ops if has_trait(op.kind, "constant"))
    out.append("")
    out.append(
        f"total: {len(rows)} ops, {params:,} params ({weight_bytes / 1e6:.2f} MB "
        f"of constants), {macs:,} MACs ({2 * macs / 1e9:.3f} GFLOP)"
    )
    if any(not v.type.is_static for v in graph.inputs):
        out.append("note: symbolic dimensions count as 1 (figures are per sample)")
    return "\n".join(out)
