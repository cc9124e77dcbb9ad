"""Long graphs compile in seconds (issue 25, finding 8: a 32k-op chain took 197 s).

The memory planner's own scale tests are in tests/backend/test_plan_memory_scale.py; these
time the whole of ``irc.compile`` and check that the driver's instrumented variants (which
cost Python's compiler most of a long graph's compile time) are compiled only when used,
and that an arena too large for the host is a one-line irc error.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from graph_builders import relu_chain

import irc
from irc.backends.numba.kernel_table import BackendError
from irc.tools.cli import main


def test_a_100k_op_chain_compiles_in_seconds():
    graph = relu_chain(100_000)
    start = time.perf_counter()
    model = irc.compile(graph, num_threads=1, progress=False)
    seconds = time.perf_counter() - start
    assert seconds < 60, f"compiling a 100k-op chain took {seconds:.1f} s"  # 9 s when written
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    (y,) = model(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_the_instrumented_drivers_compile_on_first_use():
    model = irc.compile(relu_chain(3), num_threads=1, progress=False)
    namespace = model._driver._namespace
    assert "run" in namespace
    assert not {"run_profiled", "run_observed", "run_range"} & set(namespace)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    seen = []
    (y,) = model._driver.run_observed([lambda op, args, results: seen.append(op.kind)], x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert seen == ["relu"] * len(model._driver.program.calls)
    assert "run_observed" in namespace and "run_range" not in namespace
    first = model._driver.snapshot(model._driver.program.calls[-1], x)
    np.testing.assert_array_equal(model._driver.run_from(first, x)[0], y)


HUGE = (
    "graph @g(%x: f32[1,281474976710656]) {\n"
    "  %y = relu(%x) : f32[1,281474976710656]\n"
    "  return %y\n}\n"
)


def test_an_arena_the_host_cannot_allocate_is_a_backend_error():
    """A 1 PiB activation used to escape as numpy's raw _ArrayMemoryError."""
    with pytest.raises(BackendError) as info:
        irc.compile(irc.parse_graph(HUGE), num_threads=1, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "arena of 1.0 PiB" in message and "%y" in message


def test_the_cli_prints_the_arena_error_in_one_line(tmp_path, capsys):
    path = tmp_path / "huge.irc"
    path.write_text(HUGE)
    code = main(["compile", str(path), "-o", str(tmp_path / "huge.ircm")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("irc: error")]
    assert code == 2 and "Traceback" not in err  # the other lines are build progress
    assert len(errors) == 1 and "arena of 1.0 PiB" in errors[0]
