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
- every ``gap`` calls it measures the other count again, in a burst of ``warmup`` +
  ``burst`` calls cut short by a call twice as slow as the current mean (the first calls
  after a change run on cores that were idle, slower for a while, so they only count
  for the cut). A burst wins only if each of its last ``burst`` calls beat the current
  mean (on a busy machine all threads are sometimes fast, rarely several times in a
  row); a win switches and halves the gap (not below ``first_gap``). A lost burst, or a
  switch back because the count in use got slower, doubles it, up to ``longest_gap``, so
  that a count that keeps losing costs a vanishing share of the calls.

- where the machine says how busy it is (Linux's ``/proc/stat``, read by ``IdleCores``),
  it does not try more threads while fewer than half a core per extra thread stood idle
  since the last try: on a busy machine, one call on all threads costs as much as ten on
  one.

    >>> chooser = ThreadChooser(2, idle=IdleCores())
    >>> threads = chooser.next()          # the count for this call
    >>> chooser.record(threads, seconds)  # its wall time

Means rather than medians: a busy machine shows itself in the slow tail of the calls.
"""

from __future__ import annotations

import os
from collections import deque

__all__ = ["IdleCores", "ThreadChooser"]


class IdleCores:
    """Calling it gives the mean number of idle cores since the previous call (None the
    first time, or where ``/proc/stat`` cannot be read)."""

    def __init__(self, path: str = "/proc/stat"):
        self.path = path
        self._last = self._read()

    def _read(self) -> tuple[int, int] | None:
        """(idle, total) jiffies of all cores, or None."""
        try:
            with open(self.path) as f:
                fields = f.readline().split()
            values = [int(v) for v in fields[1:9]]  # user … steal; guest is inside user
        except (OSError, ValueError):
            return None
        if fields[:1] != ["cpu"] or len(values) < 5:
            return None
        return values[3] + values[4], sum(values)  # idle + iowait, everything

    def __call__(self) -> float | None:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1]:
            return None
        share = (now[0] - last[0]) / (now[1] - last[1])
        return share * (os.cpu_count() or 1)


class ThreadChooser:
    """Chooses between 1 and ``most`` threads for each call (see the module docstring)."""

    SLUMP = 4.0  # a call this many times the other count's mean switches at once
    MARGIN = 1.25  # a full window's mean this many times the other's switches

    def __init__(self, most: int, *, window: int = 16, burst: int = 3, warmup: int = 2,
                 first_gap: int = 8, longest_gap: int = 1024, idle=None):  # fmt: skip
        if most < 2:
            raise ValueError(f"a thread choice needs at least 2 threads to choose from, got {most}")
        self.counts = (1, most)
        self.current = 1
        self.window, self.burst, self.warmup = window, burst, warmup
        self.first_gap, self.longest_gap = first_gap, longest_gap
        self.gap = first_gap
        self._times = {c: deque(maxlen=window) for c in self.counts}
        self._since = 0  # calls on the current count since the last burst or switch
        self._burst: list[float] | None = None  # the other count's times in a running burst
        self._idle = idle  # () -> idle cores since the last call, or None: unknown

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
            if self._no_room():
                self._since, self.gap = 0, min(2 * self.gap, self.longest_gap)
            else:
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
            done = len(self._burst) >= self.warmup + self.burst
            if done or seconds > 2 * self.mean(self.current):
                self._end_burst()
            return
        self._since += 1
        if self._lost(seconds):
            self._switch(won=False)  # the count in use lost: try it again only later

    def _no_room(self) -> bool:
        """Whether trying more threads now is known to be futile: fewer than half a core per
        extra thread stood idle since the last try."""
        idle = self._idle() if self._idle is not None else None
        extra = self.other - self.current
        return extra > 0 and idle is not None and idle < 0.5 * extra

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
        measured = self._burst[self.warmup :]
        won = len(measured) == self.burst and max(measured) < self.mean(self.current)
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
