"""quantize: a precision plan and calibrated ranges turn a float graph into level L1.

Each layer (conv2d, gemm with a constant weight) planned at int8/int4/int2 becomes a
``qconv2d`` / ``qgemm`` on quantized types: its weight a per-channel ``qconstant`` (levels
and scales from ``irc.quant``), its input an int8 value, its result ``qi8`` with the
calibrated range of the float result (after the fused activation). Glue ops between
integer layers follow: ``add`` becomes ``qadd``, ``global_avg_pool`` ``qglobal_avg_pool``,
``concat`` ``qconcat``, and the ops that only move or select levels (``irc.support.
keeps_levels``: reshape, max_pool, nearest resize) simply carry the quantized type. A
qconcat's output takes its inputs' scale and zero point when they share one (a byte copy);
otherwise the union of the ranges its inputs' types represent, so that no input clips and
an input whose range holds all the others' is copied, the rest requantized. Except at the
end of the graph: a concat whose result reaches only graph outputs (through views and
other concats) and whose inputs' parameters differ stays float, of its inputs each
dequantized at its own scale, so that one output's range does not crush another's (a
detector's box offsets beside its scores); counted under ``float-output-concat``. A smooth
activation (sigmoid, tanh, hard_sigmoid, hard_swish, gelu) of an int8 value becomes a ``qlut``,
a 256-entry table of its output levels (``irc.reference.lut``) at the calibrated range of
its result (none recorded: it stays float), and x · sigmoid(x) (SiLU: a sigmoid whose one
user multiplies it by its input) one table of the product; so is x · a + b with scalar
constants a and b (a mul, an add or sub, or a mul then an add: PP-LCNet's learnable
affine blocks), as the table "affine", where only integer layers and smooth activations
read the result (elsewhere the float path keeps it float); counted under ``lut``. (GELU
written out as erf arithmetic is one ``gelu`` op once ``recognize-activations`` ran.) ``quantize`` /
``dequantize`` appear only where a float value meets an integer op or the reverse. A layer
planned at fp16 keeps a float16 weight constant, cast to f32 where it is used (it computes
in float32).

Bias correction (``bias_correction=1``, the default): when the calibration recorded each
value's mean per channel (an ``irc.calibration.Calibration`` does), every integer layer's
bias is shifted by the mean error its rounded weights add to each output channel,
E[(W_q − W)·x] (a layer without a bias gets one). Rounding errors then average out instead
of shifting whole channels — what costs INT4/INT2 depthwise layers most.

Rounding: nearest level, or GPTQ's error-compensating rounding (``irc.gptq``) for the
layers whose input statistics the calibration carries (``Calibration.hessians``, made by
``irc.compile(..., rounding="gptq")``), which also picks each output channel's scale by
that output error and its damping by the error on held-out inputs
(``irc.gptq.round_layer``), on statistics centered about the input's mean where bias
correction applies and the layer has no fused activation (``InputStatistics.centered``:
MobileNetV2's projections lose 5–15% of their INT4 output error; behind a ReLU6,
centering cost its depthwise layers up to 60% at INT2); the levels stay on the layer's grid
([-127, 127], [-8, 7], {-3, -1, 1, 3}) either way. Every weight scale has a float16's
significand (``irc.quant.storable_scales``), which a model file stores in two bytes; GPTQ's
chosen scale is rounded to one after its levels are chosen.

The pass reads ``ctx.analyses["calibration"]`` (value name → (lo, hi), or an object with
``ranges``) and ``ctx.analyses["precision_plan"]`` (else the ``precision`` option applies
to every layer), and ``ctx.analyses["rounding_memo"]`` when present: a dict that keeps each
layer's rounded weights and scales by (layer, precision, GPTQ or not), its clipping
scales by ("clip-scales", layer, bits), and what GPTQ at several bit widths shares (a
layer's centered statistics, the factors of ``irc.gptq.Factors``), for compiles of many
plans of one graph, clipping and calibration (the ``search`` strategy's); its owner keeps
those fixed. A layer that cannot run at its planned precision (``irc.support``: a
fused hard_swish, a gemm with alpha ≠ 1 or a transposed input has no integer form) stays
fp32 and is counted under ``kept-float``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from irc import quant
from irc.errors import IrcError
from irc.gptq import Factors, InputStatistics, round_layer
from irc.ir import Graph, Op, Value
from irc.matching import constant_array, sole_user
from irc.opdef import build, has_trait, kinds_with
from irc.pass_manager import Pass, PassContext, register_pass
from irc.precision import PrecisionPlan, as_plan, layer_name
from irc.reference.lut import lut_table
from irc.support import keeps_levels, precision_problem

INT_PRECISIONS = {"int8": 8, "int4": 4, "int2": 2}
MOVING_KINDS = frozenset({"concat", "transpose", "slice", "gather", "expand", "tile"})
LUT_KINDS = ("sigmoid", "tanh", "hard_sigmoid", "hard_swish", "gelu")  # smooth: a table each


class CalibrationMissing(IrcError):
    """An integer op needs the range of a value that calibration did not record."""


def linear_output(op: Op) -> bool:
    """Whether ``op``'s result is its product plus bias (no fused activation). Only there
    does bias correction take the rounding's whole mean error away: behind a ReLU6 the
    error counts only where the output is not clamped, where the input's mean is another."""
    return op.attrs.get("activation", "none") == "none"


