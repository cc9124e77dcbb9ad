"""Parser for the text form printed by ``irc.printer``: ``print(parse(t)) == t``.

Parsing is two-phase: every op line is read first, then ops are created in order, so a use
before its definition is reported precisely (as a cycle, with the values on it, when it
is one) rather than as a bare "undefined value".

Numbers are read exactly (integers as Python ints) and then checked against where they go,
never wrapped or truncated: an int attribute takes an integer in int64's range, a dense<>
item one in its element type's range (a float for a float type, true/false/0/1 for bool,
NaN and infinities only for floats), a dimension or a zero point an integer that fits. A
literal that does not fit is a ParseError naming its line, column and text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from irc.errors import CycleError, IrcError, ParseError
from irc.ir import Graph
from irc.opdef import get_opdef
from irc.ops.quant import PAYLOAD_TYPES
from irc.tensor import ElidedTensor
from irc.types import DType, QuantParams, TensorType
from irc.verifier import verify_graph

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+|//[^\n]*)
  | (?P<nl>\n)
  | (?P<value>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.$-]+))
  | (?P<symbol>@(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.$-]+))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<hex>0x[0-9A-Fa-f]*)
  | (?P<number>-?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)|-inf\b)
  | (?P<ellipsis>\.\.\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(){}\[\]<>,:=])
    """,
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str
    line: int
    col: int


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# no type holds an integer of more digits (float64 tops out at 309), and Python refuses to
# convert ones of more than 4300
MAX_INT_DIGITS = 400
_INF_TEXT = ("inf", "-inf")


@dataclass
class _DenseLiteral:
    """A constant payload whose dtype and shape come from the op's result type; ``tokens``
    are its items' tokens (the hex token for hex bytes), for errors that point at them."""

    items: list | None = None
    hex: str | None = None
    tokens: list = field(default_factory=list)


@dataclass
class _OpRecord:
    results: list[str]
    kind: str
    operands: list[str]
    attrs: dict
    types: list[TensorType]
    loc: str
    line: int
    operand_tokens: list[_Token] = field(default_factory=list)
    attr_tokens: dict = field(default_factory=dict)  # attribute -> its number items' tokens


