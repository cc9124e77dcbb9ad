"""Mutation fuzzing of everything irc reads: ONNX models, text IR, compiled model files,
PyTorch checkpoints, and the inputs a compiled model is called with.

Each test starts from a valid seed, mutates it (bit flips, byte runs overwritten with
extreme values, truncation, insertions) under hypothesis, and feeds it to the public loader.
The promise checked: the loader returns, or raises an ``irc.IrcError`` (one clear message);
it never raises anything else (a traceback), and the seed file on disk is never modified.

The example counts are small so ``make test`` stays fast (and the same each run);
``IRC_FUZZ_EXAMPLES=5000 pytest tests/fuzz`` runs a longer, randomised campaign. With
``IRC_FUZZ_REPORT=FILE`` every input tried appends one line to FILE (its class, its outcome,
the process's peak RSS), which ``python tests/fuzz/fuzz_counts.py FILE`` sums up per class.
"""

from __future__ import annotations

import hashlib
import os
import resource
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx_builders import tiny_cnn

import irc
from irc.errors import IrcError
from irc.zoo import checkpoint_path
from irc.zoo.checkpoint import load_state_dict

EXAMPLES = int(os.environ.get("IRC_FUZZ_EXAMPLES", "40"))
# the short run in make test draws the same examples every time; a long one explores
SHORT = "IRC_FUZZ_EXAMPLES" not in os.environ
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=SHORT,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])  # fmt: skip
EXTREMES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x80\x7f"]


