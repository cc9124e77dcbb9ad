"""Property: random valid graphs print, parse and print identically (elided and full).

The graphs mix symbolic and static shapes, quantized input types, awkward value and node
names (quotes, slashes, unicode), special floats (nan, ±inf, -0.0) in attributes and
constants, and ops with and without optional operands.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irc.ir import Graph
from irc.opdef import build
from irc.parser import parse_graph
from irc.printer import print_graph
from irc.types import DType, QuantParams, TensorType
from irc.verifier import verify_graph

names = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() == s)
special_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
bounds = st.floats(allow_nan=False, allow_infinity=True, width=32)  # a NaN clamp bound is refused


@st.composite
def quant_params(draw, channels: int):
    if draw(st.booleans()):
        return QuantParams.per_tensor(draw(st.floats(1e-6, 10.0)), draw(st.integers(-128, 127)))
    scales = draw(st.lists(st.floats(1e-6, 10.0), min_size=channels, max_size=channels))
    return QuantParams.per_axis(scales, [0] * channels, axis=1)


@st.composite
def random_graphs(draw) -> Graph:
    g = Graph(draw(st.sampled_from(["main", "g", "a graph"])))
    channels = draw(st.integers(1, 4))
    batch = draw(st.sampled_from([1, 2, "N", "batch"]))
    quant = draw(quant_params(channels)) if draw(st.booleans()) else None
    x = g.add_input(draw(names), TensorType(DType.F32, (batch, channels, 5, 5), quant))
    live = [x]
    for _ in range(draw(st.integers(1, 10))):
        src = draw(st.sampled_from(live))
        choice = draw(
            st.sampled_from(
                [
                    "unary",
                    "clip",
                    "leaky",
                    "binary",
                    "conv",
                    "const",
                    "reshape",
                    "transpose",
                    "concat",
                    "softmax",
                ]
            )
        )
        loc = draw(st.one_of(st.just(""), names))
        rname = [draw(st.one_of(st.just(""), names))]
        rname = rname if not rname[0] or not g.has_value(rname[0]) else [""]
        shape = src.type.shape
        if choice == "unary":
            kind = draw(st.sampled_from(["relu", "sigmoid", "tanh", "hard_swish"]))
            op = build(g, kind, [src], name=loc, result_names=rname)
        elif choice == "clip":
            op = build(
                g,
                "clip",
                [src],
                {"min": draw(bounds), "max": draw(bounds)},
                name=loc,
                result_names=rname,
            )
        elif choice == "leaky":
            op = build(
                g,
                "leaky_relu",
                [src],
                {"alpha": draw(special_floats)},
                name=loc,
                result_names=rname,
            )
        elif choice == "binary":
            peers = [v for v in live if v.type.shape == shape]
            other = draw(st.sampled_from(peers))
            kind = draw(st.sampled_from(["add", "sub", "mul", "div"]))
            op = build(g, kind, [src, other], name=loc, result_names=rname)
        elif choice == "conv" and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
            cin = shape[1]
            cout = draw(st.integers(1, 3))
            size = draw(st.sampled_from([1, 4, 60]))  # small constants print; large elide
            w = np.asarray(draw(st.lists(special_floats, min_size=size, max_size=size)), np.float32)
            w = np.resize(w, (cout, cin, 1, 1)).astype(np.float32)
            wv = build(g, "constant", [], {"value": w}).result
            operands = [src, wv]
            if draw(st.booleans()):
                operands.append(
                    build(g, "constant", [], {"value": np.arange(cout, dtype=np.float32)}).result
                )
            pads = tuple(draw(st.lists(st.integers(0, 2), min_size=4, max_size=4)))
            op = build(g, "conv2d", operands, {"pads": pads}, name=loc, result_names=rname)
        elif choice == "const":
            dtype = draw(st.sampled_from([np.float32, np.int64, np.int8, np.float16, np.bool_]))
            n = draw(st.integers(0, 40))
            data = np.arange(n).astype(dtype) if dtype is not np.bool_ else np.arange(n) % 2 == 0
            op = build(g, "constant", [], {"value": data}, name=loc, result_names=rname)
        elif (
            choice == "reshape"
            and all(isinstance(d, int) for d in shape[1:])
            and 0 not in shape  # -1 beside a zero-size dimension is ambiguous (an error)
        ):
            op = build(g, "reshape", [src], {"shape": (0, -1)}, name=loc, result_names=rname)
        elif choice == "transpose":
            perm = tuple(draw(st.permutations(range(len(shape)))))
            op = build(g, "transpose", [src], {"perm": perm}, name=loc, result_names=rname)
        elif choice == "concat" and len(shape) == 4 and isinstance(shape[1], int):
            op = build(g, "concat", [src, src], {"axis": 1}, name=loc, result_names=rname)
        else:
            op = build(g, "softmax", [src], {"axis": len(shape) - 1}, name=loc, result_names=rname)
        if op.result.type.dtype == DType.F32:
            live.append(op.result)
    g.outputs = draw(st.lists(st.sampled_from(live), min_size=1, max_size=3))
    return g


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.booleans())
def test_print_parse_print_is_identity(graph, full):
    verify_graph(graph)
    text = print_graph(graph, full=full)
    reparsed = parse_graph(text)
    assert print_graph(reparsed, full=full) == text
    # an elided dump keeps per-axis quantization as its axis and count only
    expected = [_elided(v.type) if not full else v.type for v in graph.inputs]
    assert [v.type for v in reparsed.inputs] == expected


def _elided(t):
    if t.quant is None or t.quant.count <= 8:  # the printer's default elide_above
        return t
    return TensorType(t.dtype, t.shape, t.quant.elide())


@settings(max_examples=50, deadline=None)
@given(random_graphs())
def test_full_dump_keeps_constant_data_bit_exact(graph):
    reparsed = parse_graph(print_graph(graph, full=True))
    for a, b in zip(graph.ops, reparsed.ops):
        if a.kind == "constant":
            np.testing.assert_array_equal(a.attrs["value"], b.attrs["value"])
            assert a.attrs["value"].dtype == b.attrs["value"].dtype
