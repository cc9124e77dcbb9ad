"""Converters for ONNX's compute ops: convolution (and transposed), gemm, normalisation,
activations, comparisons, pools and reductions."""

from __future__ import annotations

import math

import numpy as np

from irc.constant_folding import check_constant_size
from irc.errors import ConversionError
from irc.frontends.onnx_converters import (
    attributes,
    constant_input,
    converter,
    emit,
    has_input,
    node_label,
    normalize_axis,
    operand,
    scalar_input,
    unsupported,
)
from irc.frontends.onnx_importer import onnx_dtype

_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "HardSwish": "hard_swish",
    "Sqrt": "sqrt",
    "Erf": "erf",
    "Neg": "neg",
    "Log": "log",
}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


@converter(*_UNARY)
def convert_unary(ctx, node):
    return [emit(ctx, node, _UNARY[node.op_type], [operand(ctx, node, 0)])]


@converter(*_BINARY)
def convert_binary(ctx, node):
    a, b = operand(ctx, node, 0), operand(ctx, node, 1)
    return [emit(ctx, node, _BINARY[node.op_type], [a, b])]


@converter("Pow")
def convert_pow(ctx, node):
    """``pow``; an exponent of another element type is cast to the base's, or, for an
    integer base with a float exponent, the base is raised in the exponent's type and the
    result cast back (ONNX Pow's result has the base's type)."""
    x, y = operand(ctx, node, 0), operand(ctx, node, 1)
    xt, yt = x.type.dtype, y.type.dtype
    if xt == yt:
        return [emit(ctx, node, "pow", [x, y])]
    if xt.is_float or not yt.is_float:
        y = emit(ctx, node, "cast", [y], {"to": xt.short}, output=None)
        return [emit(ctx, node, "pow", [x, y])]
    wide = emit(ctx, node, "cast", [x], {"to": yt.short}, output=None)
    raised = emit(ctx, node, "pow", [wide, y], output=None)
    return [emit(ctx, node, "cast", [raised], {"to": xt.short})]


@converter("Equal")
def convert_equal(ctx, node):
    return [emit(ctx, node, "equal", [operand(ctx, node, 0), operand(ctx, node, 1)])]


@converter("Where")
def convert_where(ctx, node):
    operands = [operand(ctx, node, i) for i in range(3)]
    return [emit(ctx, node, "where", operands)]


@converter("Sum")
def convert_sum(ctx, node):
    values = [operand(ctx, node, i) for i in range(len(node.input))]
    if len(values) == 1:
        return values
    acc = values[0]
    for k, v in enumerate(values[1:], start=2):
        acc = emit(ctx, node, "add", [acc, v], output=0 if k == len(values) else None)
    return [acc]


@converter("LeakyRelu")
def convert_leaky_relu(ctx, node):
    alpha = attributes(node).get("alpha", 0.01)
    return [emit(ctx, node, "leaky_relu", [operand(ctx, node, 0)], {"alpha": alpha})]


@converter("Gelu")
def convert_gelu(ctx, node):
    """ONNX Gelu (opset 20), exact or with ``approximate="tanh"``."""
    approximate = attributes(node).get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise unsupported(ctx, node, f"approximate={approximate!r} (not 'none' or 'tanh')")
    return [emit(ctx, node, "gelu", [operand(ctx, node, 0)], {"approximate": approximate})]


@converter("HardSigmoid")
def convert_hard_sigmoid(ctx, node):
    a = attributes(node)
    attrs = {"alpha": a.get("alpha", 0.2), "beta": a.get("beta", 0.5)}
    return [emit(ctx, node, "hard_sigmoid", [operand(ctx, node, 0)], attrs)]


@converter("Clip")
def convert_clip(ctx, node):
    """``clip`` with the node's bounds; ONNX requires scalar bounds, so a bound tensor of
    more than one element is refused (not cut to its first element)."""
    x = operand(ctx, node, 0)
    if ctx.opset < 11:
        a = attributes(node)
        lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
    else:
        lo, hi = scalar_input(ctx, node, 1, "min"), scalar_input(ctx, node, 2, "max")
        lo = -math.inf if lo is None else lo
        hi = math.inf if hi is None else hi
    return [emit(ctx, node, "clip", [x], {"min": lo, "max": hi})]


@converter("Cast")
def convert_cast(ctx, node):
    to = onnx_dtype(attributes(node)["to"], node_label(node))
    return [emit(ctx, node, "cast", [operand(ctx, node, 0)], {"to": to.short})]


