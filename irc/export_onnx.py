"""Export a compiled (mixed-precision) model as standard ONNX in QDQ form.

    >>> model = irc.compile("model.onnx", precision=plan, calibration=data)
    >>> proto = model.export_onnx("model.qdq.onnx")     # or export_onnx(model, None)

    $ irc export model.ircm -o model.onnx                # a saved compiled model file

The compiled graph (any level: L1, L2 or the final L3; channels-last layers put back in
ONNX's NCHW by the ``channels-first`` pass) is written op by op, every integer
in it exactly as irc stores it:

- **INT8 / INT4 / INT2 layer** (qconv2d, qgemm): the weight is an INT8 or INT4
  initializer holding irc's levels (INT2's odd levels -3..3 as INT4: ONNX's INT2 holds
  [-2, 1] only), read through a per-output-channel DequantizeLinear
  (axis 0, irc's scales, zero points 0 of the weight's type); the bias is the int32 irc
  adds, through a DequantizeLinear at scale s_x·s_w[c]; the input is the DequantizeLinear
  of the int8 activation; then the float Conv / Gemm, the fused activation (Relu, Clip) and
  a QuantizeLinear to the layer's output scale and zero point. irc's fixed-point
  multipliers are not written: Q(Conv(DQ…)) is what they implement.
- **integer glue** (qadd, qglobal_avg_pool, qconcat) and int8 values that only move or
  are selected (a reshape, max pool or nearest resize of qi8): DequantizeLinear → Add /
  GlobalAveragePool / Concat / Reshape / MaxPool / Resize → QuantizeLinear.
- **lookup tables** (qlut): DequantizeLinear → the table's float function (Sigmoid, Tanh,
  HardSigmoid, HardSwish, Gelu, or Sigmoid and Mul for SiLU) → QuantizeLinear; where
  onnxruntime's float function rounds otherwise than irc's, a level may differ by one.
- **boundaries**: irc's quantize / dequantize become QuantizeLinear / DequantizeLinear.
- **FP16 layer**: a FLOAT16 weight initializer and a Cast to float; **FP32**: unchanged.

Activations between layers are stored as UINT8 by default: irc's int8 levels + 128 at
zero points + 128, the very same real values. That is the form onnxruntime fuses
everywhere on x86; with INT8 activations (``activations="int8"``) it leaves every layer
that touches a residual branch in float.

The opset is 21 (the first with INT4 in DequantizeLinear). Tensor names are irc's value
names (``.dq`` marks a dequantized twin), the inputs and outputs keep the model's names,
and each layer's node carries its precision in its doc string (all of them in the
``irc.precision`` metadata entry).

onnxruntime 1.32 runs INT8 layers fused into its integer kernels (QLinearConv, QGemm,
QLinearAdd, QLinearGlobalAveragePool). On x86 CPUs without VNNI its u8×s8 kernels add
product pairs in saturating int16 (its documented ``reduce_range`` caveat), which corrupts
layers with large weights and inputs; ``int8_weights="uint8"`` stores the INT8 weights
as UINT8 (levels + 128, zero point 128, same reals), which its u8×u8 kernels compute
exactly. INT4 weights (and INT2, stored as INT4) are dequantized and their layers run in
float (same results, float speed).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irc import quant
from irc.errors import IrcError
from irc.export_onnx_ops import CONVERTERS, ONNX_DTYPES, convert_float
from irc.ir import Graph, Value
from irc.opdef import has_trait
from irc.passes.layout import channels_first
from irc.precision import layer_name
from irc.report import model_report
from irc.types import DType
from irc.version import __version__

OPSET = 21  # DequantizeLinear of INT4 (ONNX 1.16)
# integer ops written as their float kind between DequantizeLinear and QuantizeLinear
FLOAT_TWINS = {"qconv2d": "conv2d", "qgemm": "gemm", "qadd": "add",
               "qglobal_avg_pool": "global_avg_pool", "qconcat": "concat"}  # fmt: skip
TWIN_ATTRS = {"qgemm": {"alpha": 1.0, "beta": 1.0, "trans_a": 0, "trans_b": 1}}
LAYER_OPERANDS = 3  # x, w, bias: qconv2d / qgemm's multiplier and shift are irc's own
STORAGE_TYPES = ("uint8", "int8")  # how int8 activations / INT8 weights are stored


class ExportError(IrcError):
    """The graph holds an op, or a form of one, that has no ONNX export."""


def export_onnx(model, path=None, *, activations: str = "uint8",
                int8_weights: str = "int8") -> onnx.ModelProto:  # fmt: skip
    """The ONNX QDQ model of ``model`` (a ``CompiledModel`` or a Graph); also written to
    ``path`` when given. The result passes ``onnx.checker.check_model(full_check=True)``.

    ``activations`` and ``int8_weights`` say how int8 activations and INT8 weights are
    stored: "int8" (irc's levels), or "uint8" (levels + 128 at zero points + 128, the same
    reals). INT2 weights are stored as INT4 initializers (see the module docstring).
    """
    for what, given in (("activations", activations), ("int8_weights", int8_weights)):
        if given not in STORAGE_TYPES:
            raise ExportError(f"{what} must be one of {', '.join(STORAGE_TYPES)}, not {given!r}")
    graph = channels_first(model if isinstance(model, Graph) else model.graph)
    try:
        proto = _Exporter(graph, activations == "uint8", int8_weights == "uint8").build()
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"the exported model of @{graph.name} is invalid ONNX: {first}") from e
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


def _levels(op) -> np.ndarray:
    """A qconstant's levels, unpacked when irc stores them packed (int8 or int32)."""
    value = op.attrs["value"]
    if not isinstance(value, np.ndarray):
        raise ExportError(f"{op.label()} has no data (a graph parsed from an elided dump)")
    if op.attrs["packed"]:
        return quant.unpack(value, int(op.attrs["dtype"][1:]), op.attrs["shape"])
    return value.reshape(op.attrs["shape"])


