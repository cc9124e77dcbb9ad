"""ThreadChooser against simulated machines: idle (all threads faster), busy (all threads
many times slower), and a load that comes and goes."""

from __future__ import annotations

import random

import pytest

from irc.thread_choice import IdleCores, ThreadChooser


def run(chooser: ThreadChooser, seconds_of, calls: int) -> tuple[float, dict[int, int]]:
    """Total time of ``calls`` calls and the calls per thread count, each call taking
    ``seconds_of(threads, i)``."""
    total, used = 0.0, {}
    for i in range(calls):
        threads = chooser.next()
        seconds = seconds_of(threads, i)
        chooser.record(threads, seconds)
        total += seconds
        used[threads] = used.get(threads, 0) + 1
    return total, used


def idle(threads, i):
    return 1.6 if threads == 2 else 2.5


def busy(threads, i):
    return 50.0 if threads == 2 else 3.0


def test_an_idle_machine_runs_on_all_threads():
    chooser = ThreadChooser(2)
    total, used = run(chooser, idle, 2000)
    assert chooser.current == 2
    assert used[1] < 0.03 * 2000  # one thread only while it is re-measured
    assert total < 1.02 * 1.6 * 2000


def test_a_busy_machine_never_pays_much_for_trying_all_threads():
    chooser = ThreadChooser(2)
    total, used = run(chooser, busy, 2000)
    assert chooser.current == 1
    assert used[2] <= 8  # one call per burst, the gaps doubling from 8
    assert total < 1.1 * 3.0 * 2000


def test_load_that_comes_and_goes_is_followed():
    chooser = ThreadChooser(2)
    run(chooser, idle, 500)
    assert chooser.current == 2
    slow = []
    for i in range(20):
        threads = chooser.next()
        seconds = busy(threads, i)
        chooser.record(threads, seconds)
        slow.append(threads == 2)
    # one slow call switches to one thread; the first re-measure costs one more
    assert chooser.current == 1 and slow[0] and sum(slow) == 1
    run(chooser, busy, 3000)  # the gap grows to its longest
    _, used = run(chooser, idle, 1100)
    assert chooser.current == 2 and used[2] > 0


def test_a_noisy_but_faster_count_still_wins():
    """All threads at 1.6 with one call in ten at 5 (mean 1.94) against one thread at 2.5."""
    chooser = ThreadChooser(2)
    run(chooser, lambda t, i: (5.0 if i % 10 == 0 else 1.6) if t == 2 else 2.5, 1000)
    assert chooser.current == 2


def test_other_counts_are_ignored_and_one_thread_is_no_choice():
    chooser = ThreadChooser(4)
    chooser.record(3, 1.0)  # a count it never gave: no effect
    assert chooser.next() == 1
    with pytest.raises(ValueError, match="at least 2 threads"):
        ThreadChooser(1)


def test_all_threads_that_are_usually_fast_do_not_lure_it():
    """A busy machine as measured: all threads take 3 ms, but one call in eight takes 80
    (mean 12.6), one thread 7 ms; lucky bursts must not keep switching the model over."""
    rng = random.Random(1)
    chooser = ThreadChooser(2)
    slow_tail = (3.0,) * 7 + (80.0,)
    total, used = run(chooser, lambda t, i: rng.choice(slow_tail) if t == 2 else 7.0, 4000)
    assert chooser.current == 1
    assert total < 1.06 * 7.0 * 4000, used


def test_an_idle_machine_with_noisy_calls_still_runs_on_all_threads():
    """All threads 1.6 ms with one call in ten at 5 (mean 1.94) against one thread at 2.5:
    a window with a few slow calls must not send it back to one thread for good."""
    rng = random.Random(2)
    chooser = ThreadChooser(2)
    noisy = (1.6,) * 9 + (5.0,)
    total, used = run(chooser, lambda t, i: rng.choice(noisy) if t == 2 else 2.5, 4000)
    assert chooser.current == 2
    assert total < 0.82 * 2.5 * 4000, used


def test_no_idle_core_means_no_try_of_more_threads():
    """Where the machine reports no idle core, all threads are never tried; where it
    reports one, they are, and win on an idle machine."""
    busy_machine = ThreadChooser(2, idle=lambda: 0.2)
    _, used = run(busy_machine, busy, 2000)
    assert busy_machine.current == 1 and 2 not in used
    idle_machine = ThreadChooser(2, idle=lambda: 1.0)
    run(idle_machine, idle, 100)
    assert idle_machine.current == 2


def test_idle_cores_read_from_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    idle = IdleCores(str(stat))
    stat.write_text("cpu  250 0 100 850 0 0 0 0 0 0\n")  # 150 busy, 50 idle jiffies
    assert idle() == pytest.approx(0.5)  # a quarter of the time idle on 2 cores
    assert idle() is None  # no time passed
    assert IdleCores(str(tmp_path / "absent"))() is None