def _tokenize(text: str) -> list[_Token]:
    tokens, line, line_start, pos = [], 1, 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ParseError(f"unexpected character {text[pos]!r}", line, pos - line_start + 1)
        kind = m.lastgroup
        if kind == "nl":
            line, line_start = line + 1, m.end()
        elif kind != "ws":
            tokens.append(_Token(kind, m.group(), line, pos - line_start + 1))
        pos = m.end()
    tokens.append(_Token("eof", "", line, pos - line_start + 1))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0

    # -------------------------------------------------------------- token helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def error(self, message: str, tok: _Token | None = None) -> ParseError:
        tok = tok or self.tok
        found = tok.text or "end of input"
        return ParseError(f"{message}, found '{found}'", tok.line, tok.col)

    def accept(self, text: str) -> bool:
        if self.tok.text == text and self.tok.kind in ("punct", "ident", "ellipsis"):
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> _Token:
        tok = self.tok
        if not self.accept(text):
            raise self.error(f"expected '{text}'")
        return tok

    def expect_kind(self, kind: str, what: str) -> _Token:
        tok = self.tok
        if tok.kind != kind:
            raise self.error(f"expected {what}")
        self.pos += 1
        return tok

    def comma_list(self, close: str, item):
        items = []
        if self.accept(close):
            return items
        while True:
            items.append(item())
            if self.accept(close):
                return items
            self.expect(",")

    # -------------------------------------------------------------- grammar
    def value_name(self) -> str:
        text = self.expect_kind("value", "a value name like %x").text[1:]
        return json.loads(text) if text.startswith('"') else text

    def dim(self):
        tok = self.tok
        if tok.kind == "number" and re.fullmatch(r"\d+", tok.text):
            self.pos += 1
            if _integer(tok) > INT64_MAX:
                raise ParseError(
                    f"dimension {_shown(tok.text)} does not fit int64", tok.line, tok.col
                )
            return int(tok.text)
        if tok.kind == "ident":
            self.pos += 1
            return tok.text
        raise self.error("expected a dimension (an int or a symbol)")

    def number(self):
        tok = self.tok
        if tok.kind == "number":
            self.pos += 1
            text = tok.text
            if text == "-inf":
                return float("-inf")
            return _integer(tok) if re.fullmatch(r"-?\d+", text) else float(text)
        if tok.kind == "ident" and tok.text in ("inf", "nan"):
            self.pos += 1
            return float(tok.text)
        raise self.error("expected a number")

    def integer(self, what: str, lo: int, hi: int) -> int:
        """An integer literal in [lo, hi] (``what`` names it in errors)."""
        tok = self.tok
        value = self.number()
        _check_integer(value, tok, what, lo, hi)
        return value

    def real(self, what: str) -> float:
        """A number as a float; ParseError if it is too large for one."""
        tok = self.tok
        return _as_float(self.number(), tok, what)

    def numbers(self, close: str, item) -> tuple[list, list[_Token]]:
        """``comma_list(close, item)`` and the first token of every item."""
        tokens = []

        def one():
            tokens.append(self.tok)
            return item()

        return self.comma_list(close, one), tokens

    def type(self) -> TensorType:
        tok = self.expect_kind("ident", "a type like f32[1,3]")
        name, quant = tok.text, None
        quantized = name.startswith("q") and self.tok.text == "<"
        if quantized:
            name = name[1:]
        try:
            dtype = DType.from_short(name)
        except ValueError as e:
            raise ParseError(str(e), tok.line, tok.col) from None
        if quantized:
            quant = self.quant_params(dtype)
        self.expect("[")
        shape = self.comma_list("]", self.dim)
        return TensorType(dtype, tuple(shape), quant)

    def quant_params(self, dtype: DType) -> QuantParams:
        """``<scale:zero_point>`` or ``<axis=A: s:z, ...>`` (``<axis=A: ...N>`` elided); each
        zero point an integer in ``dtype``'s range."""
        lo, hi = _int_range(dtype)
        zero_point = f"q{dtype.short} zero point"
        self.expect("<")
        if self.accept("axis"):
            self.expect("=")
            axis = self.integer("a quantization axis", INT64_MIN, INT64_MAX)
            self.expect(":")
            if self.accept("..."):
                count = self.integer("a quantization count", 0, INT64_MAX)
                self.expect(">")
                return QuantParams(None, None, axis, count)
            pairs = []
            while True:
                scale = self.real("a quantization scale")
                self.expect(":")
                pairs.append((scale, self.integer(zero_point, lo, hi)))
                if self.accept(">"):
                    break
                self.expect(",")
            return QuantParams.per_axis([p[0] for p in pairs], [p[1] for p in pairs], axis)
        scale = self.real("a quantization scale")
        self.expect(":")
        zp = self.integer(zero_point, lo, hi)
        self.expect(">")
        return QuantParams.per_tensor(scale, zp)

    def attr_value(self) -> tuple:
        """An attribute's value and the tokens of its numbers (for range errors)."""
        tok = self.tok
        if tok.kind == "string":
            self.pos += 1
            return json.loads(tok.text), []
        if self.accept("["):
            items, tokens = self.numbers("]", self.number)
            return tuple(items), tokens
        if self.accept("dense"):
            self.expect("<")
            if self.accept("..."):
                literal = _DenseLiteral()
            elif self.tok.kind == "hex":
                hex_tok = self.tok
                if len(hex_tok.text) % 2:
                    raise ParseError(
                        f"dense<{_shown(hex_tok.text)}> has an odd number of hex digits "
                        f"({len(hex_tok.text) - 2}); each byte takes two",
                        hex_tok.line,
                        hex_tok.col,
                    )
                literal = _DenseLiteral(hex=hex_tok.text[2:], tokens=[hex_tok])
                self.pos += 1
            else:
                self.expect("[")
                items, tokens = self.numbers("]", self.literal_item)
                literal = _DenseLiteral(items=items, tokens=tokens)
            self.expect(">")
            return literal, []
        return self.number(), [tok]

    def literal_item(self):
        if self.accept("true"):
            return True
        if self.accept("false"):
            return False
        return self.number()

    def attr(self):
        key = self.expect_kind("ident", "an attribute name").text
        self.expect("=")
        value, tokens = self.attr_value()
        return key, value, tokens

    def op_record(self) -> _OpRecord:
        line = self.tok.line
        results = [self.value_name()]
        while self.accept(","):
            results.append(self.value_name())
        self.expect("=")
        kind = self.expect_kind("ident", "an op kind").text
        self.expect("(")
        start = self.pos
        operands = self.comma_list(")", self.value_name)
        operand_tokens = [t for t in self.tokens[start : self.pos] if t.kind == "value"]
        parsed = self.comma_list("}", self.attr) if self.accept("{") else []
        attrs = {key: value for key, value, _ in parsed}
        attr_tokens = {key: tokens for key, _, tokens in parsed}
        self.expect(":")
        types = [self.type()]
        while self.accept(","):
            types.append(self.type())
        loc = ""
        if self.accept("loc"):
            self.expect("(")
            loc = json.loads(self.expect_kind("string", "a quoted node name").text)
            self.expect(")")
        return _OpRecord(
            results, kind, operands, attrs, types, loc, line, operand_tokens, attr_tokens
        )

    def graph(self) -> Graph:
        if self.tok.kind == "eof":
            raise self.error("empty input: expected 'graph @name(...) {'")
        if self.tok.text != "graph":
            raise self.error("expected 'graph' (this does not look like irc text IR)")
        self.pos += 1
        sym = self.expect_kind("symbol", "a graph name like @main").text[1:]
        graph = Graph(json.loads(sym) if sym.startswith('"') else sym)
        self.expect("(")

        def arg():
            tok = self.tok
            name = self.value_name()
            self.expect(":")
            if graph.has_value(name):
                raise ParseError(f"input %{name} is defined twice", tok.line, tok.col)
            graph.add_input(name, self.type())

        self.comma_list(")", arg)
        self.expect("{")
        records = []
        while not self.accept("return"):
            if self.tok.kind == "eof":
                raise self.error("expected 'return' before the end of the graph")
            records.append(self.op_record())
        outputs_tok = self.tok
        outputs = [self.value_name()]
        while self.accept(","):
            outputs.append(self.value_name())
        self.expect("}")
        if self.tok.kind != "eof":
            raise self.error("expected end of input after the graph's '}'")
        _build_ops(graph, records)
        for name in outputs:
            if not graph.has_value(name):
                raise ParseError(
                    f"returned value %{name} is not defined", outputs_tok.line, outputs_tok.col
                )
            graph.outputs.append(graph.value(name))
        return graph


