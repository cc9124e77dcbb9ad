"""Hostile text IR (issue 25's fuzzing findings): literals that do not fit where they go,
requantization shifts outside the spec's range, and verification errors that must name
their cause, in the API and on the command line."""

from __future__ import annotations

import numpy as np
import pytest

import irc
from irc.errors import ParseError, VerifyError
from irc.quant import MAX_SHIFT
from irc.tools.cli import main as cli_main
from irc.types import DType


def constant_graph(payload: str, type_: str) -> str:
    """A graph returning one constant with ``payload`` (the text inside dense<>)."""
    return (
        f"graph @g() {{\n  %c = constant() {{value=dense<{payload}>}} : {type_}\n  return %c\n}}\n"
    )


def softmax_graph(attr: str) -> str:
    """A graph of one softmax carrying the attribute text ``attr``."""
    return f"graph @g(%x: f32[2,3]) {{\n  %y = softmax(%x) {{{attr}}} : f32[2,3]\n  return %y\n}}\n"


# ------------------------------------------------------------------ finding 1: literals
@pytest.mark.parametrize(
    "payload,type_,fragment",
    [
        ("[4294967295,1]", "i32[2]", "4294967295"),
        ("[9223372036854775807,1]", "i32[2]", "9223372036854775807"),
        ("[2147483648]", "i32[1]", "2147483648"),
        ("[-2147483649]", "i32[1]", "-2147483649"),
        ("[256]", "u8[1]", "256"),
        ("[-1]", "u8[1]", "-1"),
        ("[128]", "i8[1]", "128"),
        ("[9223372036854775808]", "i64[1]", "9223372036854775808"),
        ("[99999999999999999999999999,1]", "i32[2]", "99999999999999999999999999"),
        ("[99999999999999999999999999]", "i64[1]", "99999999999999999999999999"),
        ("[37.9,1]", "i32[2]", "37.9"),
        ("[37.0,1]", "i32[2]", "37.0"),
        ("[nan,1]", "i32[2]", "nan"),
        ("[inf]", "i64[1]", "inf"),
        ("[-inf]", "i8[1]", "-inf"),
        ("[true]", "i32[1]", "true"),
        ("[2]", "bool[1]", "2"),
        ("[1.5]", "bool[1]", "1.5"),
        ("[1e39]", "f32[1]", "1e39"),
        ("[-1e309]", "f64[1]", "-1e309"),
        ("[1" + "0" * 320 + "]", "f32[1]", "1000"),
    ],
)
def test_dense_items_that_do_not_fit_their_dtype_are_refused(payload, type_, fragment):
    with pytest.raises(ParseError, match=fragment) as info:
        irc.parse_graph(constant_graph(payload, type_))
    assert info.value.line == 2 and info.value.col is not None, str(info.value)
    assert str(info.value).startswith("line 2, column "), str(info.value)
    assert type_.split("[")[0] in str(info.value)


@pytest.mark.parametrize(
    "payload,type_,expected",
    [
        ("[2147483647,-2147483648]", "i32[2]", [2**31 - 1, -(2**31)]),
        ("[9223372036854775807,-9223372036854775808]", "i64[2]", [2**63 - 1, -(2**63)]),
        ("[18446744073709551615]", "u64[1]", [2**64 - 1]),
        ("[255,0]", "u8[2]", [255, 0]),
        ("[true,false,1,0]", "bool[4]", [True, False, True, False]),
        ("[1,2.5,nan,-inf]", "f32[4]", [1.0, 2.5, np.nan, -np.inf]),
        ("[3.4028235e38]", "f32[1]", [np.finfo(np.float32).max]),
        ("[65504]", "f16[1]", [65504.0]),
    ],
)
def test_dense_items_at_the_edges_of_their_dtype_are_exact(payload, type_, expected):
    graph = irc.parse_graph(constant_graph(payload, type_))
    value = graph.ops[0].attrs["value"]
    assert value.dtype == DType.from_short(type_.split("[")[0]).numpy
    np.testing.assert_array_equal(value, np.array(expected, dtype=value.dtype))  # NaN == NaN


