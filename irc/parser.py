"""Parser for the text form printed by ``irc.printer``: ``print(parse(t)) == t``.

Parsing is two-phase: every op line is read first, then ops are created in order, so a use
before its definition is reported precisely (as a cycle, with the values on it, when it
is one) rather than as a bare "undefined value".
"""

from __future__ import annotations

import json
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


@dataclass
class _DenseLiteral:
    """A constant payload whose dtype and shape come from the op's result type."""

    items: list | None = None
    hex: str | None = None


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
            return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        if tok.kind == "ident" and tok.text in ("inf", "nan"):
            self.pos += 1
            return float(tok.text)
        raise self.error("expected a number")

    def type(self) -> TensorType:
        tok = self.expect_kind("ident", "a type like f32[1,3]")
        name, quant = tok.text, None
        if name.startswith("q") and self.tok.text == "<":
            name = name[1:]
            quant = self.quant_params()
        try:
            dtype = DType.from_short(name)
        except ValueError as e:
            raise ParseError(str(e), tok.line, tok.col) from None
        self.expect("[")
        shape = self.comma_list("]", self.dim)
        return TensorType(dtype, tuple(shape), quant)

    def quant_params(self) -> QuantParams:
        self.expect("<")
        if self.accept("axis"):
            self.expect("=")
            axis = self.number()
            self.expect(":")
            if self.accept("..."):
                count = self.number()
                self.expect(">")
                return QuantParams(None, None, axis, count)
            pairs = []
            while True:
                scale = self.number()
                self.expect(":")
                pairs.append((scale, self.number()))
                if self.accept(">"):
                    break
                self.expect(",")
            return QuantParams.per_axis([p[0] for p in pairs], [p[1] for p in pairs], axis)
        scale = self.number()
        self.expect(":")
        zero_point = self.number()
        self.expect(">")
        return QuantParams.per_tensor(scale, zero_point)

    def attr_value(self):
        tok = self.tok
        if tok.kind == "string":
            self.pos += 1
            return json.loads(tok.text)
        if self.accept("["):
            return tuple(self.comma_list("]", self.number))
        if self.accept("dense"):
            self.expect("<")
            if self.accept("..."):
                literal = _DenseLiteral()
            elif self.tok.kind == "hex":
                literal = _DenseLiteral(hex=self.tok.text[2:])
                self.pos += 1
            else:
                self.expect("[")
                literal = _DenseLiteral(items=self.comma_list("]", self.literal_item))
            self.expect(">")
            return literal
        return self.number()

    def literal_item(self):
        if self.accept("true"):
            return True
        if self.accept("false"):
            return False
        return self.number()

    def attr(self):
        key = self.expect_kind("ident", "an attribute name").text
        self.expect("=")
        return key, self.attr_value()

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
        attrs = dict(self.comma_list("}", self.attr)) if self.accept("{") else {}
        self.expect(":")
        types = [self.type()]
        while self.accept(","):
            types.append(self.type())
        loc = ""
        if self.accept("loc"):
            self.expect("(")
            loc = json.loads(self.expect_kind("string", "a quoted node name").text)
            self.expect(")")
        return _OpRecord(results, kind, operands, attrs, types, loc, line, operand_tokens)

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
    return (
        np.array(value.items, dtype=np.float64 if dtype.kind == "f" else None)
        .astype(dtype)
        .reshape(t.shape)
    )


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
