"""The float half of ONNX export: one ONNX node (or a few) per irc float op kind.

Each converter receives the exporter (``irc.export_onnx``), the irc op, its attributes (an
integer layer's as its float kind's), the ONNX names of its operands and the ONNX name its
result must get. Attributes follow the ONNX spellings
of opset 21 (``irc.export_onnx.OPSET``); where ONNX takes an attribute-like operand as an
input (Reshape's shape, Slice's bounds, Clip's limits, …) it becomes a small initializer.
A fused activation (conv2d, gemm, add and their integer twins) becomes its own node after
the compute node: ``Relu``, ``Clip`` or ``HardSwish``. A ``qlut``'s function is its float
activation (``LUT_CONVERTERS`` adds SiLU, a Sigmoid and a Mul).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from irc.types import DType

ONNX_DTYPES = {
    DType.F64: TensorProto.DOUBLE, DType.F32: TensorProto.FLOAT, DType.F16: TensorProto.FLOAT16,
    DType.I64: TensorProto.INT64, DType.I32: TensorProto.INT32, DType.I16: TensorProto.INT16,
    DType.I8: TensorProto.INT8, DType.U64: TensorProto.UINT64, DType.U32: TensorProto.UINT32,
    DType.U16: TensorProto.UINT16, DType.U8: TensorProto.UINT8, DType.I4: TensorProto.INT4,
    DType.U4: TensorProto.UINT4, DType.I2: TensorProto.INT2, DType.U2: TensorProto.UINT2,
    DType.BOOL: TensorProto.BOOL,
}  # fmt: skip


def _ints(values) -> np.ndarray:
    return np.asarray(list(values), np.int64)


def _scalar_like(op, value: float) -> np.ndarray:
    """``value`` in the element type ``op`` computes in (Clip's and Pad's scalars need it):
    its result's, or f32 where the result is quantized (the op runs on dequantized reals)."""
    t = op.results[0].type
    return np.asarray(value, np.float32 if t.quant is not None else t.dtype.numpy)


def _simple(op_type: str, **fixed):
    """A converter to one ONNX node with ``fixed`` attributes (names as in ONNX)."""

    def convert(ex, op, a, ins, out):
        ex.node(op_type, ins, [out], op, **fixed)

    return convert


def _renamed(op_type: str, names: dict[str, str]):
    """A converter to one node whose ONNX attributes are irc attributes under new names."""

    def convert(ex, op, a, ins, out):
        ex.node(op_type, ins, [out], op, **{names[k]: a[k] for k in names})

    return convert


def _clip(ex, op, a, ins, out):
    _clip_node(ex, op, ins[0], out, a["min"], a["max"])


def _clip_node(ex, op, x: str, out: str, lo: float, hi: float) -> None:
    limits = [
        ex.const(f"{out}.{what}", _scalar_like(op, v)) if math.isfinite(v) else ""
        for what, v in (("min", lo), ("max", hi))
    ]
    while limits and limits[-1] == "":
        limits.pop()
    ex.node("Clip", [x, *limits], [out], op)


def _cast(ex, op, a, ins, out):
    ex.node("Cast", ins, [out], op, to=ONNX_DTYPES[DType.from_short(a["to"])])


def _conv(ex, op, a, ins, out):
    ex.node("Conv", ins, [out], op, strides=a["strides"], pads=a["pads"],
            dilations=a["dilations"], group=a["group"])  # fmt: skip


def _gemm(ex, op, a, ins, out):
    ex.node("Gemm", ins, [out], op, alpha=a["alpha"], beta=a["beta"], transA=a["trans_a"],
            transB=a["trans_b"])  # fmt: skip


def _pool(op_type: str):
    def convert(ex, op, a, ins, out):
        extra = {"count_include_pad": a["count_include_pad"]} if "count_include_pad" in a else {}
        ex.node(op_type, ins, [out], op, kernel_shape=a["kernel"], strides=a["strides"],
                pads=a["pads"], ceil_mode=a["ceil_mode"], dilations=a["dilations"],
                **extra)  # fmt: skip

    return convert


