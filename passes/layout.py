"""channels-last and channels-first: the layout of the integer part of a graph.

``channels-last`` stores the activations of the convolution layers channels last (NHWC):
every qconv2d, conv2d and qglobal_avg_pool takes ``layout=nhwc``, integer or float (the
float NHWC kernels outrun the NCHW ones). The glue between them follows wherever one of
its operands already comes out of a converted op: an elementwise op on rank-4 values that
may broadcast against each other or against a scalar (qadd, qlut, dequantize, quantize,
add, a mul by a per-channel gate [1,C,1,1]...), a concat or qconcat (its axis renumbered),
a resize (its scales and sizes permuted). A float island between integer layers, or a
detector's neck of concats, resizes and gates, then runs channels last with no
transposes.
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


AXIS_KINDS = frozenset({"concat", "qconcat"})  # an ``axis`` attribute, renumbered
SCALED_KINDS = frozenset({"resize"})  # per-axis ``scales`` / ``sizes``, permuted


def _scalar_like(value: Value) -> bool:
    """A value of one element below rank 4: it broadcasts alike in any layout."""
    shape = value.type.shape
    return len(shape) < 4 and all(d == 1 for d in shape)


def _layout_free(op: Op) -> bool:
    """An op on rank-4 values (quantized per tensor if at all) that computes the same in
    any layout once its rank-4 operands are permuted alike and its per-axis attributes
    follow: an elementwise op (operands broadcasting against each other, or scalars), a
    concat, a resize."""
    if not op.operands or op.results[0].type.rank != 4:
        return False
    values = [*op.operands, *op.results]
    if not all(v.type.quant is None or v.type.quant.axis is None for v in values):
        return False
    if op.kind in AXIS_KINDS or op.kind in SCALED_KINDS:
        return op.operands[0].type.rank == 4
    if not has_trait(op.kind, "elementwise"):
        return False
    return all(v.type.rank == 4 or _scalar_like(v) for v in op.operands)


def _permuted_attrs(op: Op, perm: tuple[int, ...]) -> dict:
    """``op``'s attributes for its rank-4 values permuted by ``perm`` (new axis k is old
    axis perm[k])."""
    attrs = dict(op.attrs)
    if op.kind in AXIS_KINDS:
        attrs["axis"] = perm.index(attrs["axis"] % 4)
    if op.kind in SCALED_KINDS:
        for key in ("scales", "sizes"):
            if attrs.get(key):
                attrs[key] = tuple(attrs[key][p] for p in perm)
    return attrs


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
    if has_layout(op):
        activations = [0]
        attrs = dict(op.attrs, layout=layout)
    else:
        activations = [i for i, v in enumerate(operands) if v.type.rank == 4]
        attrs = _permuted_attrs(op, INTO[layout])
    for i in activations:
        operands[i] = _transpose(graph, operands[i], layout, index)
        index += 1
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
