"""The converter registry: one function per ONNX op type, turning a node into irc ops.

A converter takes the import context and the node and returns the irc values of the
node's outputs (None for an optional output that is not produced). It reads attributes
with ``attributes`` and inputs with ``operand`` / ``constant_input``, and creates ops with
``emit``. The families live in ``onnx_nn_converters``, ``onnx_shape_converters`` and
``onnx_resize``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from irc.errors import ConstantTooLargeError, ConversionError, IrcError, UnsupportedOpError
from irc.frontends.onnx_importer import ImportContext, NeedsConstantError, node_name
from irc.ir import Value
from irc.opdef import build

Converter = Callable[[ImportContext, onnx.NodeProto], list]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str):
    """Register the decorated function as the converter of ``op_types``."""

    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return register


def node_label(node: onnx.NodeProto) -> str:
    """``node '<name>' (<op type>)``, the prefix of every error about the node."""
    return f"node '{node_name(node)}' ({node.op_type})"


def attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes as python values (strings decoded; bytes that are not UTF-8
    become U+FFFD, so a bad value is reported as unsupported rather than crashing)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode("utf-8", errors="replace") for x in v]
        out[a.name] = v
    return out


def has_input(node: onnx.NodeProto, i: int) -> bool:
    return i < len(node.input) and node.input[i] != ""


def operand(ctx: ImportContext, node: onnx.NodeProto, i: int) -> Value | None:
    """Input ``i`` of the node as an irc value (None when the optional input is absent)."""
    if not has_input(node, i):
        return None
    return ctx.value(node.input[i], node_label(node))


def constant_input(ctx: ImportContext, node: onnx.NodeProto, i: int, what: str):
    """Input ``i`` as a numpy array; it must be known at compile time (None when absent)."""
    v = operand(ctx, node, i)
    if v is None:
        return None
    array = ctx.constant_of(v)
    if array is None:
        raise NeedsConstantError(
            f"{node_label(node)}: input '{what}' ('{node.input[i]}') must be a constant known "
            "at compile time; irc compiles static graphs",
            node.input[i],
        )
    return array


def scalar_input(ctx: ImportContext, node: onnx.NodeProto, i: int, what: str) -> float | None:
    """Input ``i``, which ONNX requires to be a scalar, as a float (None when absent).

    A one-element tensor of any rank is taken (onnxruntime takes it too); any other size is
    refused rather than reduced to its first element.
    """
    array = constant_input(ctx, node, i, what)
    if array is None:
        return None
    return scalar_value(node, np.asarray(array), f"input '{what}' ('{node.input[i]}')")


def scalar_value(node: onnx.NodeProto, array: np.ndarray, what: str) -> float:
    """The one element of ``array`` as a float; ConversionError naming the node otherwise."""
    if array.size != 1:
        raise ConversionError(
            f"{node_label(node)}: {what} must be a scalar, got shape {list(array.shape)} "
            f"({array.size} elements); ONNX {node.op_type} takes one value"
        )
    return float(array.reshape(-1)[0])


def unsupported(ctx: ImportContext, node: onnx.NodeProto, reason: str) -> UnsupportedOpError:
    """The error for a supported op type used in a form irc does not handle."""
    return UnsupportedOpError(node_name(node), node.op_type, ctx.opset, reason)


def emit(
    ctx: ImportContext,
    node: onnx.NodeProto,
    kind: str,
    operands,
    attrs=None,
    output: int | None = 0,
) -> Value:
    """Build one irc op for the node; its result takes the name of ONNX output ``output``
    (or a fresh name derived from it when ``output`` is None, for intermediate ops)."""
    base = node.output[0] if output is None else node.output[output]
    name = ctx.graph.fresh_name(base + ".0") if output is None else base
    return build(
        ctx.graph, kind, list(operands), attrs or {}, name=node.name, result_names=[name]
    ).result


def convert_node(ctx: ImportContext, node: onnx.NodeProto) -> None:
    """Convert one node, fold what became constant, and bind its outputs by ONNX name."""
    start = len(ctx.graph.ops)
    try:
        outputs = CONVERTERS[node.op_type](ctx, node)
        replaced = ctx.fold_new_ops(start)
    except (UnsupportedOpError, NeedsConstantError):
        raise
    except IrcError as e:
        label = node_label(node)
        msg = str(e)
        msg = msg if msg.startswith(label) else f"{label}: {msg}"
        if isinstance(e, ConstantTooLargeError):  # keep the class: callers may raise the limit
            raise ConstantTooLargeError(msg) from None
        raise ConversionError(msg) from None
    except (ValueError, TypeError, IndexError, MemoryError, np.exceptions.AxisError) as e:
        raise ConversionError(f"{node_label(node)}: cannot convert: {e}") from None
    for name, value in zip(node.output, outputs):
        if name and value is not None:
            ctx.env[name] = replaced.get(id(value), value)
    for name, value in zip(node.output, outputs):
        if name and value is None and name in ctx.consumed:
            raise unsupported(
                ctx, node, f"its output '{name}' is used, but irc does not compute that output"
            )


def normalize_axis(axis: int, rank: int, node: onnx.NodeProto, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ConversionError(f"{node_label(node)}: {what} {axis} is out of range for rank {rank}")
    return axis % rank


from irc.frontends import onnx_nn_converters, onnx_resize, onnx_shape_converters  # noqa: E402,F401