def _reshape(ex, op, a, ins, out):
    ex.node("Reshape", [ins[0], ex.const(f"{out}.shape", _ints(a["shape"]))], [out], op)


def _pad(ex, op, a, ins, out):
    inputs = [ins[0], ex.const(f"{out}.pads", _ints(a["pads"]))]
    if a["mode"] == "constant":
        inputs.append(ex.const(f"{out}.value", _scalar_like(op, a["value"])))
    ex.node("Pad", inputs, [out], op, mode=a["mode"])


def _slice(ex, op, a, ins, out):
    bounds = [ex.const(f"{out}.{k}", _ints(a[k])) for k in ("starts", "ends", "axes", "steps")]
    ex.node("Slice", [ins[0], *bounds], [out], op)


def _shape(ex, op, a, ins, out):
    end = {} if a["end"] >= op.operands[0].type.rank else {"end": a["end"]}
    ex.node("Shape", ins, [out], op, start=a["start"], **end)


def _reduce_mean(ex, op, a, ins, out):
    axes = [ex.const(f"{out}.axes", _ints(a["axes"]))] if a["axes"] else []
    ex.node("ReduceMean", [ins[0], *axes], [out], op, keepdims=a["keepdims"])


def _resize(ex, op, a, ins, out):
    x, y = op.operands[0].type, op.result.type
    if a["sizes"] and any(s >= 0 for s in a["sizes"]):
        sizes = ex.const(f"{out}.sizes", _ints(y.shape))  # y's shape is static here
        inputs = [ins[0], "", "", sizes]
        implied = [n / d for n, d in zip(y.shape, x.shape)]
        if not np.allclose(implied, a["scales"], rtol=1e-6):  # keep_aspect_ratio_policy
            inputs = [ins[0], "", ex.const(f"{out}.scales", np.asarray(a["scales"], np.float32))]
    else:
        inputs = [ins[0], "", ex.const(f"{out}.scales", np.asarray(a["scales"], np.float32))]
    ex.node("Resize", inputs, [out], op, mode=a["mode"],
            coordinate_transformation_mode=a["coordinate_transformation_mode"],
            nearest_mode=a["nearest_mode"])  # fmt: skip


def _reduce(op_type: str):
    """A ReduceSum / ReduceMax node with the axes as an input (opset 18 and on)."""

    def convert(ex, op, a, ins, out):
        axes = [ex.const(f"{out}.axes", _ints(a["axes"]))] if a["axes"] else []
        ex.node(op_type, [ins[0], *axes], [out], op, keepdims=a["keepdims"])

    return convert


def _with_ints(op_type: str, key: str):
    """A node whose ints attribute ``key`` is an int64 input in ONNX (Expand, Tile)."""

    def convert(ex, op, a, ins, out):
        ex.node(op_type, [ins[0], ex.const(f"{out}.{key}", _ints(a[key]))], [out], op)

    return convert


def _conv_transpose(ex, op, a, ins, out):
    ex.node("ConvTranspose", ins, [out], op, strides=list(a["strides"]), pads=list(a["pads"]),
            dilations=list(a["dilations"]), output_padding=list(a["output_padding"]),
            group=a["group"])  # fmt: skip