def _build_ops(graph: Graph, records: list[_OpRecord]) -> None:
    defined_at = {}
    for i, rec in enumerate(records):
        for r in rec.results:
            if r in defined_at or graph.has_value(r):
                raise ParseError(f"value %{r} is defined twice", rec.line)
            defined_at[r] = i
    for i, rec in enumerate(records):
        operands = []
        for name, tok in zip(rec.operands, rec.operand_tokens):
            if graph.has_value(name):
                operands.append(graph.value(name))
                continue
            if name not in defined_at:
                raise ParseError(f"use of undefined value %{name}", tok.line, tok.col)
            cycle = _find_cycle(records, defined_at, i)
            if cycle:
                raise CycleError(
                    "graph has a cycle through "
                    + " -> ".join("%" + n for n in cycle)
                    + f" (line {tok.line})"
                )
            raise ParseError(
                f"value %{name} is used before its definition on line "
                f"{records[defined_at[name]].line}; ops must be in topological "
                "order",
                tok.line,
                tok.col,
            )
        try:
            opdef = get_opdef(rec.kind)
            _check_attr_numbers(opdef, rec)
            plain = {k: v for k, v in rec.attrs.items() if not isinstance(v, _DenseLiteral)}
            attrs = {k: _materialize(v, rec, k, plain) for k, v in rec.attrs.items()}
            attrs = opdef.normalize_attrs(attrs, f"op {rec.kind}")
            opdef.check_arity(len(operands), f"op {rec.kind}")
            graph.create_op(
                rec.kind, operands, attrs, rec.types, name=rec.loc, result_names=rec.results
            )
        except IrcError as e:
            if isinstance(e, ParseError):
                raise
            raise ParseError(str(e), rec.line) from None
        if len(rec.types) != len(graph.ops[-1].results):
            raise ParseError("result count differs from type count", rec.line)


