"""onnx's own node conformance cases, for the ops irc imports, run through irc.onnx_backend.

Every case whose nodes all have an irc converter is run; the test prints passed/total and
fails when fewer pass than the count recorded in ``MIN_PASSED`` (raise it as irc improves;
never lower it without saying why in the commit).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx

from irc.errors import IrcError
from irc.frontends.onnx_converters import CONVERTERS
from irc.onnx_backend import IrcBackend

# measured 2026-11-23: 300/437; 2026-12-07, with the detector / OCR ops (Pow, Sqrt, Erf,
# Equal, Where, Range, Expand, Tile, ReduceSum, ReduceMax, LayerNormalization,
# ConvTranspose): 406/548; with Neg, Log and ReduceMin: 425/567; with Gelu: 429/571; the
# rest are float8/bf16/int4
# dtypes, cubic resize, training
# modes, 1-D convolution and optional-typed inputs
MIN_PASSED = 429


def _collect():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases if all(n.op_type in CONVERTERS for n in c.model.graph.node)]


def _as_array(item) -> np.ndarray:
    """Case data may hold TensorProtos (as onnx's own runner notes); it converts them too."""
    if isinstance(item, onnx.TensorProto):
        return onnx.numpy_helper.to_array(item)
    return np.asarray(item)


def _run_case(case) -> str | None:
    """None when the case passes, else a one-line reason."""
    try:
        rep = IrcBackend.prepare(case.model)
        for inputs, expected in case.data_sets:
            got = rep.run([_as_array(x) for x in inputs])
            if len(got) != len(expected):
                return f"{len(got)} outputs, expected {len(expected)}"
            for g, e in zip(got, expected):
                e = _as_array(e)
                if g.dtype != e.dtype:
                    return f"dtype {g.dtype}, expected {e.dtype}"
                np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol)
    except IrcError as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    except AssertionError as e:
        return "mismatch: " + " ".join(str(e).split())[:120]
    return None


def test_node_conformance_cases(capsys):
    cases = _collect()
    failures = {}
    for case in cases:
        reason = _run_case(case)
        if reason is not None:
            failures[case.name] = reason
    passed = len(cases) - len(failures)
    with capsys.disabled():
        print(f"\nonnx node conformance (irc ops): {passed}/{len(cases)} passed")
        for name, reason in sorted(failures.items()):
            print(f"  FAIL {name}: {reason}")
    assert passed >= MIN_PASSED, f"{passed}/{len(cases)} passed, recorded minimum {MIN_PASSED}"