CONVERTERS = {
    "relu": _simple("Relu"), "sigmoid": _simple("Sigmoid"), "tanh": _simple("Tanh"),
    "hard_swish": _simple("HardSwish"), "leaky_relu": _renamed("LeakyRelu", {"alpha": "alpha"}),
    "hard_sigmoid": _renamed("HardSigmoid", {"alpha": "alpha", "beta": "beta"}),
    "clip": _clip, "add": _simple("Add"), "sub": _simple("Sub"), "mul": _simple("Mul"),
    "div": _simple("Div"), "cast": _cast, "conv2d": _conv, "gemm": _gemm,
    "matmul": _simple("MatMul"),
    "batchnorm": _renamed("BatchNormalization", {"epsilon": "epsilon"}),
    "max_pool": _pool("MaxPool"), "avg_pool": _pool("AveragePool"),
    "global_avg_pool": _simple("GlobalAveragePool"),
    "global_max_pool": _simple("GlobalMaxPool"),
    "lrn": _renamed("LRN", {"size": "size", "alpha": "alpha", "beta": "beta", "bias": "bias"}),
    "concat": _renamed("Concat", {"axis": "axis"}), "reshape": _reshape,
    "transpose": _renamed("Transpose", {"perm": "perm"}), "pad": _pad, "slice": _slice,
    "gather": _renamed("Gather", {"axis": "axis"}), "shape": _shape,
    "softmax": _renamed("Softmax", {"axis": "axis"}), "reduce_mean": _reduce_mean,
    "resize": _resize, "sqrt": _simple("Sqrt"), "erf": _simple("Erf"), "pow": _simple("Pow"),
    "gelu": _renamed("Gelu", {"approximate": "approximate"}),
    "equal": _simple("Equal"), "where": _simple("Where"), "range": _simple("Range"),
    "expand": _with_ints("Expand", "shape"), "tile": _with_ints("Tile", "repeats"),
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"),
    "reduce_min": _reduce("ReduceMin"), "neg": _simple("Neg"), "log": _simple("Log"),
    "layer_norm": _renamed("LayerNormalization", {"axis": "axis", "epsilon": "epsilon"}),
    "conv_transpose2d": _conv_transpose,
}  # fmt: skip


def _silu(ex, op, a, ins, out):
    """x · sigmoid(x): a Sigmoid and a Mul by its input."""
    gate = ex.fresh(f"{out}.sigmoid")
    ex.node("Sigmoid", ins, [gate], op)
    ex.node("Mul", [ins[0], gate], [out], op)


def _gelu_of_table(approximate: str):
    """A qlut's gelu: one Gelu node of that form."""

    def convert(ex, op, a, ins, out):
        ex.node("Gelu", ins, [out], op, approximate=approximate)

    return convert


def _affine(ex, op, a, ins, out):
    """x · alpha + beta: a Mul and an Add by scalar constants (the float ops it came from)."""
    alpha = ex.const(f"{out}.alpha", np.array(a["alpha"], np.float32))
    beta = ex.const(f"{out}.beta", np.array(a["beta"], np.float32))
    product = ex.fresh(f"{out}.product")
    ex.node("Mul", [ins[0], alpha], [product], op)
    ex.node("Add", [product, beta], [out], op)


# the float functions of a qlut's table, by their name there
LUT_CONVERTERS = {"silu": _silu, "gelu": _gelu_of_table("none"),
                  "gelu_tanh": _gelu_of_table("tanh"), "affine": _affine}  # fmt: skip


def convert_float(ex, op, kind: str, attrs: dict, ins: list[str], out: str) -> None:
    """Emit irc op ``op`` as float op ``kind`` with ``attrs`` and its fused activation,
    producing ONNX value ``out`` from ONNX values ``ins``."""
    activation = attrs.get("activation", "none")
    if activation == "none":
        table = LUT_CONVERTERS.get(kind) if op.kind == "qlut" else None
        (table or CONVERTERS.get(kind) or LUT_CONVERTERS[kind])(ex, op, attrs, ins, out)
        return
    inner = ex.fresh(f"{out}.{kind.removesuffix('2d')}")
    CONVERTERS[kind](ex, op, attrs, ins, inner)
    if activation == "relu":
        ex.node("Relu", [inner], [out], op)
    elif activation == "hard_swish":
        ex.node("HardSwish", [inner], [out], op)
    else:
        _clip_node(ex, op, inner, out, attrs["act_min"], attrs["act_max"])