def _materialize(value, rec: _OpRecord, attr: str, plain_attrs: dict):
    """A dense literal as an array of its payload type: the op's result type, unless the
    op kind stores its payload otherwise (a qconstant's scales, packed bytes)."""
    if not isinstance(value, _DenseLiteral):
        return value
    if len(rec.types) != 1:
        raise ParseError("a dense<> attribute needs an op with exactly one result", rec.line)
    t = rec.types[0]
    if rec.kind in PAYLOAD_TYPES:
        t = PAYLOAD_TYPES[rec.kind](attr, t, plain_attrs)
    if value.items is None and value.hex is None:
        return ElidedTensor(t)
    if not t.is_static:
        raise ParseError("a constant must have a static shape", rec.line)
    dtype = t.dtype.numpy
    if value.hex is not None:
        data = bytes.fromhex(value.hex)
        if len(data) != t.num_elements * dtype.itemsize:
            raise ParseError(
                f"dense<0x…> holds {len(data)} bytes, type {t} needs "
                f"{t.num_elements * dtype.itemsize}",
                rec.line,
            )
        return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(t.shape)
    if len(value.items) != t.num_elements:
        raise ParseError(
            f"dense<[…]> has {len(value.items)} items, type {t} needs {t.num_elements}", rec.line
        )
    return _dense_array(value, t.dtype).reshape(t.shape)


