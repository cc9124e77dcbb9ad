"""The canonical text form of the irc IR; ``irc.parser`` is its exact inverse.

    graph @main(%x: f32[N,3,224,224]) {
      %w = constant() {value=dense<0x0000803F…>} : f32[8,3,3,3]
      %y = conv2d(%x, %w) {pads=[1,1,1,1]} : f32[N,8,224,224] loc("conv_1")
      return %y
    }

One op a line: results, kind, operands, attributes that differ from their default (in
op-table order), result types, and the source node name. Constants with more than
``elide_above`` elements print as ``dense<...>`` unless ``full`` is set; a graph printed in
full parses back to a graph that runs.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from irc.ir import Graph, Op
from irc.opdef import OPS
from irc.tensor import ElidedTensor
from irc.types import QuantParams, TensorType

DEFAULT_ELIDE_ABOVE = 8
_BARE_NAME = re.compile(r"^[A-Za-z0-9_.$-]+$")


def format_name(name: str) -> str:
    """``%name``, quoted when it holds characters outside [A-Za-z0-9_.$-]."""
    if _BARE_NAME.match(name):
        return "%" + name
    return "%" + json.dumps(name)


def format_float(x: float) -> str:
    """A float that reads back exactly: shortest repr, ``inf``, ``-inf`` or ``nan``."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


def format_quant(q: QuantParams) -> str:
    """The ``<…>`` part of a quantized type."""
    if q.axis is None:
        return f"<{format_float(q.scales[0])}:{q.zero_points[0]}>"
    if q.elided:
        return f"<axis={q.axis}: ...{q.count}>"
    pairs = ", ".join(f"{format_float(s)}:{z}" for s, z in zip(q.scales, q.zero_points))
    return f"<axis={q.axis}: {pairs}>"


def format_type(t: TensorType, elide_above: int | None = None) -> str:
    """``f32[1,3,224,224]``, ``qi8<0.02:-4>[1,16]``, ``f32[N,1000]``; more per-axis scales
    than ``elide_above`` print as ``<axis=0: ...16>`` (a dump without full constants)."""
    dims = ",".join(str(d) for d in t.shape)
    if t.quant is None:
        return f"{t.dtype.short}[{dims}]"
    elide = elide_above is not None and t.quant.count > elide_above
    quant = t.quant.elide() if elide else t.quant
    return f"q{t.dtype.short}{format_quant(quant)}[{dims}]"


def format_tensor(value, full: bool, elide_above: int) -> str:
    """A constant payload: decimal list, hex bytes, or ``...`` when elided."""
    if isinstance(value, ElidedTensor):
        return "dense<...>"
    array = np.asarray(value)
    if array.size <= elide_above:
        flat = array.reshape(-1)
        if array.dtype.kind == "f":
            # numpy prints a float32/float16 scalar as the shortest text that reads back to
            # the same value in that type, which is shorter than the float64 expansion
            items = [format_float(v) if array.dtype == np.float64 else str(v) for v in flat]
        elif array.dtype.kind == "b":
            items = ["true" if v else "false" for v in flat.tolist()]
        else:
            items = [str(int(v)) for v in flat.tolist()]
        return "dense<[" + ",".join(items) + "]>"
    if not full:
        return "dense<...>"
    return (
        "dense<0x"
        + np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes().hex().upper()
        + ">"
    )


def format_attr(value, full: bool, elide_above: int) -> str:
    """One attribute value in text form."""
    if isinstance(value, (np.ndarray, ElidedTensor)):
        return format_tensor(value, full, elide_above)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, (bool, int, np.integer)):
        return str(int(value))
    if isinstance(value, tuple):
        items = [format_float(v) if isinstance(v, float) else str(int(v)) for v in value]
        return "[" + ",".join(items) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


def format_op(op: Op, full: bool = False, elide_above: int = DEFAULT_ELIDE_ABOVE) -> str:
    """One op line, without indentation."""
    spec = OPS.get(op.kind)
    shown = []
    for key, value in op.attrs.items():
        default = spec.attrs[key].default if spec and key in spec.attrs else None
        if spec is not None and _same_attr(value, default):
            continue
        shown.append(f"{key}={format_attr(value, full, elide_above)}")
    text = ", ".join(format_name(r.name) for r in op.results)
    text += f" = {op.kind}(" + ", ".join(format_name(o.name) for o in op.operands) + ")"
    if shown:
        text += " {" + ", ".join(shown) + "}"
    text += " : " + ", ".join(
        format_type(r.type, None if full else elide_above) for r in op.results
    )
    if op.name:
        text += f" loc({json.dumps(op.name)})"
    return text


def _same_attr(value, default) -> bool:
    if isinstance(value, (np.ndarray, ElidedTensor)) or isinstance(default, np.ndarray):
        return False
    if isinstance(value, float) and isinstance(default, float):
        return value == default or (math.isnan(value) and math.isnan(default))
    return type(value) is type(default) and value == default


def print_graph(graph: Graph, full: bool = False, elide_above: int = DEFAULT_ELIDE_ABOVE) -> str:
    """The whole graph in text form (ends with a newline)."""
    args = ", ".join(
        f"{format_name(v.name)}: {format_type(v.type, None if full else elide_above)}"
        for v in graph.inputs
    )
    lines = [f"graph @{_graph_name(graph.name)}({args}) {{"]
    lines += ["  " + format_op(op, full, elide_above) for op in graph.ops]
    lines.append("  return " + ", ".join(format_name(v.name) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graph_name(name: str) -> str:
    return name if _BARE_NAME.match(name or "") else json.dumps(name or "")
