"""Converters for ONNX's data-movement and shape ops, and for constants.

Flatten, Squeeze and Unsqueeze become ``reshape``; Split becomes ``slice`` ops; Constant
and ConstantOfShape become ``constant``; Shape of a static tensor is a constant at once.
Expand, Tile and Range need their shape, repeats and bounds known at compile time (they
fix the result's shape); Range of constants folds to a constant as it is converted.
ConstantOfShape is refused, before anything is allocated, when its tensor would exceed the
constant size limit (``irc.constant_folding.max_constant_bytes``).
"""

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
    node_label,
    normalize_axis,
    operand,
    scalar_input,
    scalar_value,
    unsupported,
)
from irc.frontends.onnx_importer import tensor_array
from irc.reference.movement import range_count


def _ints(array) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(array).reshape(-1))


def _reshape_to(ctx, node, x, shape: tuple, output=0):
    """Reshape ``x`` to a shape that may hold one symbolic dim (written as -1)."""
    symbolic = [d for d in shape if isinstance(d, str)]
    if len(symbolic) > 1:
        raise ConversionError(
            f"{node_label(node)}: cannot express a reshape with more than one "
            "symbolic dimension; give static input shapes"
        )
    target = tuple(-1 if isinstance(d, str) else d for d in shape)
    return emit(ctx, node, "reshape", [x], {"shape": target}, output=output)


@converter("Reshape")
def convert_reshape(ctx, node):
    x = operand(ctx, node, 0)
    a = attributes(node)
    target = _ints(a["shape"]) if ctx.opset < 5 else _ints(constant_input(ctx, node, 1, "shape"))
    if a.get("allowzero", 0) and 0 in target:
        return [_empty_reshape(ctx, node, x, target)]  # 0 is a literal zero dimension here
    return [emit(ctx, node, "reshape", [x], {"shape": target})]


def _empty_reshape(ctx, node, x, target):
    if x.type.is_static and x.type.num_elements == 0:
        return ctx.set_constant(node.output[0], np.zeros(target, dtype=x.type.dtype.numpy))
    raise ConversionError(
        f"{node_label(node)}: allowzero target {list(target)} has a zero "
        f"dimension but the input {x.type} is not empty"
    )


@converter("Flatten")
def convert_flatten(ctx, node):
    x = operand(ctx, node, 0)
    rank = x.type.rank
    axis = attributes(node).get("axis", 1)
    axis = axis % rank if -rank <= axis < 0 else axis
    if not 0 <= axis <= rank:
        raise ConversionError(f"{node_label(node)}: axis {axis} out of range for rank {rank}")
    head, tail = x.type.shape[:axis], x.type.shape[axis:]
    return [_reshape_to(ctx, node, x, (_product(head), _product(tail)))]


def _product(dims):
    """Product of dims; a single symbolic factor stays symbolic (times static dims = error)."""
    symbolic = [d for d in dims if isinstance(d, str)]
    static = math.prod(d for d in dims if not isinstance(d, str))
    if not symbolic:
        return static
    if len(symbolic) == 1 and static == 1:
        return symbolic[0]
    return "?"  # two symbolic factors in one reshape: _reshape_to rejects it


@converter("Squeeze", "Unsqueeze")
def convert_squeeze(ctx, node):
    """A ``reshape`` that drops (Squeeze) or inserts (Unsqueeze) size-1 axes.

    Squeeze without axes drops every axis of size 1. Whether a symbolic axis goes depends
    on its run-time size, so, like ONNX shape inference (which then leaves the output shape
    unknown), irc cannot decide it: such a node is refused with a ConversionError naming
    the node and the dimension (give the node axes, or static ``input_shapes``). With a
    static input shape every size-1 axis goes, as in onnxruntime.
    """
    x = operand(ctx, node, 0)
    a = attributes(node)
    if ctx.opset >= 13:
        axes_array = constant_input(ctx, node, 1, "axes")
        axes = None if axes_array is None else _ints(axes_array)
    else:
        axes = tuple(a["axes"]) if "axes" in a else None
    shape = list(x.type.shape)
    if node.op_type == "Squeeze":
        if axes is None:
            symbolic = [(i, d) for i, d in enumerate(shape) if isinstance(d, str)]
            if symbolic:
                i, d = symbolic[0]
                raise ConversionError(
                    f"{node_label(node)}: Squeeze without axes over symbolic dimension "
                    f"'{d}' (axis {i}) is undecidable (it goes only if it is 1 at run time); "
                    "give the node axes, or static input shapes (input_shapes=...)"
                )
            axes = tuple(i for i, d in enumerate(shape) if d == 1)
        axes = {normalize_axis(ax, len(shape), node, "axes") for ax in axes}
        for ax in axes:
            if shape[ax] != 1:
                raise ConversionError(
                    f"{node_label(node)}: cannot squeeze axis {ax} of size {shape[ax]}"
                )
        new = [d for i, d in enumerate(shape) if i not in axes]
    else:
        if axes is None:
            raise ConversionError(f"{node_label(node)}: Unsqueeze needs axes")
        out_rank = len(shape) + len(axes)
        axes = sorted(normalize_axis(ax, out_rank, node, "axes") for ax in axes)
        new = list(shape)
        for ax in axes:
            new.insert(ax, 1)
    return [_reshape_to(ctx, node, x, tuple(new))]


