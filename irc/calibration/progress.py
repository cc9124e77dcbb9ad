"""Progress of long work on stderr: tqdm's bar on a terminal, plain lines in a log.

    >>> with Progress(64, label="calibrate", unit="img") as bar:
    ...     for batch in batches:
    ...         bar.update(len(batch))
    >>> with stage("build"):                      # work without a count: start and end
    ...     model = build(graph)

Where the output goes decides how it looks:

- a terminal (or ``force=True``): tqdm's bar, redrawn in place, with the count, the rate,
  the elapsed time and the ETA (``calibrate:  38%|███▊  | 24/64 [00:02<00:04, 9.6img/s]``);
  a ``stage`` is one line, ``build ...`` becoming ``build: done in 3.2 s``;
- anything else (a log file, a pipe): plain lines, never redrawn: one when the work starts
  (``calibrate: 64 img ...``), one when it ends (``calibrate: 64/64 img in 12.3 s
  (5.2 img/s)``) and, in between, one at most every ``LINE_INTERVAL`` seconds with the
  count, rate and ETA, so that a log shows life;
- ``enabled=False``: nothing.

Everything goes to stderr (or the ``stream`` given), never to stdout, which may carry
data; no thread is started (tqdm's monitor thread is off).

``note`` writes one line (a stage's result reused, say) under the same ``enabled`` switch.
``StageTimes`` adds up the seconds of named stages for a compile's time summary.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

LINE_INTERVAL = 30.0  # seconds between plain progress lines (not on a terminal)
FALLBACK_COLUMNS = 80  # the bar's width on a terminal that reports no size


class _Bar(tqdm):
    """tqdm without its monitor thread (which would outlive the work it watches)."""

    monitor_interval = 0


class Progress:
    """Counts finished items against an optional total and shows it (see the module).

    ``enabled=False`` shows nothing; otherwise a bar when ``stream`` (default stderr) is a
    terminal or ``force`` is true, else plain lines. Use as a context manager, or call
    ``close()``.
    """

    LINE_INTERVAL = LINE_INTERVAL

    def __init__(
        self,
        total: int | None = None,
        *,
        label: str = "calibrate",
        unit: str = "img",
        enabled: bool = True,
        force: bool = False,
        stream=None,
    ):
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.mode = output_mode(enabled, force, self.stream)
        self.active = self.mode != "off"
        self.done = 0
        self.start = time.perf_counter()
        self._last_line = self.start
        self._closed = False
        self._bar = None
        if self.mode == "bar":
            self._bar = _Bar(total=total, desc=label, unit=unit, file=self.stream, leave=True,
                             mininterval=0.1, **_width(self.stream))  # fmt: skip
        elif self.mode == "lines":
            counted = f": {total} {unit}" if total else ""
            _write(self.stream, f"{label}{counted} ...")

    def update(self, n: int) -> None:
        """Record ``n`` more finished items (the bar redraws, a plain line is due every
        ``LINE_INTERVAL`` seconds)."""
        n = int(n)
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self._last_line >= self.LINE_INTERVAL:
                self._last_line = now
                _write(self.stream, self.line(now))

    def line(self, now: float | None = None) -> str:
        """The state as one plain line: count, rate, elapsed time and (with a total) ETA."""
        elapsed = self._elapsed(now)
        count = f"{self.label}: {self._count()} {self.unit}"
        parts = [count, rate_text(self.done, elapsed, self.unit), f"{duration(elapsed)} elapsed"]
        if self.total and 0 < self.done < self.total:
            parts.append(f"ETA {duration(elapsed * (self.total - self.done) / self.done)}")
        return ", ".join(parts)

    def close(self) -> None:
        """End the bar, or write the end line (once)."""
        self._finish(failed=False)

    def _finish(self, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines":
            elapsed = self._elapsed()
            if failed:
                text = f"{self.label}: stopped at {self._count()} {self.unit} after "
                _write(self.stream, text + duration(elapsed))
            else:
                text = f"{self.label}: {self._count()} {self.unit} in {duration(elapsed)}"
                _write(self.stream, f"{text} ({rate_text(self.done, elapsed, self.unit)})")

    def _count(self) -> str:
        return f"{self.done}/{self.total}" if self.total else str(self.done)

    def _elapsed(self, now: float | None = None) -> float:
        return max((time.perf_counter() if now is None else now) - self.start, 0.0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._finish(failed=exc_type is not None)


@contextmanager
def stage(label: str, *, enabled: bool = True, force: bool = False,
          stream=None) -> Iterator[None]:  # fmt: skip
    """Show work without a count: ``label ...`` when it starts and ``label: done in 3.2 s``
    when it ends (``label: failed after 3.2 s`` on an exception), in place on a terminal,
    as two plain lines elsewhere, nothing when not ``enabled`` (modes as for ``Progress``)."""
    stream = sys.stderr if stream is None else stream
    mode = output_mode(enabled, force, stream)
    start = time.perf_counter()
    if mode == "bar":
        stream.write(f"{label} ...")
        stream.flush()
    elif mode == "lines":
        _write(stream, f"{label} ...")
    ok = False
    try:
        yield
        ok = True
    finally:
        elapsed = duration(time.perf_counter() - start)
        end = f"{label}: done in {elapsed}" if ok else f"{label}: failed after {elapsed}"
        if mode == "bar":
            _write(stream, f"\r{end}\x1b[K")
        elif mode == "lines":
            _write(stream, end)


def note(text: str, *, enabled: bool = True, stream=None) -> None:
    """One plain line on stderr (or ``stream``) when ``enabled``, e.g. that a stage's
    result was reused rather than computed."""
    if enabled:
        _write(sys.stderr if stream is None else stream, text)


class StageTimes(dict):
    """Stage name → seconds spent in it, in the order the stages first ran. A stage timed
    inside another counts in the inner one only (the outer one's time excludes it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._nested = [0.0]  # per open stage: seconds of the stages timed inside it

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        """Add the seconds the ``with`` block takes (less its inner stages) to ``name``."""
        self.setdefault(name, 0.0)
        start = time.perf_counter()
        self._nested.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self[name] += elapsed - self._nested.pop()
            self._nested[-1] += elapsed


def output_mode(enabled: bool, force: bool, stream) -> str:
    """How progress shows on ``stream``: ``"off"`` (not enabled), ``"bar"`` (a terminal, or
    forced) or ``"lines"``."""
    if not enabled:
        return "off"
    return "bar" if force or _is_tty(stream) else "lines"


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def rate_text(count: int, seconds: float, unit: str) -> str:
    """``5.2 img/s``, or for less than one a second ``3.4 s/img``."""
    rate = count / seconds if seconds > 0 else 0.0
    if 0 < rate < 1:
        return f"{1 / rate:.1f} s/{unit}"
    return f"{rate:.1f} {unit}/s"


def _width(stream) -> dict:
    """tqdm's width options: follow the terminal's width, or 80 columns where the terminal
    says it has none (a pseudo-terminal of unknown size: tqdm would draw an empty bar)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return {}
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": FALLBACK_COLUMNS, "nrows": 24}


def _write(stream, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
