"""bench/peak_probe.py: the instruction-throughput probes run, and run what they claim.

Oracle: for a few short loop counts each compiled probe's accumulators equal a numpy model
of the same chained arithmetic (vpdpbusd's u8·s8 quads, vpdpwssd's s16 pairs, acc +
vpmaddwd(acc, b), fma), wrapping int32 like the hardware; and the compiled loop holds the
instruction's mnemonic once per chain at least. Probes the host lacks are skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llvmlite")

_PATH = Path(__file__).resolve().parents[2] / "bench" / "peak_probe.py"


def _load():
    """bench/peak_probe.py imported by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("peak_probe", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peak_probe", module)
    spec.loader.exec_module(module)
    return module


pp = _load()
_NAMES = list(pp.PROBES)
_BASIC = ["vpmaddwd+vpaddd 256", "fma f32 256", "fma f32 512"]


def _need(name: str) -> None:
    """Skip unless the host runs probe ``name``."""
    ok, why = pp.supported(name)
    if not ok:
        pytest.skip(f"{name}: {why}")


@pytest.mark.parametrize("name", _NAMES)
def test_probe_matches_numpy_model(name):
    """The compiled probe's accumulators equal the numpy model's after 0, 1, 2 and 5 steps."""
    _need(name)
    for iters in (0, 1, 2, 5):
        src = pp.operands(name, seed=iters + 1)
        got = pp.run_probe(name, iters, src)
        want = pp.reference(name, iters, src)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"{name}, {iters} iterations")
    if iters:
        assert not np.array_equal(got, pp.reference(name, 0, src))  # the loop did something


@pytest.mark.parametrize("name", _NAMES)
def test_loop_holds_the_instruction(name):
    """The assembly has the probe's mnemonic once per chain at least, and no spills."""
    _need(name)
    compiled = pp.compile_probe(name)
    assert compiled.loop_count() >= pp.PROBES[name].n_chains
    assert "rsp" not in compiled.asm


def test_peaks_positive():
    """peaks(0.01) gives a positive GOP/s for each FMA/AVX2 probe the host supports."""
    runnable = [name for name in _BASIC if pp.supported(name)[0]]
    if not runnable:
        pytest.skip("host has neither AVX2 nor FMA")
    result = pp.peaks(0.01)
    assert set(result) == {name for name in pp.PROBES if pp.supported(name)[0]}
    for name in runnable:
        assert result[name] > 0.0, name