@converter("Transpose")
def convert_transpose(ctx, node):
    x = operand(ctx, node, 0)
    perm = tuple(attributes(node).get("perm", range(x.type.rank - 1, -1, -1)))
    return [emit(ctx, node, "transpose", [x], {"perm": perm})]


@converter("Concat")
def convert_concat(ctx, node):
    values = [operand(ctx, node, i) for i in range(len(node.input)) if node.input[i]]
    axis = normalize_axis(attributes(node)["axis"], values[0].type.rank, node)
    return [emit(ctx, node, "concat", values, {"axis": axis})]


@converter("Pad")
def convert_pad(ctx, node):
    """``pad`` with explicit per-axis pads and a scalar ``constant_value`` (attributes before
    opset 11, inputs from then on; ``axes`` from opset 18)."""
    x = operand(ctx, node, 0)
    a = attributes(node)
    rank = x.type.rank
    mode = a.get("mode", "constant")
    if ctx.opset < 11:
        pads, value = tuple(a.get("pads", a.get("paddings", ()))), a.get("value", 0.0)
    else:
        pads = _ints(constant_input(ctx, node, 1, "pads"))
        value = scalar_input(ctx, node, 2, "constant_value")
        value = 0.0 if value is None else value
        axes_array = constant_input(ctx, node, 3, "axes") if ctx.opset >= 18 else None
        if axes_array is not None:
            axes = [normalize_axis(ax, rank, node, "axes") for ax in _ints(axes_array)]
            full = [0] * (2 * rank)
            for k, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[k], pads[k + len(axes)]
            pads = tuple(full)
    if len(pads) != 2 * rank:
        raise ConversionError(f"{node_label(node)}: {len(pads)} pads for rank {rank}")
    return [emit(ctx, node, "pad", [x], {"pads": pads, "mode": mode, "value": value})]


@converter("Constant")
def convert_constant(ctx, node):
    """A ``constant`` holding the node's tensor or numeric value attribute."""
    a = attributes(node)
    if "value" in a:
        array = tensor_array(a["value"], f"{node_label(node)}: attribute 'value'")
    elif "value_float" in a or "value_int" in a:
        key = "value_float" if "value_float" in a else "value_int"
        array = np.array(a[key], dtype=np.float32 if key == "value_float" else np.int64)
    elif "value_floats" in a or "value_ints" in a:
        key = "value_floats" if "value_floats" in a else "value_ints"
        array = np.array(a[key], dtype=np.float32 if key == "value_floats" else np.int64)
    else:
        raise unsupported(ctx, node, f"constant kind {sorted(a)}; irc handles numeric tensors")
    return [ctx.set_constant(node.output[0], array)]


@converter("ConstantOfShape")
def convert_constant_of_shape(ctx, node):
    """A ``constant`` of the given shape filled with the one-element ``value`` attribute
    (f32 zero by default); ConstantTooLargeError before allocating one over the limit."""
    shape = _ints(constant_input(ctx, node, 0, "input"))
    if any(d < 0 for d in shape):
        raise ConversionError(f"{node_label(node)}: shape {list(shape)} has a negative dimension")
    a = attributes(node)
    if "value" in a:
        fill = tensor_array(a["value"], f"{node_label(node)}: attribute 'value'")
        scalar_value(node, fill, "attribute 'value'")
    else:
        fill = np.zeros(1, np.float32)
    check_constant_size(shape, fill.dtype, node_label(node))
    array = np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)
    return [ctx.set_constant(node.output[0], array)]


@converter("Shape")
def convert_shape(ctx, node):
    x = operand(ctx, node, 0)
    a = attributes(node)
    attrs = {"start": a.get("start", 0), "end": a.get("end", 2**31 - 1)}
    dims = x.type.shape[attrs["start"] : attrs["end"]]
    if all(isinstance(d, int) for d in dims):
        return [ctx.set_constant(node.output[0], np.array(dims, dtype=np.int64))]
    return [emit(ctx, node, "shape", [x], attrs)]


@converter("Gather")
def convert_gather(ctx, node):
    data, indices = operand(ctx, node, 0), operand(ctx, node, 1)
    axis = normalize_axis(attributes(node).get("axis", 0), data.type.rank, node)
    return [emit(ctx, node, "gather", [data, indices], {"axis": axis})]