@pytest.mark.parametrize("payload", ["0x123", "0x1", "0xABCDEF012"])
def test_odd_length_hex_is_a_parse_error(payload):
    with pytest.raises(ParseError, match="odd") as info:
        irc.parse_graph(constant_graph(payload, "i32[1]"))
    assert info.value.line == 2 and info.value.col is not None
    assert payload in str(info.value)


def test_even_hex_still_reads_little_endian():
    graph = irc.parse_graph(constant_graph("0xFFFFFF7F", "i32[1]"))
    assert graph.ops[0].attrs["value"].tolist() == [2**31 - 1]


@pytest.mark.parametrize(
    "attr,fragment",
    [
        ("axis=9223372036854775808", "9223372036854775808"),
        ("axis=-9223372036854775809", "-9223372036854775809"),
        ("axis=99999999999999999999999999999", "99999999999999999999999999999"),
        ("axis=1.0", "1.0"),
        ("axis=37.9", "37.9"),
        ("axis=nan", "nan"),
        ("axis=inf", "inf"),
    ],
)
def test_int_attributes_take_int64_integers_only(attr, fragment):
    with pytest.raises(ParseError, match=fragment) as info:
        irc.parse_graph(softmax_graph(attr))
    assert info.value.line == 2 and info.value.col is not None, str(info.value)
    assert "axis" in str(info.value)


def test_ints_attribute_items_are_checked_one_by_one():
    text = (
        "graph @g(%x: f32[1,1,4,4]) {\n"
        "  %y = max_pool(%x) {kernel=[2,18446744073709551617]} : f32[1,1,3,3]\n"
        "  return %y\n"
        "}\n"
    )
    with pytest.raises(ParseError, match="18446744073709551617") as info:
        irc.parse_graph(text)
    assert info.value.col == text.splitlines()[1].index("18446744073709551617") + 1


def test_float_attribute_too_large_for_a_float_is_refused():
    with pytest.raises(ParseError, match="scale"):
        irc.parse_graph(
            "graph @g(%x: f32[2]) {\n"
            "  %y = quantize(%x) {scale=1" + "0" * 320 + "} : qi8<1.0:0>[2]\n"
            "  return %y\n"
            "}\n"
        )


@pytest.mark.parametrize(
    "type_,fragment",
    [
        ("f32[99999999999999999999999]", "99999999999999999999999"),
        ("qi8<0.5:3.7>[2]", "3.7"),
        ("qi8<0.5:99999999999999999999999>[2]", "99999999999999999999999"),
        ("qi8<0.5:nan>[2]", "nan"),
    ],
)
def test_types_take_exact_integers(type_, fragment):
    with pytest.raises(ParseError, match=fragment) as info:
        irc.parse_graph(f"graph @g(%x: {type_}) {{\n  return %x\n}}\n")
    assert info.value.line == 1 and info.value.col is not None


@pytest.mark.parametrize(
    "text",
    [
        constant_graph("[" + "9" * 5000 + "]", "f32[1]"),
        constant_graph("[-" + "9" * 5000 + "]", "i64[1]"),
        softmax_graph("axis=" + "9" * 5000),
        "graph @g(%x: f32[" + "9" * 5000 + "]) {\n  return %x\n}\n",
    ],
)
def test_integers_beyond_pythons_digit_limit_are_parse_errors(text):
    with pytest.raises(ParseError, match="999…"):
        irc.parse_graph(text)


def test_every_literal_the_printer_writes_reads_back():
    text = constant_graph("[-128,127,0]", "i8[3]")
    assert irc.print_graph(irc.parse_graph(text)) == text


