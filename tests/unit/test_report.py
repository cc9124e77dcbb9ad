"""``irc.report.model_report``: per-layer precision and bytes, checked against hand counts.

Bytes of a layer = weight payload as stored (packed int4/int2: ceil(K*bits/8) bytes per
output channel) + its weight scales (4 bytes each here: these random ones lack a float16's
significand) + the bias payload as stored (its int32 levels in the narrowest integer type
holding them: int16 here); an integer layer's multiplier, shift and bias scales are not
stored (its scales determine them) unless they differ from that; FP32 bytes = (params +
bias elements) * 4.
"""

from __future__ import annotations

import json

import numpy as np
from onnx_builders import tiny_cnn

import irc
from irc import quant
from irc.ir import Graph
from irc.opdef import build
from irc.pass_manager import PassContext, PassManager
from irc.pipelines import DEFAULT_FLOAT_PIPELINE
from irc.precision import as_plan
from irc.report import format_bytes, model_report
from irc.types import DType, TensorType


def _layer(graph, kind, x, shape, bits, rng, **attrs):
    """An L3 integer layer: qconstant weight (packed below 8 bits), i32 bias, M and shift."""
    levels = rng.choice(quant.weight_levels(bits), shape).astype(np.int8)
    channels = shape[0]
    x_scale = x.type.quant.scales[0]
    w_scales = (rng.random(channels) * 0.02 + 0.01).astype(np.float32)
    w = build(graph, "qconstant", [], {
        "value": quant.pack(levels, bits) if bits < 8 else levels, "dtype": f"i{bits}",
        "shape": shape, "scales": w_scales, "packed": int(bits < 8),
    }).result  # fmt: skip
    b = build(graph, "qconstant", [], {
        "value": quant.quantize_bias(rng.standard_normal(channels), x_scale, w_scales),
        "dtype": "i32", "shape": (channels,), "scales": quant.bias_scales(x_scale, w_scales),
    }).result  # fmt: skip
    m, s = quant.layer_multipliers(x_scale, w_scales, 0.05)
    m = build(graph, "constant", [], {"value": m}).result
    s = build(graph, "constant", [], {"value": s}).result
    attrs.update(out_scale=0.05, out_zero_point=0)
    return build(graph, kind, [x, w, b, m, s], attrs, name=attrs.pop("name", "")).result


def integer_graph() -> Graph:
    """int8 conv [8,3,3,3] → int4 depthwise [8,1,3,3] → int2 pointwise [16,8,1,1] → pool →
    int4 qgemm [5,16], plus one float constant outside the layers (20 bytes)."""
    rng = np.random.default_rng(0)
    graph = Graph("ints")
    x = graph.add_input("x", TensorType(DType.F32, (1, 3, 8, 8)))
    q = build(graph, "quantize", [x], {"scale": 0.03}).result
    y = _layer(graph, "qconv2d", q, (8, 3, 3, 3), 8, rng, pads=(1, 1, 1, 1), name="stem")
    y = _layer(graph, "qconv2d", y, (8, 1, 3, 3), 4, rng, group=8, pads=(1, 1, 1, 1), name="dw")
    y = _layer(graph, "qconv2d", y, (16, 8, 1, 1), 2, rng, name="pw")
    y = build(graph, "qglobal_avg_pool", [y], {"out_scale": 0.02}).result
    y = build(graph, "reshape", [y], {"shape": (1, 16)}).result
    y = _layer(graph, "qgemm", y, (5, 16), 4, rng, name="fc")
    y = build(graph, "dequantize", [y], {}).result
    offset = build(graph, "constant", [], {"value": np.ones((1, 5), np.float32)}).result
    graph.outputs = [build(graph, "add", [y, offset], {}).result]
    return graph


# (name, kind, precision, params, weight bytes, bias bytes, requant bytes, FP32 bytes)
EXPECTED = [
    # int8: 216 levels + 8 scales; bias 8 levels stored as int16 (its scales, M and shift
    # are derived)
    ("stem", "qconv2d", "int8", 216, 216 + 32, 16, 0, (216 + 8) * 4),
    # int4, K = 9: ceil(36 / 8) = 5 bytes per channel
    ("dw", "qconv2d", "int4", 72, 8 * 5 + 32, 16, 0, (72 + 8) * 4),
    # int2, K = 8: 2 bytes per channel
    ("pw", "qconv2d", "int2", 128, 16 * 2 + 64, 32, 0, (128 + 16) * 4),
    # int4, K = 16: 8 bytes per output feature
    ("fc", "qgemm", "int4", 80, 5 * 8 + 20, 10, 0, (80 + 5) * 4),
]