@converter("Slice")
def convert_slice(ctx, node):
    x = operand(ctx, node, 0)
    rank = x.type.rank
    if ctx.opset < 10:
        a = attributes(node)
        starts, ends = tuple(a["starts"]), tuple(a["ends"])
        axes = tuple(a.get("axes", range(len(starts))))
        steps = (1,) * len(starts)
    else:
        starts = _ints(constant_input(ctx, node, 1, "starts"))
        ends = _ints(constant_input(ctx, node, 2, "ends"))
        axes_array = constant_input(ctx, node, 3, "axes")
        steps_array = constant_input(ctx, node, 4, "steps")
        axes = tuple(range(len(starts))) if axes_array is None else _ints(axes_array)
        steps = (1,) * len(starts) if steps_array is None else _ints(steps_array)
    axes = tuple(normalize_axis(ax, rank, node, "axes") for ax in axes)
    bounds = [
        _python_slice_bounds(s, e, st, x.type.shape[ax])
        for s, e, st, ax in zip(starts, ends, steps, axes)
    ]
    starts, ends = tuple(b[0] for b in bounds), tuple(b[1] for b in bounds)
    attrs = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
    return [emit(ctx, node, "slice", [x], attrs)]


_FAR = 2**62  # beyond any dimension: python slicing clamps it like ONNX's INT64 sentinels


def _python_slice_bounds(start: int, end: int, step: int, dim) -> tuple[int, int]:
    """ONNX Slice bounds as python-slice bounds with the same meaning.

    ONNX clamps a negative-step start into [0, dim-1] and its end into [-1, dim-1] (-1 is
    "before element 0"); python would wrap or empty those, so they are rewritten here.
    """
    start, end = max(-_FAR, min(_FAR, start)), max(-_FAR, min(_FAR, end))
    if isinstance(dim, str) or step > 0:
        return start, end
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    start = min(max(start, 0), dim - 1) if dim else 0
    end = min(max(end, -1), dim - 1)
    return start, (-_FAR if end < 0 else end)


@converter("Split")
def convert_split(ctx, node):
    x = operand(ctx, node, 0)
    a = attributes(node)
    axis = normalize_axis(a.get("axis", 0), x.type.rank, node)
    length = x.type.shape[axis]
    if isinstance(length, str):
        raise ConversionError(f"{node_label(node)}: cannot split a symbolic axis")
    count = len(node.output)
    if ctx.opset >= 13:
        split = constant_input(ctx, node, 1, "split")
        sizes = None if split is None else _ints(split)
    else:
        sizes = tuple(a["split"]) if "split" in a else None
    if sizes is None:
        parts = a.get("num_outputs", count)
        chunk = -(-length // parts)
        sizes = tuple(min(chunk, length - i * chunk) for i in range(parts))
    if len(sizes) != count or sum(sizes) != length:
        raise ConversionError(
            f"{node_label(node)}: split sizes {list(sizes)} do not cover axis "
            f"{axis} of length {length} in {count} outputs"
        )
    outputs, start = [], 0
    for i, size in enumerate(sizes):
        attrs = {"starts": (start,), "ends": (start + size,), "axes": (axis,), "steps": (1,)}
        outputs.append(emit(ctx, node, "slice", [x], attrs, output=i))
        start += size
    return outputs


@converter("Expand")
def convert_expand(ctx, node):
    x = operand(ctx, node, 0)
    shape = _ints(constant_input(ctx, node, 1, "shape"))
    return [emit(ctx, node, "expand", [x], {"shape": shape})]


@converter("Tile")
def convert_tile(ctx, node):
    x = operand(ctx, node, 0)
    repeats = _ints(constant_input(ctx, node, 1, "repeats"))
    return [emit(ctx, node, "tile", [x], {"repeats": repeats})]


@converter("Range")
def convert_range(ctx, node):
    """``range`` over scalar operands whose values fix its length (so they must be known at
    compile time; the op then folds to a constant)."""
    bounds = [constant_input(ctx, node, i, what) for i, what in
              enumerate(("start", "limit", "delta"))]  # fmt: skip
    for what, array in zip(("start", "limit", "delta"), bounds):
        scalar_value(node, np.asarray(array), f"input '{what}'")
    try:
        count = range_count(*bounds)
    except ValueError as e:
        raise ConversionError(f"{node_label(node)}: {e}") from None
    check_constant_size((count,), np.asarray(bounds[0]).dtype, node_label(node))
    operands = [operand(ctx, node, i) for i in range(3)]
    operands = [v if v.type.rank == 0 else emit(ctx, node, "reshape", [v], {"shape": ()},
                                                 output=None) for v in operands]  # fmt: skip
    return [emit(ctx, node, "range", operands, {"count": count})]