def _integer(tok: _Token) -> int:
    """The exact value of an integer literal; ParseError if it has more digits than any
    type could hold."""
    digits = len(tok.text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ParseError(
            f"integer {_shown(tok.text)} has {digits} digits, more than any type holds",
            tok.line,
            tok.col,
        )
    return int(tok.text)


def _dense_array(value: _DenseLiteral, dtype: DType) -> np.ndarray:
    """The items of a dense<[…]> literal as an array of ``dtype``; ParseError at the first
    item that is not exactly a value of it."""
    items, tokens, np_dtype = value.items, value.tokens, dtype.numpy
    if np_dtype.kind == "b":
        for v, tok in zip(items, tokens):
            if type(v) is not bool and not (type(v) is int and v in (0, 1)):
                raise _item_error(tok, f"is not a {dtype.short} (true, false, 1 or 0)")
        return np.array(items, dtype=np_dtype)
    if np_dtype.kind in "iu":
        lo, hi = _int_range(dtype)
        if not all(type(v) is int for v in items) or (
            items and (min(items) < lo or max(items) > hi)
        ):
            for v, tok in zip(items, tokens):
                if type(v) is not int:
                    raise _item_error(tok, f"is not an integer, as {dtype.short} needs")
                if not lo <= v <= hi:
                    raise _item_error(tok, f"does not fit {dtype.short} [{lo}, {hi}]")
        return np.array(items, dtype=np_dtype)
    if any(type(v) is bool for v in items):
        tok = tokens[[type(v) is bool for v in items].index(True)]
        raise _item_error(tok, f"is not a number, as {dtype.short} needs")
    overflow = f"overflows {dtype.short} (largest {str(np.finfo(np_dtype).max)})"
    try:
        wide = np.array(items, dtype=np.float64)
    except OverflowError:  # an integer beyond float64: the error names it
        wide = np.array([_float_item(v, tok, overflow) for v, tok in zip(items, tokens)])
    with np.errstate(over="ignore"):
        array = wide.astype(np_dtype)
    for i in np.flatnonzero(np.isinf(array)).tolist():
        if tokens[i].text not in _INF_TEXT:
            raise _item_error(tokens[i], overflow)
    return array


def _float_item(value, tok: _Token, overflow: str) -> float:
    """A dense<> item as a float; ParseError ``overflow`` if it is too large for one."""
    try:
        return float(value)
    except OverflowError:
        raise _item_error(tok, overflow) from None


def _item_error(tok: _Token, problem: str) -> ParseError:
    """A ParseError at a dense<> item's token."""
    return ParseError(f"dense<> item {_shown(tok.text)} {problem}", tok.line, tok.col)


def _shown(text: str, limit: int = 48) -> str:
    """A literal's text for an error message, cut short when it is very long."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int_range(dtype: DType) -> tuple[int, int]:
    """The values ``dtype`` holds: [-2^(b-1), 2^(b-1) - 1] signed, [0, 2^b - 1] unsigned, by
    its bit width (so i4 is [-8, 7]); floats any int64."""
    if dtype.is_float:
        return INT64_MIN, INT64_MAX
    if dtype == DType.BOOL:
        return 0, 1
    if dtype.is_signed:
        return -(2 ** (dtype.bits - 1)), 2 ** (dtype.bits - 1) - 1
    return 0, 2**dtype.bits - 1


def _check_integer(value, tok: _Token, what: str, lo: int, hi: int) -> None:
    """ParseError unless ``value`` (read from ``tok``) is an integer in [lo, hi]."""
    if type(value) is not int:
        raise ParseError(f"{what} must be an integer, got {_shown(tok.text)}", tok.line, tok.col)
    if not lo <= value <= hi:
        name = "int64 " if (lo, hi) == (INT64_MIN, INT64_MAX) else ""
        raise ParseError(
            f"{what} {_shown(tok.text)} is outside {name}[{lo}, {hi}]", tok.line, tok.col
        )


def _as_float(value, tok: _Token, what: str) -> float:
    """``value`` (read from ``tok``) as a float; ParseError if it is finite but too large
    for a float64 (a huge integer, or a literal like 1e400 that read as infinity)."""
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if math.isinf(result) and tok.text not in _INF_TEXT:
        raise ParseError(f"{what} {_shown(tok.text)} is too large for a float", tok.line, tok.col)
    return result


def _check_attr_numbers(opdef, rec: _OpRecord) -> None:
    """Every number of an int attribute (or an annotation) an integer in int64's range, and
    every number of a float attribute within a float's."""
    for key, tokens in rec.attr_tokens.items():
        spec = opdef.attrs.get(key)
        value = rec.attrs[key]
        items = value if isinstance(value, tuple) else (value,)
        for item, tok in zip(items, tokens):
            if spec is not None and spec.kind in ("int", "ints"):
                _check_integer(item, tok, f"attribute '{key}'", INT64_MIN, INT64_MAX)
            elif type(item) is int and spec is None:  # an annotation's integer
                _check_integer(item, tok, f"annotation '{key}'", INT64_MIN, INT64_MAX)
            elif spec is not None and spec.kind in ("float", "floats"):
                _as_float(item, tok, f"attribute '{key}'")


def _find_cycle(records, defined_at, start) -> list[str] | None:
    """Value names on a cycle reachable from op ``start``, if the forward use is one."""
    import networkx as nx

    g = nx.DiGraph()
    for i, rec in enumerate(records):
        for name in rec.operands:
            if name in defined_at:
                g.add_edge(defined_at[name], i)
    try:
        cycle = nx.find_cycle(g, source=start)
    except nx.NetworkXNoCycle:
        return None
    return [records[a].results[0] for a, _ in cycle] + [records[cycle[0][0]].results[0]]


def parse_graph(text: str, verify: bool = True) -> Graph:
    """Parse a graph printed by ``irc.printer.print_graph``; verifies it by default."""
    graph = _Parser(text).graph()
    if verify:
        verify_graph(graph)
    return graph