def test_integer_layers_count_stored_bytes():
    report = model_report(integer_graph())
    got = [
        (r.name, r.kind, r.precision, r.params, r.weight_bytes, r.bias_bytes, r.requant_bytes,
         r.fp32_bytes)
        for r in report.layers
    ]  # fmt: skip
    assert got == EXPECTED
    assert [r.bytes for r in report.layers] == [264, 88, 128, 70]
    assert report.layers[1].shape == (1, 8, 8, 8) and report.layers[3].shape == (1, 5)
    t = report.totals
    assert (t.layers, t.params, t.other_bytes) == (4, 496, 20)
    assert t.layer_bytes == 550 and t.layer_fp32_bytes == 896 + 320 + 576 + 340
    assert t.bytes == 570 and t.fp32_bytes == 2132 + 20
    assert t.counts == {"int8": 1, "int4": 2, "int2": 1}
    assert abs(t.ratio - 2152 / 570) < 1e-12


def test_a_multiplier_that_is_not_its_derivation_is_stored_and_counted():
    graph = integer_graph()
    stem = next(op for op in graph.ops if op.name == "stem")
    multiplier = stem.operands[3].producer
    multiplier.attrs["value"] = multiplier.attrs["value"] + 1  # hand-edited
    row = model_report(graph).layers[0]
    assert (row.bias_bytes, row.requant_bytes, row.bytes) == (16, 32, 264 + 32)


def test_an_elided_dump_reports_the_same_numbers_but_elided_biases_at_int32():
    """A bias whose levels the dump elides counts 4 bytes a level (its type's: the levels,
    and so their narrowest type, are unknown); everything else as in the graph."""
    graph = integer_graph()
    elided = irc.parse_graph(irc.print_graph(graph), verify=False)
    got, want = model_report(elided).to_dict(), model_report(graph).to_dict()
    widened = 0
    for row, full in zip(got["layers"], want["layers"]):
        extra = row["bias_bytes"] - full["bias_bytes"]
        assert extra in (0, full["bias_bytes"])  # int16 levels: twice the bytes at int32
        assert row == dict(full, bias_bytes=row["bias_bytes"], bytes=full["bytes"] + extra,
                           ratio=row["ratio"])  # fmt: skip
        widened += extra
    assert widened == 2 * 16  # pw's 16 levels are elided (the shorter biases print inline)
    assert got["totals"]["bytes"] == want["totals"]["bytes"] + widened


def test_fp16_layers_and_text_table():
    graph = irc.import_onnx(tiny_cnn(batch=1))
    PassManager(DEFAULT_FLOAT_PIPELINE).run(graph)
    ctx = PassContext()
    ctx.analyses["precision_plan"] = as_plan({"conv": "fp16"})
    PassManager("quantize", ctx).run(graph)
    report = model_report(graph)
    conv, fc = report.layers
    # conv: 108 float16 weights and 4 float32 biases; fc stays fp32: 20 + 5 floats
    assert (conv.precision, conv.bytes, conv.fp32_bytes) == ("fp16", 108 * 2 + 16, 448)
    assert (fc.precision, fc.bytes, fc.fp32_bytes) == ("fp32", 100, 100)
    assert report.totals.counts == {"fp32": 1, "fp16": 1}
    text = str(report)
    assert text == report.to_text()
    lines = text.splitlines()
    assert lines[0].split() == [
        "layer", "op", "output", "precision", "params", "bytes", "FP32", "bytes", "ratio",
    ]  # fmt: skip
    assert lines[2].split() == ["conv", "conv2d", "[1,4,8,8]", "fp16", "108", "232", "448", "1.9×"]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule align
    assert lines[-1] == "size 332 B vs FP32 548 B (1.65× smaller)"


def test_to_dict_is_json():
    data = json.loads(json.dumps(model_report(integer_graph()).to_dict()))
    assert data["graph"] == "ints"
    assert data["layers"][1] == {
        "name": "dw", "kind": "qconv2d", "shape": [1, 8, 8, 8], "precision": "int4",
        "params": 72, "weight_bytes": 72, "bias_bytes": 16, "requant_bytes": 0,
        "fp32_bytes": 320, "bytes": 88, "ratio": round(320 / 88, 4),
    }  # fmt: skip
    assert data["totals"]["bytes"] == 570 and data["totals"]["counts"]["int4"] == 2


def test_float_graph_without_bias_and_other_constants():
    graph = irc.parse_graph(
        """graph @g(%x: f32[1,4]) {
  %w = constant() {value=dense<[1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0]>} : f32[2,4]
  %y = gemm(%x, %w) {trans_b=1} : f32[1,2] loc("fc")
  %c = constant() {value=dense<[1.0,2.0]>} : f32[2]
  %z = add(%y, %c) : f32[1,2]
  return %z
}
"""
    )
    report = model_report(graph)
    (fc,) = report.layers
    assert (fc.name, fc.precision, fc.params, fc.bytes, fc.bias_bytes) == ("fc", "fp32", 8, 32, 0)
    assert (report.totals.bytes, report.totals.fp32_bytes, report.totals.ratio) == (40, 40, 1.0)


def test_format_bytes():
    assert [format_bytes(n) for n in (999, 1500, 99_999, 2_126_144)] == [
        "999 B", "1.5 kB", "100.0 kB", "2.13 MB",
    ]  # fmt: skip