@converter("Identity")
def convert_identity(ctx, node):
    return [operand(ctx, node, 0)]


@converter("Dropout")
def convert_dropout(ctx, node):
    """Inference dropout is the identity; its mask output, when used, a constant of ones."""
    a = attributes(node)
    training = scalar_input(ctx, node, 2, "training_mode") if ctx.opset >= 12 else None
    if a.get("is_test", 1) == 0 and ctx.opset < 7 or (training is not None and bool(training)):
        raise unsupported(ctx, node, "training-mode dropout; irc compiles for inference")
    x = operand(ctx, node, 0)
    if len(node.output) > 1 and node.output[1] and node.output[1] in ctx.consumed:
        if not x.type.is_static:
            raise unsupported(ctx, node, "its mask output needs a static input shape")
        check_constant_size(x.type.shape, np.dtype(bool), node_label(node))
        mask = np.ones(x.type.shape, dtype=bool)
        return [x, ctx.set_constant(node.output[1], mask)]
    return [x]


@converter("MatMul")
def convert_matmul(ctx, node):
    return [emit(ctx, node, "matmul", [operand(ctx, node, 0), operand(ctx, node, 1)])]


@converter("Gemm")
def convert_gemm(ctx, node):
    a = attributes(node)
    attrs = {
        "alpha": a.get("alpha", 1.0),
        "beta": a.get("beta", 1.0),
        "trans_a": a.get("transA", 0),
        "trans_b": a.get("transB", 0),
    }
    operands = [operand(ctx, node, 0), operand(ctx, node, 1)]
    if has_input(node, 2):
        operands.append(operand(ctx, node, 2))
    return [emit(ctx, node, "gemm", operands, attrs)]


@converter("BatchNormalization")
def convert_batchnorm(ctx, node):
    a = attributes(node)
    if a.get("training_mode", 0) or any(o for o in node.output[1:] if o in ctx.consumed):
        raise unsupported(
            ctx,
            node,
            "training-mode batch normalisation (running statistics "
            "outputs); irc compiles for inference",
        )
    if ctx.opset < 9 and a.get("spatial", 1) != 1:
        raise unsupported(ctx, node, "spatial=0 (per-activation statistics)")
    operands = [operand(ctx, node, i) for i in range(5)]
    return [emit(ctx, node, "batchnorm", operands, {"epsilon": a.get("epsilon", 1e-5)})]


