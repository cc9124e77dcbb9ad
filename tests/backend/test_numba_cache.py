"""A corrupt Numba cache file is a cache miss with a warning, not a failing model; two
processes compiling the same kernels cold take turns, and the second loads them.

Each run is a fresh process with its own ``NUMBA_CACHE_DIR`` (the suite's cache is never
touched): the first fills the cache, every cache file is then truncated, and the next run
must still compute the right answer, warn about the file, and rewrite it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import numpy as np, irc
g = irc.parse_graph("graph @g(%x: f32[2,16]) {\\n  %y = relu(%x) : f32[2,16]\\n  return %y\\n}\\n")
(y,) = irc.compile(g, num_threads=1)(np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16))
print("sum", float(y.sum()))
"""


def run(cache: Path, prelude: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-c", prelude + SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture
def corrupt_cache(tmp_path) -> Path:
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "sum 8.258065223693848\n"  # (1 + 3 + ... + 31) / 31
    files = [p for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[:20])  # truncated mid-pickle
    return tmp_path


def test_a_truncated_cache_file_is_rebuilt_with_a_warning(corrupt_cache):
    again = run(corrupt_cache)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "sum 8.258065223693848\n"
    assert "CorruptCacheWarning" in again.stderr and "is corrupt" in again.stderr
    clean = run(corrupt_cache)  # the files were rewritten: no warning now
    assert clean.returncode == 0 and "corrupt" not in clean.stderr


def test_without_the_guard_the_same_cache_fails(corrupt_cache):
    """What the guard prevents: Numba's own cache reader raises on every call."""
    unguarded = "from numba.core import caching\ncaching.IndexDataCacheFile._irc_guarded = True\n"
    failed = run(corrupt_cache, unguarded)
    assert failed.returncode != 0 and "truncated" in failed.stderr


def _saves_of_two_cold_processes(cache: Path) -> int:
    """Cache files Numba wrote ("data saved") when two processes compile at once."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_DEBUG_CACHE="1")
    runs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    return sum(out.count("data saved") for out in outputs)


def test_two_cold_processes_compile_each_kernel_once(tmp_path):
    """The second process waits for the first's warm-up and loads what it compiled, so
    the two save what one cold run saves (without the lock, two processes started together
    save most kernels twice: 5 or 6 saves of 3 when this was written)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "count"), NUMBA_DEBUG_CACHE="1")
    single = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300).stdout.count("data saved")  # fmt: skip
    assert single > 0
    assert _saves_of_two_cold_processes(tmp_path / "shared") == single


PLAN = """
from irc.backends.numba import int_conv_nhwc as c
print("vnni" if c.HAVE_VNNI else "no-vnni", c.conv_plan(c.PATH_AUTO, 32, 16, 1000, 1000, 0)[0])
"""


def test_forcing_a_lower_path_does_not_load_the_other_kernels(tmp_path):
    """A kernel compiled with VNNI and cached is not what a process with IRC_DISABLE_VNNI=1
    loads: the kernel choice is part of the cache key (the choice is a compile-time
    constant of the cached code)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("IRC_DISABLE_VNNI", None)
    first = subprocess.run([sys.executable, "-c", PLAN], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr
    if not first.stdout.startswith("vnni"):
        pytest.skip("this CPU (or Numba's target) has no AVX-512 VNNI")
    assert first.stdout.split()[1] == "64"  # the u8 x s8 quad kernel
    env["IRC_DISABLE_VNNI"] = "1"
    second = subprocess.run([sys.executable, "-c", PLAN], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["no-vnni", "16"]  # the int16-pair kernel, compiled anew


def test_without_avx512_an_avx_vnni_host_runs_the_256_bit_quad_kernel(tmp_path):
    """IRC_DISABLE_AVX512=1 on a host with AVX-VNNI: the planner picks the 8-lane
    ``vpdpbusd`` kernel (lanes 32), as on a CPU with AVX-VNNI and no AVX-512."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), IRC_DISABLE_AVX512="1")
    env.pop("IRC_DISABLE_VNNI", None)
    script = PLAN + "print(c.HAVE_AVX_VNNI)\n"
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    plan, have = run.stdout.split("\n")[:2]
    if have != "True":
        pytest.skip("this CPU (or Numba's target) has no AVX-VNNI")
    assert plan.split() == ["no-vnni", "32"]