def _storage_dtype(dtype) -> np.dtype:
    """The numpy dtype an ONNX initializer of irc DType ``dtype`` is built from (ml_dtypes'
    int4 for the sub-byte types, so that onnx packs them). irc's INT2 levels are the odd
    -3..3, which ONNX's INT2 ([-2, 1]) cannot hold and no integer zero point shifts to:
    they are stored as INT4, the same levels and scales."""
    dtype = DType.I4 if dtype == DType.I2 else dtype
    return np.dtype(helper.tensor_dtype_to_np_dtype(ONNX_DTYPES[dtype]))


class _Exporter:
    """Walks the graph once, emitting nodes; constants become initializers when first read."""

    def __init__(self, graph: Graph, unsigned: bool, unsigned_weights: bool):
        self.graph, self.unsigned, self.unsigned_weights = graph, unsigned, unsigned_weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.taken = {v.name for v in graph.values()}  # irc's names are reserved up front
        self.node_names: set[str] = set()
        self.named: set[int] = set()  # ops whose first node is emitted (and named after them)
        self.stored: dict[int, str] = {id(v): v.name for v in graph.inputs}
        self.dequantized: dict[int, str] = {}  # id(quantized value) -> its float twin
        self.params: dict[int, tuple[str, str]] = {}  # id(quantized value) -> scale, zp
        self.constants = {
            id(op.results[0]): op for op in graph.ops if has_trait(op.kind, "constant")
        }
        self.precisions = {row.name: row.precision for row in model_report(graph).layers}

    # -- names, initializers, nodes
    def fresh(self, hint: str) -> str:
        """An ONNX value name not used yet, derived from ``hint``."""
        name, i = hint, 0
        while name in self.taken:
            i += 1
            name = f"{hint}.{i}"
        self.taken.add(name)
        return name

    def const(self, hint: str, array: np.ndarray, exact: bool = False) -> str:
        """A new initializer holding ``array``; its name (``hint`` itself when ``exact``)."""
        name = hint if exact else self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs, outputs, op=None, **attrs) -> None:
        """Append a node; the first one of irc op ``op`` is named after its layer."""
        if op is None:
            hint = outputs[0]
        elif id(op) in self.named:
            hint = f"{layer_name(op)}/{op_type}"
        else:
            hint = layer_name(op)
        name, i = hint, 0
        while name in self.node_names:
            i += 1
            name = f"{hint}.{i}"
        self.node_names.add(name)
        node = helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs)
        if op is not None and id(op) not in self.named:
            self.named.add(id(op))
            precision = self.precisions.get(layer_name(op))
            if precision is not None and (has_trait(op.kind, "layer")
                                          or has_trait(op.kind, "integer-layer")):  # fmt: skip
                node.doc_string = f"irc layer {layer_name(op)}: {precision}"
        self.nodes.append(node)

    # -- values
    def stored_of(self, value: Value) -> str:
        """The ONNX name of ``value`` as irc stores it (int8 levels for a quantized one)."""
        name = self.stored.get(id(value))
        if name is not None:
            return name
        op = self.constants.get(id(value))
        if op is None:
            raise ExportError(f"value %{value.name} is read before it is defined")
        if op.kind == "constant":
            array = op.attrs["value"]
            if not isinstance(array, np.ndarray):
                raise ExportError(f"{op.label()} has no data (a graph parsed from an elided dump)")
        else:
            array = _levels(op)
            if self.shifted(value):
                array = (array.astype(np.int16) + 128).astype(np.uint8)
            else:
                array = array.astype(_storage_dtype(value.type.dtype))
        self.stored[id(value)] = self.const(value.name, array, exact=True)
        return value.name

    def float_of(self, value: Value) -> str:
        """The ONNX name of ``value``'s real values: a DequantizeLinear of a quantized one."""
        if value.type.quant is None:
            return self.stored_of(value)
        name = self.dequantized.get(id(value))
        if name is None:
            name = self.fresh(f"{value.name}.dq")
            self._dequantize(value, name)
        return name

    def _dequantize(self, value: Value, out: str, op=None) -> None:
        scale, zero_point = self.quant_params(value)
        axis = value.type.quant.axis
        extra = {} if axis is None else {"axis": axis}
        self.node("DequantizeLinear", [self.stored_of(value), scale, zero_point], [out], op,
                  **extra)  # fmt: skip
        self.dequantized.setdefault(id(value), out)

    def shifted(self, value: Value) -> bool:
        """Whether int8 ``value`` is stored as uint8: levels + 128 at zero points + 128."""
        if value.type.dtype != DType.I8 or value.type.quant is None:
            return False
        if id(value) in self.constants:
            return self.unsigned_weights
        return self.unsigned and value.producer is not None and value.type.quant.axis is None

    def stored_name(self, result: Value) -> str:
        """The ONNX name an op's result is stored under: its own, but for a graph output
        stored as uint8, which gets converted back to irc's int8 under its name."""
        if self.shifted(result) and any(result is v for v in self.graph.outputs):
            return self.fresh(f"{result.name}.u8")
        return result.name

    def quant_params(self, value: Value) -> tuple[str, str]:
        """Initializers of ``value``'s scale(s) and zero point(s), made once per value."""
        found = self.params.get(id(value))
        if found is None:
            q = value.type.quant
            if q.elided:
                raise ExportError(f"value %{value.name} has elided quantization scales")
            shape = () if q.axis is None else (len(q.scales),)
            scale = np.asarray(q.scales, np.float32).reshape(shape)
            zero_point = np.asarray(q.zero_points).reshape(shape)
            if self.shifted(value):
                zero_point = (zero_point + 128).astype(np.uint8)
            else:
                zero_point = zero_point.astype(_storage_dtype(value.type.dtype))
            found = (self.const(f"{value.name}.scale", scale),
                     self.const(f"{value.name}.zero_point", zero_point))  # fmt: skip
            self.params[id(value)] = found
        return found

    # -- ops
    def emit(self, op) -> None:
        if has_trait(op.kind, "constant"):
            return  # an initializer once something reads it
        if len(op.results) != 1:
            raise ExportError(f"{op.label()}: ops with {len(op.results)} results do not export")
        result = op.results[0]
        name = self.stored_name(result) if result.type.quant is not None else result.name
        if op.kind == "quantize":
            scale, zero_point = self.quant_params(result)
            inputs = [self.float_of(op.operands[0]), scale, zero_point]
            self.node("QuantizeLinear", inputs, [name], op)
        elif op.kind == "dequantize":
            self._dequantize(op.operands[0], result.name, op)
        elif (op.kind in FLOAT_TWINS or op.kind == "qlut"
              or (op.kind in CONVERTERS and result.type.quant is not None)):  # fmt: skip
            # an integer op, or int8 values that only move (a reshape of qi8): the float op
            # between DequantizeLinear and QuantizeLinear, as onnxruntime's fusions expect
            layer = has_trait(op.kind, "integer-layer")
            inputs = [self.float_of(v) for v in op.operands[: LAYER_OPERANDS if layer else None]]
            base = result.name.removesuffix(".q")
            out = self.fresh(base if base not in self.taken else f"{base}.float")
            attrs = {**TWIN_ATTRS.get(op.kind, {}), **_attrs(op)}
            convert_float(self, op, _float_kind(op), attrs, inputs, out)
            scale, zero_point = self.quant_params(result)
            self.node("QuantizeLinear", [out, scale, zero_point], [name], op)
        elif op.kind in CONVERTERS:
            inputs = [self.float_of(v) for v in op.operands]
            convert_float(self, op, op.kind, _attrs(op), inputs, result.name)
        else:
            supported = sorted({*CONVERTERS, *FLOAT_TWINS, "qlut", "quantize", "dequantize"})
            raise ExportError(f"{op.label()} ({op.kind}) has no ONNX export; supported: "
                              + ", ".join(supported))  # fmt: skip
        self.stored[id(result)] = name

    def _back_to_int8(self, value: Value) -> str:
        """A uint8-stored graph output as irc's int8 levels, under its own name."""
        q = value.type.quant
        scale = self.const(f"{value.name}.scale", np.float32(q.scales[0]))
        zero_point = self.const(f"{value.name}.zero_point", np.int8(q.zero_points[0]))
        self.node("QuantizeLinear", [self.float_of(value), scale, zero_point], [value.name])
        return value.name

    def build(self) -> onnx.ModelProto:
        graph = self.graph
        for op in graph.ops:
            self.emit(op)
        outputs, seen = [], set()
        for value in graph.outputs:
            name = self.stored_of(value)
            if name != value.name and self.shifted(value) and value.name not in seen:
                name = self._back_to_int8(value)
            if name in seen:  # one value returned twice: ONNX names each output once
                alias = self.fresh(f"{value.name}.out")
                self.node("Identity", [name], [alias])
                name = alias
            seen.add(name)
            outputs.append(_value_info(name, value))
        opset = OPSET
        body = helper.make_graph(
            self.nodes, graph.name, [_value_info(v.name, v) for v in graph.inputs], outputs,
            self.initializers, doc_string="exported by irc (QDQ form)",
        )  # fmt: skip
        opsets = [helper.make_opsetid("", opset)]
        proto = helper.make_model(body, opset_imports=opsets,
                                  ir_version=helper.find_min_ir_version_for(opsets))  # fmt: skip
        proto.producer_name, proto.producer_version = "irc", __version__
        helper.set_model_props(proto, {"irc.precision": json.dumps(self.precisions)})
        # types of every intermediate value, so that viewers (Netron) show shapes
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def _float_kind(op) -> str:
    """The float op an integer op is exported as (a qlut: its table's function)."""
    if op.kind == "qlut":
        return op.attrs["function"]
    return FLOAT_TWINS.get(op.kind, op.kind)


def _attrs(op) -> dict:
    """``op``'s attributes without the decision's annotations (``note_*``)."""
    return {k: v for k, v in op.attrs.items() if not k.startswith("note_")}


def _value_info(name: str, value: Value) -> onnx.ValueInfoProto:
    shape = [d if isinstance(d, str) else int(d) for d in value.type.shape]
    return helper.make_tensor_value_info(name, ONNX_DTYPES[value.type.dtype], shape)


__all__ = ["OPSET", "STORAGE_TYPES", "ExportError", "export_onnx"]
