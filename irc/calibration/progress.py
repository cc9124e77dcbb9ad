"""A tiny progress bar for long calibration runs, written to stderr.

One line, redrawn in place: ``calibrate  96/256 img [=====>    ] 11.8 img/s  8.1s``. It
draws only where someone can see it (stderr is a terminal) unless forced, and redraws at
most ten times a second so that it costs nothing next to the work it reports on.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts finished items against an optional total and draws a one-line bar.

    ``enabled=False`` turns it off; otherwise it draws when ``stream`` is a terminal, or
    always when ``force`` is true. Use as a context manager, or call ``close()``.
    """

    WIDTH = 24
    INTERVAL = 0.1  # seconds between redraws

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
        self.active = bool(enabled) and (force or _is_tty(self.stream))
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = -1.0
        self._drawn = -1  # the count last drawn
        self._closed = False

    def update(self, n: int) -> None:
        """Record ``n`` more finished items (redraws if enough time has passed)."""
        self.done += int(n)
        now = time.perf_counter()
        if self.active and now - self._last_draw >= self.INTERVAL:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the bar as it stands: done/total, bar, rate, elapsed time."""
        now = time.perf_counter() if now is None else now
        elapsed = max(now - self.start, 0.0)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            filled = min(self.WIDTH, self.WIDTH * self.done // self.total)
            tip = ">" if filled < self.WIDTH else ""
            bar = "[" + "=" * filled + tip + " " * (self.WIDTH - filled - len(tip)) + "]"
            count = f"{self.done}/{self.total} {self.unit} {bar}"
        else:
            count = f"{self.done} {self.unit}"
        return f"{self.label}  {count} {rate:.1f} {self.unit}/s  {elapsed:.1f}s"

    def _draw(self, now: float) -> None:
        self._last_draw, self._drawn = now, self.done
        self.stream.write("\r" + self.line(now) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line (once)."""
        if self._closed:
            return
        self._closed = True
        if self.active:
            if self._drawn != self.done:
                self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
