"""channels-last and channels-first: the layout of the integer part of a graph.

``channels-last`` stores the activations of the convolution layers channels last (NHWC):
every qconv2d, conv2d and qglobal_avg_pool takes ``layout=nhwc``, integer or float (the
float NHWC kernels outrun the NCHW ones); an elementwise op on equal rank-4 shapes (qadd,
dequantize, quantize, add...) whose operand already comes out of a converted op follows
them, so a float island between integer layers runs channels last with no transposes.
``channels-first`` puts every op with a ``layout`` back to ``nchw`` (what ONNX export
needs).

Both convert op by op, in graph order: a converted op reads its activations through a
``transpose`` into the new layout and its result is transposed back, so the graph
computes the same values at every step. ``canonicalize`` then cancels each pair of
transposes that meet (a layer's output transposed back and into the next layer), and
what remains is a transpose where the converted part meets the model's own layout: after
the input's ``quantize`` (int8), before an op that has no NHWC form (a reshape to the
classifier, a pooling op, an op that broadcasts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from irc.ir import Graph, Op, Value
from irc.matching import is_output
from irc.opdef import build, get_opdef, has_trait
from irc.ops.shape_rules import TO_NCHW, TO_NHWC
from irc.pass_manager import Pass, PassContext, register_pass
from irc.passes.canonicalize import Canonicalize

INTO = {"nhwc": TO_NHWC, "nchw": TO_NCHW}  # the perm that takes a value into a layout


def has_layout(op: Op) -> bool:
    """Whether ``op``'s kind stores its activations in a ``layout`` it names."""
    return "layout" in get_opdef(op.kind).attrs


CHANNELS_LAST = frozenset({"qconv2d", "conv2d", "qglobal_avg_pool"})  # moved into NHWC


def _layout_free(op: Op) -> bool:
    """An elementwise op on equal rank-4 shapes, quantized per tensor if at all: it
    computes the same in any layout."""
    if not has_trait(op.kind, "elementwise") or not op.operands:
        return False
    shape = op.results[0].type.shape
    values = [*op.operands, *op.results]
    per_tensor = all(v.type.quant is None or v.type.quant.axis is None for v in values)
    return len(shape) == 4 and per_tensor and all(v.type.shape == shape for v in values)


def _from_layer_in(value: Value, layout: str) -> bool:
    """Whether ``value`` is a transpose out of ``layout`` (a converted op's result)."""
    producer = value.producer
    other = "nchw" if layout == "nhwc" else "nhwc"
    return (
        producer is not None
        and producer.kind == "transpose"
        and tuple(producer.attrs["perm"]) == INTO[other]
    )


def _transpose(graph: Graph, value: Value, layout: str, index: int, base: str = "") -> Value:
    """A transpose of ``value`` into ``layout``, inserted at ``index``, named after ``base``
    (default: the value's name)."""
    name = graph.fresh_name(f"{base or value.name}.{layout}")
    op = build(graph, "transpose", [value], {"perm": INTO[layout]}, result_names=[name],
               index=index)  # fmt: skip
    return op.result


def convert(graph: Graph, op: Op, layout: str) -> Op:
    """Make ``op`` compute in ``layout``: its rank-4 activations transposed into it, its
    result transposed back (the graph's values unchanged). Returns the new op."""
    index = graph.index_of(op)
    operands = list(op.operands)
    activations = [0] if has_layout(op) else range(len(operands))
    for i in activations:
        operands[i] = _transpose(graph, operands[i], layout, index)
        index += 1
    attrs = dict(op.attrs, layout=layout) if has_layout(op) else dict(op.attrs)
    old = op.result
    new = build(graph, op.kind, operands, attrs, name=op.name,
                result_names=[graph.fresh_name(f"{old.name}.{layout}")], index=index)  # fmt: skip
    back = "nchw" if layout == "nhwc" else "nhwc"
    restored = _transpose(graph, new.result, back, index + 1, base=old.name)
    graph.replace_all_uses_with(old, restored)
    graph.erase_op(op)
    graph.rename(restored if is_output(graph, restored) else new.result, old.name)
    return new


def _moves(op: Op, layout: str) -> bool:
    """Whether the pass into ``layout`` converts ``op``: a layout-aware op of a kind it
    moves (back to nchw: any kind), or a layout-free op fed by a converted op."""
    if has_layout(op):
        if op.attrs["layout"] == layout or op.operands[0].type.rank != 4:
            return False
        return layout == "nchw" or op.kind in CHANNELS_LAST
    return _layout_free(op) and any(_from_layer_in(v, layout) for v in op.operands)


def _convert_all(graph: Graph, ctx: PassContext, layout: str) -> dict[str, int]:
    converted = 0
    for op in list(graph.ops):
        if op.graph is graph and _moves(op, layout):
            convert(graph, op, layout)
            converted += 1
    if converted:
        Canonicalize().run(graph, ctx)
    return {"converted": converted, "transposes": _count_transposes(graph)}


def _count_transposes(graph: Graph) -> int:
    return sum(op.kind == "transpose" for op in graph.ops)


@register_pass
@dataclass(frozen=True)
class ChannelsLast(Pass):
    """Store the convolution layers' activations channels last (NHWC)."""

    name: ClassVar[str] = "channels-last"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        return _convert_all(graph, ctx, "nhwc")


def channels_first(graph: Graph) -> Graph:
    """``graph`` itself when no op of it is channels last, else a copy in ONNX's layout."""
    if not any(has_layout(op) and op.attrs["layout"] != "nchw" for op in graph.ops):
        return graph
    copy = graph.clone()
    ChannelsFirst().run(copy, PassContext())
    return copy


@register_pass
@dataclass(frozen=True)
class ChannelsFirst(Pass):
    """Store every layout-aware op's activations as ONNX does (NCHW)."""

    name: ClassVar[str] = "channels-first"

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        return _convert_all(graph, ctx, "nchw")