# ------------------------------------------------------------------ finding 2: shifts
def qgemm_l2(shift: str, multiplier: str = "1073741824", name: str = "fc_1") -> str:
    """An L2 qgemm of ``n`` output channels (as many as ``shift`` has items) with the given
    comma-separated shift and multiplier payloads (a single multiplier serves every one)."""
    n = shift.count(",") + 1
    levels = ",".join(["1,-1,2"] * n)
    quarter = ",".join(["0.25"] * n)
    eighth = ",".join(["0.125"] * n)
    return (
        "graph @g(%x: qi8<0.5:3>[1,3]) {\n"
        f"  %w = qconstant() {{value=dense<[{levels}]>, shape=[{n},3], scales=dense<[{quarter}]>}}"
        f" : qi8<axis=0: {', '.join(['0.25:0'] * n)}>[{n},3]\n"
        f'  %b = qconstant() {{value=dense<[{",".join(["8"] * n)}]>, dtype="i32", shape=[{n}], '
        f"scales=dense<[{eighth}]>}} : qi32<axis=0: {', '.join(['0.125:0'] * n)}>[{n}]\n"
        f"  %m = constant() {{value=dense<[{multiplier}]>}} : i32[{multiplier.count(',') + 1}]\n"
        f"  %s = constant() {{value=dense<[{shift}]>}} : i32[{n}]\n"
        f"  %y = qgemm(%x, %w, %b, %m, %s) {{out_scale=0.125}} : qi8<0.125:0>[1,{n}]"
        f' loc("{name}")\n'
        "  return %y\n"
        "}\n"
    )


@pytest.mark.parametrize("shift", ["0", "-1", "63", "70", "2147483647", "-2147483648"])
def test_shift_outside_the_spec_range_fails_verification(shift):
    with pytest.raises(VerifyError, match=rf"op 'fc_1' \(qgemm\): shift {shift} outside"):
        irc.parse_graph(qgemm_l2(shift))


@pytest.mark.parametrize("multiplier", ["-1", "-2147483648"])
def test_negative_multiplier_fails_verification(multiplier):
    with pytest.raises(VerifyError, match=rf"op 'fc_1' \(qgemm\): multiplier {multiplier}"):
        irc.parse_graph(qgemm_l2("30", multiplier))


@pytest.mark.parametrize("shift", ["1", "30", str(MAX_SHIFT)])
def test_shift_inside_the_spec_range_verifies_and_runs(shift):
    graph = irc.parse_graph(qgemm_l2(shift, "2147483647"))
    (out,) = irc.run(graph, [np.array([[1, 2, 3]], np.int8)])
    assert out.dtype == np.int8


def test_bad_shift_of_one_channel_names_the_channel():
    with pytest.raises(VerifyError, match=r"shift 99 outside \[1, 62\] \(channel 1\)"):
        irc.parse_graph(qgemm_l2("30,99"))


# ------------------------------------------------------------------ finding 3: messages
def test_verify_error_first_line_carries_the_first_problem():
    error = VerifyError(["op 'a' (relu): one", "op 'b' (relu): two", "three"])
    first, *rest = str(error).splitlines()
    assert first == "graph failed verification: op 'a' (relu): one (and 2 more problems)"
    assert rest == ["  op 'b' (relu): two", "  three"]
    assert str(VerifyError(["only"])) == "graph failed verification: only"
    assert error.problems == ["op 'a' (relu): one", "op 'b' (relu): two", "three"]


STALE_TYPE = (
    "graph @g(%x: f32[2]) {\n"
    '  %y = relu(%x) : f32[3] loc("act_1")\n'
    "  %z = sigmoid(%y) : f32[4]\n"
    "  return %z\n"
    "}\n"
)


@pytest.mark.parametrize("command", ["run", "opt"])
@pytest.mark.parametrize(
    "text,problem",
    [
        (qgemm_l2("70", name="conv_3"), "op 'conv_3' (qgemm): shift 70 outside [1, 62]"),
        (STALE_TYPE, "op 'act_1' (relu): result types ['f32[3]'] differ from inferred ['f32[2]']"),
    ],
)
def test_cli_prints_the_verification_problem(command, text, problem, capsys, tmp_path):
    source = tmp_path / "bad.irc"
    source.write_text(text)
    np.save(tmp_path / "x.npy", np.zeros((1, 3), np.int8))
    argv = [command, str(source)] + (
        ["--input", str(tmp_path / "x.npy")] if command == "run" else []
    )
    code = cli_main(argv)
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("irc: error: graph failed verification: " + problem), err
    assert "more lines; --debug" not in err, err
    assert err.rstrip().endswith("(--debug shows the rest)") == (text is STALE_TYPE), err