class _Rewriter:
    """Walks the graph once, replacing planned layers and glue by integer ops."""

    def __init__(self, graph: Graph, ranges, plan: PrecisionPlan, weights: str, means=None,
                 hessians=None, memo: dict | None = None):  # fmt: skip
        self.graph, self.ranges, self.plan, self.weights = graph, ranges, plan, weights
        self.memo = memo  # (layer, precision, gptq) -> (levels, scales), or None
        self.means = means  # value name -> mean per channel (bias correction), or None
        self.hessians = hessians  # layer name -> InputStatistics or Σxxᵀ (GPTQ), or None
        self.quantized: dict[int, Value] = {}  # id(float value) -> its int8 twin
        self.stats = {"int8": 0, "int4": 0, "int2": 0, "fp16": 0, "kept-float": 0,
                      "bias-corrected": 0, "gptq": 0}  # fmt: skip
        self.stats.update({"quantize": 0, "dequantize": 0, "glue": 0, "lut": 0,
                           "float-output-concat": 0})  # fmt: skip
        self.output_only = _reaching_only_outputs(graph)

    # -- values
    def params(self, value: Value) -> tuple[float, int]:
        """Scale and zero point of float ``value`` from its calibrated range."""
        try:
            lo, hi = self.ranges[value.name]
        except KeyError:
            raise CalibrationMissing(
                f"no calibrated range for %{value.name}; calibrate the graph first"
            ) from None
        return quant.activation_params(lo, hi)

    def int8_of(self, value: Value, before: Op) -> Value:
        """The int8 twin of float ``value``, quantizing it just before ``before`` if new."""
        twin = self.quantized.get(id(value))
        if twin is not None:
            return twin
        scale, zero_point = self.params(value)
        op = build(
            self.graph, "quantize", [value], {"scale": scale, "zero_point": zero_point},
            result_names=[self.graph.fresh_name(value.name + ".q")],
            index=self.graph.index_of(before),
        )  # fmt: skip
        self.quantized[id(value)] = op.result
        return op.result

    def int_name(self, old: Op) -> str:
        """The name of the int8 value replacing ``old``'s float result: ``<name>.q``."""
        return self.graph.fresh_name(old.result.name + ".q")

    def replace(self, old: Op, new: Op) -> None:
        """``new`` (int8) takes ``old``'s place: float users read a dequantize of it, which
        keeps the float result's name."""
        graph = self.graph
        name = old.result.name
        graph.rename(old.result, graph.fresh_name(name + ".float"))
        dq = build(graph, "dequantize", [new.result], result_names=[name],
                   index=graph.index_of(new) + 1)  # fmt: skip
        graph.replace_all_uses_with(old.result, dq.result)
        graph.erase_op(old)
        self.quantized[id(dq.result)] = new.result

    def has_twin(self, value: Value) -> bool:
        return id(value) in self.quantized

    # -- ops
    def run(self) -> dict[str, int]:
        for op in list(self.graph.ops):
            if op.graph is not self.graph:  # erased: a SiLU's mul, taken with its sigmoid
                continue
            if has_trait(op.kind, "layer") and constant_array(op.operands[1]) is not None:
                self.layer(op)
            elif op.kind == "add" and all(self.has_twin(v) for v in op.operands):
                if op.attrs["activation"] in ("none", "relu", "clip"):
                    self.glue(op, "qadd", op.operands, _activation(op))
            elif op.kind == "global_avg_pool" and self.has_twin(op.operands[0]):
                self.glue(op, "qglobal_avg_pool", op.operands, {})
            elif op.kind == "concat" and all(self.has_twin(v) for v in op.operands):
                self.concat(op)
            elif op.kind in LUT_KINDS and self.has_twin(op.operands[0]):
                self.lut(op)
            elif (affine := _affine(self.graph, op)) is not None and self.has_twin(affine[0]):
                x, alpha, beta, last = affine  # x · alpha + beta, from op to last
                if self.read_as_int8(last.result):
                    self.table(x, last, "affine", {"alpha": alpha, "beta": beta})
            elif keeps_levels(op) and self.has_twin(op.operands[0]):
                twin = self.quantized[id(op.operands[0])]
                new = build(self.graph, op.kind, [twin, *op.operands[1:]], op.attrs,
                            name=op.name, result_names=[self.int_name(op)],
                            index=self.graph.index_of(op))  # fmt: skip
                self.replace(op, new)
                self.stats["glue"] += 1
        self.graph.remove_dead_ops()
        for kind in ("quantize", "dequantize"):
            self.stats[kind] = sum(1 for op in self.graph.ops if op.kind == kind)
        return self.stats

    def glue(self, op: Op, kind: str, operands, attrs: dict) -> None:
        scale, zero_point = self.params(op.result)
        twins = [self.quantized[id(v)] for v in operands]
        new = build(self.graph, kind, twins, {"out_scale": scale, "out_zero_point": zero_point,
                    **attrs}, name=op.name, result_names=[self.int_name(op)],
                    index=self.graph.index_of(op))  # fmt: skip
        self.replace(op, new)
        self.stats["glue"] += 1

    def lut(self, op: Op) -> None:
        """A smooth activation of an int8-twinned value as a ``qlut``: a sigmoid whose one
        user multiplies it by its own input as one table of x·sigmoid(x) (SiLU). Without a
        calibrated range of the result it stays float."""
        x = op.operands[0]
        silu = _silu_mul(self.graph, op)
        last, function = (silu, "silu") if silu is not None else (op, op.kind)
        if op.attrs.get("approximate") == "tanh":
            function = "gelu_tanh"
        extra = {k: op.attrs[k] for k in ("alpha", "beta") if k in op.attrs}
        self.table(x, last, function, extra)

    def table(self, x: Value, last: Op, function: str, extra: dict) -> None:
        """``last``'s result, ``function`` (with ``extra``: alpha, beta) of int8-twinned
        ``x``, as one ``qlut`` at the result's calibrated range (none: it stays float)."""
        if last.result.name not in self.ranges:
            return
        scale, zero_point = self.params(last.result)
        twin = self.quantized[id(x)]
        in_scale, in_zero = twin.type.quant.scales[0], twin.type.quant.zero_points[0]
        table = lut_table(function, in_scale, in_zero, scale, zero_point, **extra)
        attrs = {"table": table, "function": function, "out_scale": scale,
                 "out_zero_point": zero_point, **extra}  # fmt: skip
        new = build(self.graph, "qlut", [twin], attrs, name=last.name,
                    result_names=[self.int_name(last)],
                    index=self.graph.index_of(last))  # fmt: skip
        self.replace(last, new)
        self.stats["lut"] += 1

    def read_as_int8(self, value: Value) -> bool:
        """Whether every user of float ``value`` will read it as int8: a layer planned at an
        integer precision it can run at, or a smooth activation. Only then is quantizing
        ``value`` no loss against the float path, which quantizes it before them anyway."""
        users = [use.op for use in value.uses]
        if not users or value in self.graph.outputs:
            return False
        for user in users:
            if user.kind in LUT_KINDS:
                continue
            if not has_trait(user.kind, "layer") or user.operands[0] is not value:
                return False
            precision = self.plan.precision_of(user)
            if precision not in INT_PRECISIONS or precision_problem(user, precision):
                return False
        return True

    def concat(self, op: Op) -> None:
        """``op`` as a qconcat at its inputs' common quantization, or, where they differ,
        at the union of the ranges they represent."""
        twins = [self.quantized[id(v)] for v in op.operands]
        params = {(t.type.quant.scales[0], t.type.quant.zero_points[0]) for t in twins}
        if len(params) > 1 and id(op.result) in self.output_only:
            self.stats["float-output-concat"] += 1  # each input keeps its own scale
            return
        if len(params) == 1:
            ((scale, zero_point),) = params
        else:
            ranges = [quant.represented_range(s, z) for s, z in params]
            lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
            scale, zero_point = quant.activation_params(lo, hi)
        attrs = {"axis": op.attrs["axis"], "out_scale": scale, "out_zero_point": zero_point}
        new = build(self.graph, "qconcat", twins, attrs, name=op.name,
                    result_names=[self.int_name(op)], index=self.graph.index_of(op))  # fmt: skip
        self.replace(op, new)
        self.stats["glue"] += 1

    def rounded(self, op: Op, w: np.ndarray, bits: int, hessian) -> tuple[np.ndarray, np.ndarray]:
        """(levels, per-channel scales) of layer ``op``'s weight ``w`` at ``bits``: GPTQ's
        rounding given its statistics ``hessian``, each channel's scale by its output error;
        else nearest on the clipping's scales."""
        key = ("clip-scales", layer_name(op), bits)  # the same with GPTQ or without
        if self.memo is not None and key in self.memo:
            scales = self.memo[key]
        else:
            try:
                scales = quant.weight_scales(w, bits, self.weights)
            except ValueError as e:
                raise ValueError(f"layer {op.label()}: {e}") from None
            if self.memo is not None:
                self.memo[key] = scales
        if hessian is None:
            return quant.quantize_weights(w, scales, bits), scales
        group = op.attrs["group"] if op.kind == "conv2d" else 1
        corrected = self.input_means(op, w) is not None
        if corrected and linear_output(op) and isinstance(hessian, InputStatistics):
            hessian = self.kept(("centered", layer_name(op)), hessian.centered)
        factors = None if self.memo is None else self.kept(("gptq-factors",), Factors)
        levels, scales, _ = round_layer(w, bits, hessian, group, self.weights, scales, factors)
        return levels, quant.storable_scales(scales)  # the levels stay; a file holds this

    def kept(self, key, make):
        """``make()``, kept in the rounding memo under ``key`` when there is one: centered
        statistics and GPTQ factors that one layer's roundings at several bit widths share
        (by identity, so they must be the same objects each time)."""
        if self.memo is None:
            return make()
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def layer(self, op: Op) -> None:
        precision = self.plan.precision_of(op)
        if precision == "fp32":
            return
        if precision_problem(op, precision) is not None:  # irc.support: it stays float
            self.stats["kept-float"] += 1
            return
        if precision == "fp16":
            self.half(op)
            return
        bits = INT_PRECISIONS[precision]
        graph = self.graph
        w = constant_array(op.operands[1])
        if op.kind == "gemm" and not op.attrs["trans_b"]:
            w = w.T
        hessian = None if self.hessians is None else self.hessians.get(layer_name(op))
        key = (layer_name(op), precision, hessian is not None)
        if self.memo is not None and key in self.memo:
            levels, scales = self.memo[key]
        else:
            levels, scales = self.rounded(op, w, bits, hessian)
            if self.memo is not None:
                self.memo[key] = levels, scales
        if hessian is not None:
            self.stats["gptq"] += 1
        shift = self.bias_shift(op, w, levels, scales)
        wq = build(graph, "qconstant", [], {
            "value": np.ascontiguousarray(levels), "dtype": f"i{bits}",
            "shape": levels.shape, "scales": scales, "axis": 0,
        }, result_names=[graph.fresh_name(op.operands[1].name + f".i{bits}")],
            index=graph.index_of(op))  # fmt: skip
        x = self.int8_of(op.operands[0], op)
        operands = [x, wq.result]
        if len(op.operands) > 2 or shift is not None:
            bias = op.operands[2] if len(op.operands) > 2 else None
            b = np.zeros(levels.shape[0], np.float32) if bias is None else constant_array(bias)
            b = b.reshape(-1)
            if shift is not None:
                b = (b.astype(np.float64) - shift).astype(np.float32)
                self.stats["bias-corrected"] += 1
            if (
                bias is None
                or shift is not None
                or b.shape != bias.type.shape
                or (b.dtype != np.float32)
            ):
                hint = (bias.name if bias is not None else op.result.name) + ".bias"
                bias = build(graph, "constant", [], {"value": b.astype(np.float32)},
                             result_names=[graph.fresh_name(hint)],
                             index=graph.index_of(op)).result  # fmt: skip
            operands.append(bias)
        scale, zero_point = self.params(op.result)
        attrs = {"out_scale": scale, "out_zero_point": zero_point, **_activation(op)}
        if op.kind == "conv2d":
            kind = "qconv2d"
            for key in ("strides", "pads", "dilations", "group"):
                attrs[key] = op.attrs[key]
        else:
            kind = "qgemm"
        new = build(graph, kind, operands, attrs, name=op.name,
                    result_names=[self.int_name(op)],
                    index=graph.index_of(op))  # fmt: skip
        self.replace(op, new)
        self.stats[precision] += 1

    def input_means(self, op: Op, w: np.ndarray) -> np.ndarray | None:
        """The per-channel means of ``op``'s input that bias correction uses, or None
        (none recorded, or not one per input channel of ``w``)."""
        mu = None if self.means is None else self.means(op.operands[0].name)
        group = op.attrs["group"] if op.kind == "conv2d" else 1
        return mu if mu is not None and mu.shape == (w.shape[1] * group,) else None

    def bias_shift(self, op: Op, w: np.ndarray, levels: np.ndarray, scales) -> np.ndarray | None:
        """Bias correction: the mean output error the rounded weights add per output
        channel, E[(W_q − W)·x] with x's per-channel means from calibration (padding's
        zeros ignored); None without recorded means."""
        mu = self.input_means(op, w)
        if mu is None:
            return None
        s = np.asarray(scales, np.float64).reshape((-1,) + (1,) * (levels.ndim - 1))
        error = levels.astype(np.float64) * s - w.astype(np.float64)
        if op.kind == "gemm":
            return error @ mu
        out, per_group, group = error.shape[0], error.shape[1], op.attrs["group"]
        # input channels of output channel o: its group's slice of mu
        mu_of = mu.reshape(group, per_group)[np.arange(out) // (out // group)]  # [O, Cg]
        return np.einsum("ochw,oc->o", error, mu_of)

    def half(self, op: Op) -> None:
        """fp16: the weight stored as float16, cast to float32 where the layer reads it."""
        graph = self.graph
        weight = op.operands[1]
        w16 = build(graph, "constant", [], {"value": constant_array(weight).astype(np.float16)},
                    result_names=[graph.fresh_name(weight.name + ".f16")],
                    index=graph.index_of(op))  # fmt: skip
        cast = build(graph, "cast", [w16.result], {"to": "f32"},
                     result_names=[graph.fresh_name(weight.name + ".f32")],
                     index=graph.index_of(op))  # fmt: skip
        graph.set_operand(op, 1, cast.result)
        self.stats["fp16"] += 1


def _silu_mul(graph: Graph, op: Op) -> Op | None:
    """The mul that makes sigmoid ``op`` a SiLU, x · sigmoid(x): its sole user, multiplying
    it by its own input; else None."""
    if op.kind != "sigmoid":
        return None
    user = sole_user(graph, op.result)
    if user is None or user.kind != "mul":
        return None
    a, b = user.operands
    other = b if a is op.result else a
    if other is not op.operands[0] or user.result.type != op.result.type:
        return None
    return user


def _scalar_operand(op: Op) -> tuple[Value, float] | None:
    """(the other operand, the scalar) when binary ``op`` has a float constant of one
    element (of at most the other's rank) and a value of its result's type, else None."""
    if len(op.operands) != 2 or op.attrs.get("activation", "none") != "none":
        return None
    for i in (0, 1):
        c, x = constant_array(op.operands[i]), op.operands[1 - i]
        if (c is not None and c.size == 1 and c.dtype == np.float32
                and x.type == op.result.type and constant_array(x) is None):  # fmt: skip
            return x, float(c.reshape(-1)[0])
    return None


def _affine(graph: Graph, op: Op) -> tuple[Value, float, float, Op] | None:
    """(x, alpha, beta, last op) when ``op`` starts x · alpha + beta written as a mul by a
    scalar constant, an add or a sub of one (x − c, not c − x), or a mul followed by its
    sole user adding or subtracting one; else None. Each form rounds as x·alpha + beta
    does in float32 (a missing mul is alpha = 1, exact; a sub is the add of −c, exact)."""
    found = _scalar_operand(op) if op.kind in ("mul", "add", "sub") else None
    if found is None or (op.kind == "sub" and op.operands[0] is not found[0]):
        return None
    x, c = found
    if op.kind == "add":
        return x, 1.0, c, op
    if op.kind == "sub":
        return x, 1.0, -c, op
    user = sole_user(graph, op.result)
    shift = _scalar_operand(user) if user is not None and user.kind in ("add", "sub") else None
    if shift is None or shift[0] is not op.result:
        return x, c, 0.0, op
    if user.kind == "sub" and user.operands[0] is not op.result:
        return x, c, 0.0, op
    return x, c, (shift[1] if user.kind == "add" else -shift[1]), user


def _reaching_only_outputs(graph: Graph) -> set[int]:
    """ids of the values every use of which leads only to graph outputs, through ops that
    only move data (``MOVING_KINDS``): nothing computes on them any more."""
    passing = MOVING_KINDS | kinds_with("view")
    outputs = {id(v) for v in graph.outputs}
    found: set[int] = set()
    for op in reversed(graph.ops):  # users come after their operands
        for value in op.results:
            users = [use.op for use in value.uses]
            if (users or id(value) in outputs) and all(
                user.kind in passing and all(id(r) in found for r in user.results) for user in users
            ):
                found.add(id(value))
    return found


def _activation(op: Op) -> dict:
    return {k: op.attrs[k] for k in ("activation", "act_min", "act_max")}


@register_pass
@dataclass(frozen=True)
class Quantize(Pass):
    """Rewrite planned layers (and the glue between them) as integer ops on quantized types."""

    name: ClassVar[str] = "quantize"
    precision: str = "int8"  # for every layer, unless the context holds a precision plan
    weights: str = "mse"  # weight clipping: mse (error-minimising) or minmax
    bias_correction: int = 1  # shift biases by the rounding's mean error (needs channel means)

    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        calibration = ctx.analyses.get("calibration")
        plan = as_plan(ctx.analyses.get("precision_plan") or self.precision)
        plan.check_names(graph)
        if calibration is None:
            if plan.is_float:
                calibration = {}
            else:
                raise CalibrationMissing(
                    "the quantize pass needs calibrated ranges (irc.compile(..., "
                    "calibration=data) or irc compile --calib DATA)"
                )
        ranges = getattr(calibration, "ranges", calibration)
        means = getattr(calibration, "channel_mean", None) if self.bias_correction else None
        hessians = getattr(calibration, "hessians", None)
        memo = ctx.analyses.get("rounding_memo")
        stats = _Rewriter(graph, ranges, plan, self.weights, means, hessians, memo).run()
        return {k: v for k, v in stats.items() if v}