def window_pads(node, x_type, kernel, strides, dilations, ctx) -> tuple:
    """Explicit [begins…, ends…] pads for a windowed node, resolving ``auto_pad``."""
    a = attributes(node)
    nsp = len(kernel)
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = tuple(a.get("pads", (0,) * (2 * nsp)))
        if len(pads) != 2 * nsp:
            raise ConversionError(
                f"{node_label(node)}: pads has {len(pads)} entries, expected {2 * nsp}"
            )
        return pads
    if auto_pad == "VALID":
        return (0,) * (2 * nsp)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise unsupported(ctx, node, f"auto_pad '{auto_pad}'")
    begins, ends = [], []
    for i in range(nsp):
        size = x_type.shape[2 + i]
        if isinstance(size, str):
            raise ConversionError(
                f"{node_label(node)}: auto_pad {auto_pad} needs a static "
                f"spatial size; give an input shape"
            )
        out = -(-size // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return tuple(begins + ends)


@converter("Conv")
def convert_conv(ctx, node):
    x, w = operand(ctx, node, 0), operand(ctx, node, 1)
    if w.type.rank != 4:
        raise unsupported(ctx, node, f"{w.type.rank - 2}-D convolution; irc supports 2-D")
    a = attributes(node)
    kernel = tuple(w.type.shape[2:])
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != kernel:
        raise ConversionError(
            f"{node_label(node)}: kernel_shape {a['kernel_shape']} differs "
            f"from the weight's spatial shape {list(kernel)}"
        )
    strides = tuple(a.get("strides", (1, 1)))
    dilations = tuple(a.get("dilations", (1, 1)))
    attrs = {
        "strides": strides,
        "dilations": dilations,
        "group": a.get("group", 1),
        "pads": window_pads(node, x.type, kernel, strides, dilations, ctx),
    }
    operands = [x, w] + ([operand(ctx, node, 2)] if has_input(node, 2) else [])
    return [emit(ctx, node, "conv2d", operands, attrs)]


@converter("MaxPool", "AveragePool")
def convert_pool(ctx, node):
    if len(node.output) > 1 and node.output[1] in ctx.consumed:
        raise unsupported(ctx, node, "the Indices output of MaxPool")
    x = operand(ctx, node, 0)
    a = attributes(node)
    kernel = tuple(a["kernel_shape"])
    nsp = len(kernel)
    strides = tuple(a.get("strides", (1,) * nsp))
    dilations = tuple(a.get("dilations", (1,) * nsp))
    attrs = {
        "kernel": kernel,
        "strides": strides,
        "ceil_mode": a.get("ceil_mode", 0),
        "pads": window_pads(node, x.type, kernel, strides, dilations, ctx),
        "dilations": dilations,
    }
    if node.op_type == "MaxPool":
        return [emit(ctx, node, "max_pool", [x], attrs)]
    attrs["count_include_pad"] = a.get("count_include_pad", 0)
    return [emit(ctx, node, "avg_pool", [x], attrs)]


@converter("GlobalAveragePool", "GlobalMaxPool")
def convert_global_pool(ctx, node):
    kind = "global_avg_pool" if node.op_type == "GlobalAveragePool" else "global_max_pool"
    return [emit(ctx, node, kind, [operand(ctx, node, 0)])]


@converter("LRN")
def convert_lrn(ctx, node):
    a = attributes(node)
    attrs = {
        "size": a["size"],
        "alpha": a.get("alpha", 1e-4),
        "beta": a.get("beta", 0.75),
        "bias": a.get("bias", 1.0),
    }
    return [emit(ctx, node, "lrn", [operand(ctx, node, 0)], attrs)]


@converter("Softmax")
def convert_softmax(ctx, node):
    x = operand(ctx, node, 0)
    a = attributes(node)
    if ctx.opset >= 13:
        axis = normalize_axis(a.get("axis", -1), x.type.rank, node)
        return [emit(ctx, node, "softmax", [x], {"axis": axis})]
    # Before opset 13 the input is coerced to 2-D at `axis` and softmax runs over the rest.
    axis = normalize_axis(a.get("axis", 1), x.type.rank, node)
    if axis == x.type.rank - 1:
        return [emit(ctx, node, "softmax", [x], {"axis": axis})]
    outer = tuple(0 for _ in range(axis)) if axis else ()
    flat = emit(ctx, node, "reshape", [x], {"shape": outer + (-1,)}, output=None)
    soft = emit(ctx, node, "softmax", [flat], {"axis": axis}, output=None)
    return [
        emit(
            ctx,
            node,
            "reshape",
            [soft],
            {"shape": tuple(0 for _ in range(axis)) + tuple(x.type.shape[axis:])},
        )
    ]


_REDUCE = {
    "ReduceMean": "reduce_mean",
    "ReduceSum": "reduce_sum",
    "ReduceMax": "reduce_max",
    "ReduceMin": "reduce_min",
}


def _axes_as_input(ctx, node) -> bool:
    """Whether the node's axes are an input (ReduceSum from opset 13, the rest from 18)."""
    return ctx.opset >= (13 if node.op_type == "ReduceSum" else 18)


@converter(*_REDUCE)
def convert_reduce(ctx, node):
    """ReduceMean / ReduceSum / ReduceMax / ReduceMin over the node's axes (all when none are given,
    unless ``noop_with_empty_axes``, which makes the node the identity)."""
    x = operand(ctx, node, 0)
    a = attributes(node)
    if _axes_as_input(ctx, node):
        axes_array = constant_input(ctx, node, 1, "axes")
        axes = () if axes_array is None else tuple(int(v) for v in axes_array.reshape(-1))
        if not axes and a.get("noop_with_empty_axes", 0):
            return [x]
    else:
        axes = tuple(a.get("axes", ()))
    axes = tuple(sorted({normalize_axis(ax, x.type.rank, node, "axes") for ax in axes}))
    attrs = {"axes": axes, "keepdims": a.get("keepdims", 1)}
    return [emit(ctx, node, _REDUCE[node.op_type], [x], attrs)]


@converter("LayerNormalization")
def convert_layer_norm(ctx, node):
    """``layer_norm``; the Mean and InvStdDev outputs, when used, are written out with
    reduce_mean, sub, mul, add, sqrt and div.

    ``stash_type`` (the precision of the statistics) is read as "at least float32": irc
    accumulates them in float64."""
    x = operand(ctx, node, 0)
    a = attributes(node)
    axis = normalize_axis(a.get("axis", -1), x.type.rank, node)
    operands = [x, operand(ctx, node, 1)] + ([operand(ctx, node, 2)] if has_input(node, 2) else [])
    attrs = {"axis": axis, "epsilon": a.get("epsilon", 1e-5)}
    outputs = [emit(ctx, node, "layer_norm", operands, attrs)]
    used = [i for i in (1, 2) if i < len(node.output) and node.output[i] in ctx.consumed]
    if used:
        outputs += _layer_norm_statistics(ctx, node, x, axis, attrs["epsilon"], max(used))
    return outputs


def _scalar(ctx, node, value: float, like):
    """A rank-0 constant ``value`` of ``like``'s element type."""
    array = np.array(value, like.type.dtype.numpy)
    return emit(ctx, node, "constant", [], {"value": array}, output=None)


def _layer_norm_statistics(ctx, node, x, axis: int, epsilon: float, last: int) -> list:
    """LayerNormalization's Mean and (if ``last`` is 2) InvStdDev outputs, over the axes
    from ``axis`` on, kept as size 1."""
    reduce = {"axes": tuple(range(axis, x.type.rank)), "keepdims": 1}
    mean = emit(ctx, node, "reduce_mean", [x], reduce, output=1)
    if last == 1:
        return [mean]
    centred = emit(ctx, node, "sub", [x, mean], output=None)
    square = emit(ctx, node, "mul", [centred, centred], output=None)
    var = emit(ctx, node, "reduce_mean", [square], reduce, output=None)
    eps = _scalar(ctx, node, epsilon, x)
    std = emit(ctx, node, "sqrt", [emit(ctx, node, "add", [var, eps], output=None)], output=None)
    one = _scalar(ctx, node, 1.0, x)
    return [mean, emit(ctx, node, "div", [one, std], output=2)]


def _transposed_pads(ctx, node, x_type, kernel, attrs) -> tuple:
    """Explicit pads of a ConvTranspose node from ``pads``, ``auto_pad`` or
    ``output_shape``; an output_shape longer than the natural one extends output_padding."""
    a = attributes(node)
    auto_pad = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise unsupported(ctx, node, f"auto_pad '{auto_pad}'")
    if "output_shape" not in a and auto_pad in ("NOTSET", "VALID"):
        pads = tuple(a.get("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else (0, 0, 0, 0)
        if len(pads) != 4:
            raise ConversionError(f"{node_label(node)}: pads has {len(pads)} entries, expected 4")
        return pads
    sizes = [x_type.shape[2], x_type.shape[3]]
    if any(isinstance(d, str) for d in sizes):
        raise ConversionError(
            f"{node_label(node)}: output_shape / auto_pad need static spatial sizes; "
            "give an input shape"
        )
    strides, dilations = attrs["strides"], attrs["dilations"]
    target = a.get("output_shape", [s * st for s, st in zip(sizes, strides)])[-2:]
    begins, ends, extra = [], [], list(attrs["output_padding"])
    for i in range(2):
        natural = strides[i] * (sizes[i] - 1) + extra[i] + dilations[i] * (kernel[i] - 1) + 1
        total = natural - target[i]
        if total < 0:
            extra[i] -= total
            total = 0
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    attrs["output_padding"] = tuple(extra)
    return tuple(begins + ends)


@converter("ConvTranspose")
def convert_conv_transpose(ctx, node):
    x, w = operand(ctx, node, 0), operand(ctx, node, 1)
    if w.type.rank != 4:
        raise unsupported(
            ctx, node, f"{w.type.rank - 2}-D transposed convolution; irc supports 2-D"
        )
    a = attributes(node)
    kernel = tuple(w.type.shape[2:])
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != kernel:
        raise ConversionError(
            f"{node_label(node)}: kernel_shape {a['kernel_shape']} differs "
            f"from the weight's spatial shape {list(kernel)}"
        )
    attrs = {
        "strides": tuple(a.get("strides", (1, 1))),
        "dilations": tuple(a.get("dilations", (1, 1))),
        "output_padding": tuple(a.get("output_padding", (0, 0))),
        "group": a.get("group", 1),
    }
    attrs["pads"] = _transposed_pads(ctx, node, x.type, kernel, attrs)
    operands = [x, w] + ([operand(ctx, node, 2)] if has_input(node, 2) else [])
    return [emit(ctx, node, "conv_transpose2d", operands, attrs)]
