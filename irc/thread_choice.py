"""The thread count of each call of a compiled model, chosen from the calls' own times.

On an idle machine a model runs faster on all of Numba's threads. On a busy one, a
parallel region waits for a core that other work holds, and a call on all threads can
take many times as long as on one. ``ThreadChooser`` picks, call by call, between one
thread and all of them (every kernel gives the same bits at any count, so only the time
changes):

- it starts on one thread, which is never the disaster;
- it runs the count whose recent calls (the last ``window``) took least mean wall time:
  it switches when its mean over a full window exceeds ``MARGIN`` times the other count's,
  or at once when one call takes ``SLUMP`` times the other's mean;
- every ``gap`` calls it measures the other count again, in a burst of ``burst`` calls
  cut short by a call twice as slow as the current mean. A burst wins only if every one
  of its calls beat the current mean (on a busy machine all threads are sometimes fast,
  rarely several times in a row); a win switches and halves the gap (not below
  ``first_gap``). A lost burst, or a switch back because the count in use got slower,
  doubles it, up to ``longest_gap``, so that a count that keeps losing costs a vanishing
  share of the calls.

    >>> chooser = ThreadChooser(2)
    >>> threads = chooser.next()          # the count for this call
    >>> chooser.record(threads, seconds)  # its wall time

Means rather than medians: a busy machine shows itself in the slow tail of the calls.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ThreadChooser"]


class ThreadChooser:
    """Chooses between 1 and ``most`` threads for each call (see the module docstring)."""

    SLUMP = 4.0  # a call this many times the other count's mean switches at once
    MARGIN = 1.25  # a full window's mean this many times the other's switches

    def __init__(self, most: int, *, window: int = 16, burst: int = 3, first_gap: int = 8,
                 longest_gap: int = 1024):  # fmt: skip
        if most < 2:
            raise ValueError(f"a thread choice needs at least 2 threads to choose from, got {most}")
        self.counts = (1, most)
        self.current = 1
        self.window, self.burst = window, burst
        self.first_gap, self.longest_gap = first_gap, longest_gap
        self.gap = first_gap
        self._times = {c: deque(maxlen=window) for c in self.counts}
        self._since = 0  # calls on the current count since the last burst or switch
        self._burst: list[float] | None = None  # the other count's times in a running burst

    @property
    def other(self) -> int:
        """The count not in use."""
        return self.counts[1] if self.current == self.counts[0] else self.counts[0]

    def mean(self, threads: int) -> float:
        """The mean wall time of the recent calls on ``threads`` (inf before any)."""
        times = self._times[threads]
        return sum(times) / len(times) if times else float("inf")

    def next(self) -> int:
        """The thread count the next call runs with."""
        if self._burst is None and self._since >= self.gap:
            self._burst = []
            self._times[self.other].clear()
        return self.other if self._burst is not None else self.current

    def record(self, threads: int, seconds: float) -> None:
        """Note that a call on ``threads`` threads took ``seconds`` of wall time."""
        if threads not in self._times:
            return
        self._times[threads].append(seconds)
        if self._burst is not None and threads == self.other:
            self._burst.append(seconds)
            if len(self._burst) >= self.burst or seconds > 2 * self.mean(self.current):
                self._end_burst()
            return
        self._since += 1
        if self._lost(seconds):
            self._switch(won=False)  # the count in use lost: try it again only later

    def _lost(self, seconds: float) -> bool:
        """Whether the count in use is now slower than the other: its recent calls fill the
        window and their mean is over ``MARGIN`` times the other's (a few slow calls in a
        window are noise; a burst re-measures small differences), or its last call took
        over ``SLUMP`` times the other's mean (a busy machine shows at once)."""
        other = self.mean(self.other)
        full = len(self._times[self.current]) == self.window
        worse = self.mean(self.current) > self.MARGIN * other
        return (full and worse) or seconds > self.SLUMP * other

    def _end_burst(self) -> None:
        won = len(self._burst) == self.burst and max(self._burst) < self.mean(self.current)
        self._burst = None
        if won:
            self._switch(won=True)
        else:
            self.gap = min(2 * self.gap, self.longest_gap)
            self._since = 0

    def _switch(self, won: bool) -> None:
        self.current = self.other
        if won:
            self.gap = max(self.first_gap, self.gap // 2)
        else:
            self.gap = min(2 * self.gap, self.longest_gap)
        self._since = 0
