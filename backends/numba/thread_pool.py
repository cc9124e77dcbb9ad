"""How long Numba's OpenMP threads spin when they wait, before they sleep.

GNU OpenMP (Numba's ``omp`` threading layer on Linux) lets a waiting thread spin for
``GOMP_SPINCOUNT`` iterations, 300,000 by default, at every barrier and between parallel
regions. On an idle machine that keeps the threads ready for the driver's next kernel.
On a busy one, a thread spinning at a barrier holds a core that the thread it waits for
needs, and one call on all threads can take a hundred times as long as on one. A spin
count of ``SPIN_COUNT`` keeps most of the idle-machine speed and lets a waiting thread
yield its core within microseconds.

``limit_spinning()`` sets it unless the user chose a wait policy or a spin count, and
must run before the OpenMP library loads (the first parallel call): importing
``irc.backends.numba`` does.
"""

from __future__ import annotations

import os

__all__ = ["SPIN_COUNT", "limit_spinning"]

SPIN_COUNT = 10_000


def limit_spinning() -> None:
    """Set ``GOMP_SPINCOUNT`` to ``SPIN_COUNT`` unless ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` is already set."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