@st.composite
def mutations(draw, size: int):
    """A list of edits of a byte string of length ``size``: (kind, position, bytes)."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "extreme", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, max(size - 1, 0)))
        payload = (
            draw(st.sampled_from(EXTREMES))
            if kind != "insert"
            else draw(st.binary(min_size=1, max_size=16))
        )
        edits.append((kind, at, draw(st.integers(0, 7)), payload))
    return edits


def mutate(data: bytes, edits) -> bytes:
    """``data`` with ``edits`` applied in order (positions clipped to the current length)."""
    out = bytearray(data)
    for kind, at, bit, payload in edits:
        at = min(at, max(len(out) - 1, 0))
        if not out:
            break
        if kind == "flip":
            out[at] ^= 1 << bit
        elif kind == "extreme":
            out[at : at + len(payload)] = payload
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = payload
        else:
            del out[at : at + 1 + bit]
    return bytes(out)


REPORT = os.environ.get("IRC_FUZZ_REPORT")


def record(kind: str, outcome: str) -> None:
    """Append ``kind outcome peak-RSS-KiB`` to the IRC_FUZZ_REPORT file, when set."""
    if REPORT:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open(REPORT, "a") as f:
            f.write(f"{kind} {outcome} {peak}\n")


def only_irc_errors(load, data: bytes, kind: str) -> None:
    """Call ``load(data)``; anything raised must be an IrcError (recorded as ``kind``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load(data)
        except IrcError:
            record(kind, "refused")
        except BaseException:
            record(kind, "traceback")
            raise
        else:
            record(kind, "loaded")


@pytest.fixture(scope="module")
def onnx_seed() -> bytes:
    return tiny_cnn().SerializeToString()


@pytest.fixture(scope="module")
def text_seed() -> str:
    return irc.print_graph(irc.import_onnx(tiny_cnn()), full=True)


@pytest.fixture(scope="module")
def model_file_seed(tmp_path_factory) -> bytes:
    data = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
    model = irc.compile(tiny_cnn(), precision={"default": "int4", "fc": "int8"},
                        calibration=data, progress=False, num_threads=1)  # fmt: skip
    path = tmp_path_factory.mktemp("seed") / "model.ircm"
    model.save(path)
    return path.read_bytes()


@FUZZ
@given(edits=mutations(size=2000))
@example(edits=[("flip", 270, 0, b"\x00")])  # a weight's dims no longer match its data
def test_onnx_bytes(onnx_seed, edits):
    only_irc_errors(irc.import_onnx, mutate(onnx_seed, edits), "onnx-bytes")


@FUZZ
@given(edits=mutations(size=2000))
def test_onnx_file_is_never_modified(onnx_seed, tmp_path_factory, edits):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(mutate(onnx_seed, edits))
    before = hashlib.sha256(path.read_bytes()).digest()
    only_irc_errors(lambda _: irc.load_graph(path), b"", "onnx-file")
    assert hashlib.sha256(path.read_bytes()).digest() == before


@FUZZ
@given(edits=mutations(size=1500))
@example(edits=[("delete", 69, 0, b"\x00")])  # a dense<0x...> payload of odd length
def test_text_ir(text_seed, edits):
    def parse(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        graph = irc.parse_graph(text)
        irc.verify_graph(graph)

    only_irc_errors(parse, mutate(text_seed.encode(), edits), "text-ir")


@FUZZ
@given(edits=mutations(size=4000))
def test_model_file(model_file_seed, tmp_path_factory, edits):
    path = tmp_path_factory.mktemp("ircm") / "model.ircm"
    data = mutate(model_file_seed, edits)
    path.write_bytes(data)
    only_irc_errors(lambda _: irc.load(path, warmup=False), b"", "model-file")
    assert path.read_bytes() == data


# the user's irc cache, where `make test` fetched the MobileNetV2 weights (read at import:
# tests/conftest.py points IRC_CACHE_DIR at a private folder while tests run)
USER_CACHE = os.environ.get("IRC_CACHE_DIR")


@pytest.fixture(scope="module")
def checkpoint_seed() -> bytes:
    with pytest.MonkeyPatch.context() as mp:
        if USER_CACHE is None:
            mp.delenv("IRC_CACHE_DIR", raising=False)
        else:
            mp.setenv("IRC_CACHE_DIR", USER_CACHE)
        try:
            path = checkpoint_path("mobilenetv2")
        except IrcError:
            pytest.skip("the MobileNetV2 weights are neither installed nor fetched")
        return path.read_bytes()


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 5))
@given(edits=mutations(size=1 << 16), tail=st.booleans())
def test_checkpoint(checkpoint_seed, tmp_path_factory, edits, tail):
    """Edits near the start (the pickle) or near the end (the zip directory)."""
    data = checkpoint_seed
    if tail:  # mirror the positions onto the file's end
        edits = [(k, len(data) - 1 - at, b, p) for k, at, b, p in edits]
    path = tmp_path_factory.mktemp("pth") / "weights.pth"
    path.write_bytes(mutate(data, edits))
    only_irc_errors(lambda _: load_state_dict(path), b"", "checkpoint")


@FUZZ
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
    dtype=st.sampled_from(["float32", "float64", "int8", "int64", "bool", "float16"]),
    fill=st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -1e30]),
)
@example(shape=[1, 3, 8, 8], dtype="float32", fill=float("nan"))  # the model's own shape
@example(shape=[1, 3, 8, 8], dtype="float32", fill=-1e30)
@example(shape=[1, 3, 8, 8], dtype="float64", fill=float("inf"))
def test_runtime_inputs(shape, dtype, fill):
    model = _runtime_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = np.full(shape, fill).astype(dtype)
    try:
        (y,) = model(x)
    except IrcError:
        record("runtime-input", "refused")
        return
    except BaseException:
        record("runtime-input", "traceback")
        raise
    record("runtime-input", "loaded")
    assert x.shape == (1, 3, 8, 8) and y.shape == (1, 5)


_MODEL = []


def _runtime_model():
    """The compiled tiny CNN at batch 1 (compiled once)."""
    if not _MODEL:
        _MODEL.append(irc.compile(onnx.load_from_string(tiny_cnn().SerializeToString()),
                                  num_threads=1))  # fmt: skip
    return _MODEL[0]
