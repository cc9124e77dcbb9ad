"""Passes, their registry, MLIR-style pipeline strings, and the PassManager with instruments.

A pass is a frozen dataclass whose fields are its options, registered by name:

    @register_pass
    @dataclass(frozen=True)
    class Fuse(Pass):
        name: ClassVar[str] = "fuse"
        acts: tuple[str, ...] = ("relu", "clip", "hard_swish")

        def run(self, graph, ctx) -> dict[str, int]:
            ...                      # rewrite graph in place
            return {"fused": n}      # statistics; all zero means "nothing changed"

Pipelines are strings such as ``canonicalize,fold-batchnorm,fuse{acts=relu,clip}``; a list
option continues over commas until the next ``key=``. ``format_pipeline`` prints the
canonical form (options that differ from their default, in field order), and
``format_pipeline(parse_pipeline(s)) == s`` for every canonical ``s``.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import sys
import time
import typing
from dataclasses import dataclass, field
from typing import ClassVar, TextIO

from irc.errors import IrcError, VerifyError
from irc.ir import Graph
from irc.printer import print_graph
from irc.registry import import_submodules
from irc.verifier import verify_graph


class PipelineError(IrcError):
    """A pipeline string names an unknown pass or option, or gives a bad value."""


class PassFailure(IrcError):
    """A pass raised; the message names the pass and where the reproducer was written."""


@dataclass(frozen=True)
class Pass(abc.ABC):
    """Base class of every pass. Subclasses set ``name`` and implement ``run``."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, graph: Graph, ctx: PassContext) -> dict[str, int]:
        """Rewrite ``graph`` in place; return statistics (all zero when nothing changed)."""


PASSES: dict[str, type[Pass]] = {}


