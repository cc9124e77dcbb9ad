"""One layer compiled alone, at one precision: what sensitivity and the cost model run.

A *layer program* is the graph ``x → layer → y`` cut out of a float model (the layer's
constants copied, its input and output keeping their names, so the model's calibrated
ranges apply), quantized by the same passes as a whole model (``quantize``,
``lower-quantized``, ``pack-weights``, ``channels-last``) and compiled by the Numba
backend. At an integer precision its ops are ``quantize → qconv2d/qgemm → dequantize``:
exactly the kernels the compiled model runs for that layer, and the two boundary
conversions a lone integer layer among float ones pays. At fp16 it is a float16 weight
cast to f32 and the float layer; at fp32 the float layer alone (a conv channels last,
between the transposes in and out of its layout, which the cost model does not count).
With ``channels_last`` a conv's program reads and writes NHWC arrays instead, as the conv
does in a model compiled channels last, and its ops carry no transposes at all.

    >>> prog = layer_program(graph, op, "int4", calibration, batch=8)
    >>> (y,) = prog(x)                     # float in, float out
"""

from __future__ import annotations

from irc.build import build
from irc.compiled import CompiledModel
from irc.ir import Graph, Op
from irc.opdef import build as build_op
from irc.ops.shape_rules import TO_NCHW, TO_NHWC
from irc.precision import PrecisionPlan, layer_name
from irc.stages import quantize
from irc.types import TensorType


def layer_graph(graph: Graph, op: Op, batch: int, channels_last: bool = False) -> Graph:
    """A graph of ``op`` alone over a float input of batch ``batch`` (``graph`` is read);
    with ``channels_last`` (a conv) its input and output are NHWC, transposed to and from
    the layer's NCHW (the transposes cancel once the graph is converted channels last)."""
    x = op.operands[0]
    shape = (batch,) + tuple(x.type.shape[1:])
    cut = Graph(f"layer_{layer_name(op)}")
    if channels_last:
        outside = cut.add_input(x.name + ".nhwc", TensorType(x.type.dtype,
                                tuple(shape[p] for p in TO_NHWC)))  # fmt: skip
        inside = build_op(cut, "transpose", [outside], {"perm": TO_NCHW}, result_names=[x.name])
        operands = [inside.result]
    else:
        operands = [cut.add_input(x.name, TensorType(x.type.dtype, shape))]
    for value in op.operands[1:]:
        producer = value.producer
        if producer is None or producer.kind != "constant":
            raise ValueError(f"layer {op.label()}: operand %{value.name} is not a constant")
        copied = build_op(cut, "constant", [], dict(producer.attrs), result_names=[value.name])
        operands.append(copied.result)
    layer = build_op(cut, op.kind, operands, dict(op.attrs), name=op.name,
                  result_names=[op.result.name])  # fmt: skip
    cut.outputs = [layer.result]
    if channels_last:
        back = build_op(cut, "transpose", [layer.result], {"perm": TO_NHWC},
                        result_names=[op.result.name + ".nhwc"])  # fmt: skip
        cut.outputs = [back.result]
    return cut


def quantized_layer_graph(graph: Graph, op: Op, precision: str, ranges, batch: int,
                          weights: str = "mse", channels_last: bool = False,
                          rounding_memo: dict | None = None) -> Graph:  # fmt: skip
    """``layer_graph`` quantized at ``precision`` by the model's quantization stage
    (``rounding_memo`` as for ``irc.stages.quantize``)."""
    cut = layer_graph(graph, op, batch, channels_last)
    return quantize(cut, PrecisionPlan(precision), ranges, weights=weights,
                    rounding_memo=rounding_memo)  # fmt: skip


def layer_program(
    graph: Graph, op: Op, precision: str, ranges, batch: int = 1,
    num_threads: int | None = None, weights: str = "mse", channels_last: bool = False,
    rounding_memo: dict | None = None,
) -> CompiledModel:  # fmt: skip
    """The compiled layer program; see the module docstring. Not warmed up: its kernels
    are compiled (or loaded from Numba's cache) on its first call."""
    cut = quantized_layer_graph(graph, op, precision, ranges, batch, weights, channels_last,
                                rounding_memo)  # fmt: skip
    return build(cut, num_threads=num_threads, cache=False, warmup=False)
