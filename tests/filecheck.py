"""A tiny FileCheck for printed IR: ordered CHECK lines matched against a text.

Directives, one per line, optionally behind ``//`` (so they sit in IR files as comments):

- ``CHECK: pat``       pat occurs after the previous match;
- ``CHECK-NEXT: pat``  pat occurs on the line right after the previous match's line;
- ``CHECK-SAME: pat``  pat occurs on the previous match's line, after it;
- ``CHECK-NOT: pat``   pat does not occur between the previous match and the next one
  (or the end of the text).

A pattern is literal text, except that ``{{regex}}`` embeds a regular expression; leading
and trailing blanks are ignored. A failure raises ``FileCheckError`` (an AssertionError)
quoting the directive and the part of the text that was searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^\s*(?://\s*)?(CHECK(?:-NEXT|-NOT|-SAME)?):(.*)$")


class FileCheckError(AssertionError):
    """The text does not match the checks."""


@dataclass(frozen=True)
class Directive:
    """One check line: its kind, the compiled pattern, and where it was written."""

    kind: str
    pattern: str
    regex: re.Pattern
    line: int


def parse_checks(checks: str) -> list[Directive]:
    """The directives in ``checks``, in order; other lines are ignored."""
    out = []
    for number, line in enumerate(checks.splitlines(), 1):
        m = _DIRECTIVE.match(line)
        if m:
            pattern = m.group(2).strip()
            if not pattern:
                raise ValueError(f"check line {number}: {m.group(1)} has an empty pattern")
            out.append(Directive(m.group(1), pattern, _compile(pattern), number))
    if out and out[0].kind in ("CHECK-NEXT", "CHECK-SAME"):
        raise ValueError(f"check line {out[0].line}: {out[0].kind} cannot come first")
    return out


def _compile(pattern: str) -> re.Pattern:
    parts = re.split(r"\{\{(.*?)\}\}", pattern)
    # even parts are literal text, odd parts the regular expressions between {{ }}
    return re.compile("".join(p if i % 2 else re.escape(p) for i, p in enumerate(parts)))


def filecheck(text: str, checks: str) -> None:
    """Match ``text`` against the directives in ``checks``; FileCheckError on a mismatch."""
    directives = parse_checks(checks)
    if not directives:
        raise ValueError("no CHECK directives given")
    pos, last_start = 0, 0
    forbidden: list[Directive] = []
    for d in directives:
        if d.kind == "CHECK-NOT":
            forbidden.append(d)
            continue
        if d.kind == "CHECK":
            start, end = pos, len(text)
        elif d.kind == "CHECK-SAME":
            start, end = pos, _line_end(text, last_start)
        else:  # CHECK-NEXT: the whole line after the previous match's line
            start = _line_end(text, last_start) + 1
            end = _line_end(text, start) if start <= len(text) else start
        m = d.regex.search(text, start, end) if start <= len(text) else None
        if m is None:
            raise _failure(d, "not found", text, start, end)
        _check_absent(forbidden, text, pos, m.start())
        forbidden = []
        pos, last_start = m.end(), m.start()
    _check_absent(forbidden, text, pos, len(text))


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _check_absent(forbidden: list[Directive], text: str, start: int, end: int) -> None:
    for d in forbidden:
        m = d.regex.search(text, start, end)
        if m is not None:
            raise _failure(d, "found", text, m.start(), _line_end(text, m.start()))


def _failure(d: Directive, what: str, text: str, start: int, end: int) -> FileCheckError:
    first = text.count("\n", 0, start) + 1
    region = text[start:end].splitlines()[:8] or ["<nothing left>"]
    quoted = "\n".join(f"  {first + i:4d} | {line}" for i, line in enumerate(region))
    where = {"CHECK-NEXT": " on the next line", "CHECK-SAME": " on the same line"}.get(d.kind, "")
    return FileCheckError(
        f"check line {d.line}: {d.kind}: {d.pattern!r} {what}{where}; text from line {first}:\n"
        f"{quoted}"
    )
