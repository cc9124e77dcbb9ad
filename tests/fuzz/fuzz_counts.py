"""Sum up a fuzz run's report: inputs tried, loaded, refused with an irc error, and
tracebacks per input class, with the peak RSS of the process that tried them.

    IRC_FUZZ_REPORT=/tmp/fuzz.txt IRC_FUZZ_EXAMPLES=2000 pytest -p no:xdist tests/fuzz
    python tests/fuzz/fuzz_counts.py /tmp/fuzz.txt

Each line of the report is ``class outcome peak-RSS-KiB`` (tests/fuzz/test_fuzz_loaders.py
writes them). A crash (the process dying) writes nothing more: pytest reports it, and the
count of inputs then stops short of hypothesis's.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict

OUTCOMES = ("loaded", "refused", "traceback")


def summarize(lines) -> str:
    """A table, one row per input class and a total, from the report's lines."""
    counts: dict[str, Counter] = defaultdict(Counter)
    peaks: dict[str, int] = defaultdict(int)
    for line in lines:
        kind, outcome, peak = line.split()
        counts[kind][outcome] += 1
        peaks[kind] = max(peaks[kind], int(peak))
    header = f"{'class':<14} {'tried':>7} " + " ".join(f"{o:>9}" for o in OUTCOMES)
    rows = [header + f" {'peak RSS':>10}"]
    total: Counter = Counter()
    for kind in sorted(counts):
        total.update(counts[kind])
        cells = " ".join(f"{counts[kind][o]:>9}" for o in OUTCOMES)
        tried = sum(counts[kind].values())
        rows.append(f"{kind:<14} {tried:>7} {cells} {peaks[kind] / 1024:>7.0f} MiB")
    cells = " ".join(f"{total[o]:>9}" for o in OUTCOMES)
    peak = max(peaks.values(), default=0) / 1024
    rows.append(f"{'total':<14} {sum(total.values()):>7} {cells} {peak:>7.0f} MiB")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    """Print the table for the report file named by ``argv[0]``."""
    with open(argv[0]) as f:
        print(summarize(f))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