def available_passes() -> dict[str, type[Pass]]:
    """Every registered pass by name, the builtin ones (``irc.passes``) loaded first."""
    _load_builtin_passes()
    return dict(sorted(PASSES.items()))


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make ``cls`` available to pipelines under ``cls.name``."""
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"pass name '{cls.name}' is empty or taken")
    PASSES[cls.name] = cls
    return cls


def _load_builtin_passes() -> None:
    """Import every module of ``irc.passes`` once, so their passes register themselves."""
    import_submodules("irc.passes")


# ------------------------------------------------------------------ pipeline strings
def _split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unbalanced '}}' in pipeline '{text}'")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise PipelineError(f"unbalanced '{{' in pipeline '{text}'")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _option_types(cls: type[Pass]) -> dict[str, object]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(value: list[str], kind, where: str):
    origin = typing.get_origin(kind)
    try:
        if origin is tuple:
            (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
            return tuple(_convert([v], item, where) for v in value if v != "")
        if len(value) != 1:
            raise ValueError("expected one value")
        text = value[0]
        if kind is bool:
            if text not in ("true", "false"):
                raise ValueError("expected true or false")
            return text == "true"
        if kind in (int, float, str):
            return kind(text)
    except ValueError as e:
        raise PipelineError(f"{where}: bad value '{','.join(value)}': {e}") from None
    raise PipelineError(f"{where}: option type {kind} is not supported in pipelines")


def parse_pipeline(text: str) -> list[Pass]:
    """The passes named by a pipeline string; PipelineError names what is wrong."""
    _load_builtin_passes()
    passes: list[Pass] = []
    if not text.strip():
        return passes
    for item in _split_top(text):
        name, brace, rest = item.partition("{")
        name = name.strip()
        if name not in PASSES:
            raise PipelineError(f"unknown pass '{name}'; known: {', '.join(sorted(PASSES))}")
        cls = PASSES[name]
        raw: dict[str, list[str]] = {}
        if brace:
            if not rest.endswith("}"):
                raise PipelineError(f"pass '{name}': options must end with '}}'")
            key = None
            body = rest[:-1]
            for token in body.split(",") if body.strip() else []:  # `name{}` has no options
                k, eq, v = token.partition("=")
                if eq:
                    key = k.strip()
                    raw[key] = [v.strip()]
                elif key is None:
                    raise PipelineError(f"pass '{name}': expected key=value, got '{token}'")
                else:
                    raw[key].append(token.strip())
        types = _option_types(cls)
        unknown = set(raw) - set(types)
        if unknown:
            raise PipelineError(
                f"pass '{name}' has no option {sorted(unknown)}; options: {sorted(types) or 'none'}"
            )
        options = {k: _convert(v, types[k], f"pass '{name}' option '{k}'") for k, v in raw.items()}
        try:
            passes.append(cls(**options))
        except (TypeError, ValueError) as e:
            raise PipelineError(f"pass '{name}': {e}") from None
    return passes


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(_format_value(v) for v in value)
    return str(value)


def format_pipeline(passes: list[Pass]) -> str:
    """The canonical pipeline string of ``passes``."""
    items = []
    for p in passes:
        options = [
            f"{f.name}={_format_value(getattr(p, f.name))}"
            for f in dataclasses.fields(p)
            if getattr(p, f.name) != _default(f)
        ]
        items.append(p.name + ("{" + ",".join(options) + "}" if options else ""))
    return ",".join(items)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# ------------------------------------------------------------------ running
@dataclass
class PassContext:
    """Options and instruments of one pipeline run, and what it recorded."""

    verify_each: bool = False
    timing: bool = False
    print_ir_before_all: bool = False
    print_ir_after_all: bool = False
    print_ir_after_change: bool = False
    dump_dir: str | None = None
    stop_after: int | None = None
    reproducer_dir: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stderr)
    timings: list[tuple[str, float]] = field(default_factory=list)
    statistics: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    # results of analyses that passes read (``calibration``: value name -> (lo, hi) real
    # range; ``precision_plan``: an irc.precision.PrecisionPlan)
    analyses: dict[str, object] = field(default_factory=dict)

    def report(self) -> str:
        """Per-pass statistics (and timings when recorded), one line each."""
        lines = []
        for (name, stats), (_, seconds) in zip(
            self.statistics, self.timings or [("", None)] * len(self.statistics)
        ):
            text = ", ".join(f"{v} {k}" for k, v in stats.items()) or "no change"
            when = f" ({seconds * 1e3:.1f} ms)" if seconds is not None and self.timing else ""
            lines.append(f"{name}: {text}{when}")
        return "\n".join(lines)


class PassManager:
    """Runs a pipeline over a graph with the context's instruments."""

    def __init__(self, pipeline: str | list[Pass], ctx: PassContext | None = None):
        self.passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
        self.ctx = ctx or PassContext()

    @property
    def pipeline(self) -> str:
        return format_pipeline(self.passes)

    def run(self, graph: Graph) -> Graph:
        """Run every pass (up to ``stop_after``) on ``graph`` in place; returns it."""
        ctx = self.ctx
        for index, p in enumerate(self.passes):
            if ctx.stop_after is not None and index >= ctx.stop_after:
                break
            # a clone is cheap (it shares the constants' arrays, which passes replace rather
            # than write into); it is printed, in full so that it runs, only on failure
            before = graph.clone() if ctx.reproducer_dir else None
            if ctx.print_ir_before_all:
                ctx.out.write(f"// ----- IR before {p.name} -----\n{print_graph(graph)}")
            start = time.perf_counter()
            try:
                stats = p.run(graph, ctx) or {}
                if ctx.verify_each:
                    verify_graph(graph)
            except Exception as e:
                where = self._write_reproducer(before, index)
                kind = "left an invalid graph" if isinstance(e, VerifyError) else "failed"
                raise PassFailure(f"pass '{p.name}' (#{index}) {kind}: {e}{where}") from e
            ctx.timings.append((p.name, time.perf_counter() - start))
            ctx.statistics.append((p.name, dict(stats)))
            changed = any(stats.values())
            if ctx.print_ir_after_all or (ctx.print_ir_after_change and changed):
                ctx.out.write(f"// ----- IR after {p.name} -----\n{print_graph(graph)}")
            if ctx.dump_dir:
                os.makedirs(ctx.dump_dir, exist_ok=True)
                path = os.path.join(ctx.dump_dir, f"{index:02d}-{p.name}.irc")
                with open(path, "w") as f:
                    f.write(print_graph(graph, full=False))
        return graph

    def _write_reproducer(self, before: Graph | None, index: int) -> str:
        if not self.ctx.reproducer_dir or before is None:
            return ""
        os.makedirs(self.ctx.reproducer_dir, exist_ok=True)
        path = os.path.join(self.ctx.reproducer_dir, "reproducer.irc")
        text = print_graph(before, full=True)
        with open(path, "w") as f:
            f.write(f"// pipeline: {format_pipeline(self.passes[index:])}\n{text}")
        return f" (reproducer: {path})"
