"""Compiled model files: save → load round trips, and clear errors for bad files.

Quantized graphs are checked at the graph level (``write_graph_file`` / ``read_graph_file``
on L3 graphs run by the reference interpreter); compiling one is guarded by whether the
Numba backend has integer kernels.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import numpy as np
import onnx
import pytest
from graph_builders import tiny_cnn_float, tiny_cnn_levels
from onnx_builders import tiny_cnn

import irc
from irc.compile import graph_key
from irc.errors import ElidedConstantError, IrcError
from irc.pass_manager import PassContext, PassManager
from irc.precision import as_plan
from irc.serialize import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE_SIZE,
    ModelFileError,
    is_model_file,
    read_graph_file,
    write_graph_file,
)

X = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)


def float_graph(batch=2):
    return tiny_cnn_float(batch)


def quantized_graph(plan) -> irc.Graph:
    """tiny_cnn at level L3 under ``plan``, calibrated by min/max on X."""
    return tiny_cnn_levels(plan, X)


@pytest.fixture
def saved(tmp_path):
    """A float graph file and its bytes."""
    path = tmp_path / "tiny.ircm"
    write_graph_file(float_graph(), path)
    return path, path.read_bytes()


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("plan", ["int8", "int4", "int2", {"conv": "int4", "fc": "fp16"},
                                  {"conv": "fp16", "fc": "int2"}])  # fmt: skip
def test_quantized_graph_round_trip(tmp_path, plan):
    graph = quantized_graph(plan)
    before = irc.print_graph(graph, full=True)
    path = tmp_path / "q.ircm"
    size = write_graph_file(graph, path)
    assert size == os.path.getsize(path) and is_model_file(path)
    assert irc.print_graph(graph, full=True) == before  # writing changes nothing
    loaded, meta = read_graph_file(path)
    assert irc.print_graph(loaded, full=True) == before
    for got, want in zip(irc.run(loaded, [X]), irc.run(graph, [X])):
        np.testing.assert_array_equal(got, want)
    kinds = {op.kind for op in loaded.ops}
    assert {"qconstant", "quantize", "dequantize"} <= kinds
    assert meta["format_version"] == FORMAT_VERSION and meta["irc_version"] == irc.__version__
    assert meta["inputs"] == [{"name": "x", "shape": [2, 3, 8, 8], "dtype": "f32"}]
    assert meta["outputs"] == [{"name": "y", "shape": [2, 5], "dtype": "f32"}]
    expected = as_plan(plan)
    assert meta["precision"] == {
        n: expected.layers.get(n, expected.default) for n in ("conv", "fc")
    }


def wide_graph(plan) -> irc.Graph:
    """One 512x1024 fully connected layer (2 MB in FP32), quantized under ``plan``."""
    from irc.opdef import build
    from irc.types import DType, TensorType

    rng = np.random.default_rng(0)
    graph = irc.Graph("wide")
    x = graph.add_input("x", TensorType(DType.F32, (1, 1024)))
    w = build(graph, "constant", [], {"value": rng.standard_normal((512, 1024), np.float32)})
    b = build(graph, "constant", [], {"value": rng.standard_normal(512, np.float32)})
    graph.outputs = [build(graph, "gemm", [x, w.result, b.result], {"trans_b": 1}).result]
    ctx = PassContext()
    ctx.analyses["calibration"] = {"x": (-3.0, 3.0), graph.outputs[0].name: (-90.0, 90.0)}
    ctx.analyses["precision_plan"] = as_plan(plan)
    PassManager("quantize{weights=minmax},lower-quantized,pack-weights", ctx).run(graph)
    return graph


def test_file_size_is_its_payloads(tmp_path):
    """Packed weights stay packed: the file is its payloads plus a small overhead."""
    sizes = {}
    for plan in ("fp32", "fp16", "int8", "int4", "int2"):
        graph = wide_graph(plan)
        path = tmp_path / f"{plan}.ircm"
        sizes[plan] = write_graph_file(graph, path)
        _, meta = read_graph_file(path)
        assert meta["payload_bytes"] == irc.report.model_report(graph).totals.bytes
        assert sizes[plan] - meta["payload_bytes"] < 2000  # preamble, JSON, IR, alignment
    # the weights: 512 rows of 1024 elements; per channel a weight scale and an int32 bias
    # (the bias scales, multiplier and shift are recomputed on reading)
    assert sizes["fp32"] > 512 * 1024 * 4
    assert sizes["int4"] < 512 * 1024 // 2 + 512 * 8 + 2000
    assert sizes["int2"] < 512 * 1024 // 4 + 512 * 8 + 2000
    assert sizes["fp32"] / sizes["int4"] > 7.5 and sizes["fp32"] / sizes["fp16"] > 1.99


def _index_entries(path):
    """The payload index of a model file (its blocks read as the reader does)."""
    from irc.serialize import _index, _split

    data = path.read_bytes()
    return _index(str(path), _split(str(path), data)[1])


def test_derived_constants_are_recomputed_not_stored(tmp_path):
    graph = quantized_graph("int4")
    path = tmp_path / "q.ircm"
    write_graph_file(graph, path)
    stored = {(e["kind"], e["attr"], e["value"]) for e in _index_entries(path)}
    layers = [op for op in graph.ops if op.kind in ("qconv2d", "qgemm")]
    assert len(layers) == 2
    for op in layers:
        bias, multiplier, shift = (v.producer for v in op.operands[2:])
        assert ("qconstant", "value", bias.results[0].name) in stored
        assert ("qconstant", "scales", bias.results[0].name) not in stored
        assert ("constant", "value", multiplier.results[0].name) not in stored
        assert ("constant", "value", shift.results[0].name) not in stored
        weight = op.operands[1].producer
        assert ("qconstant", "scales", weight.results[0].name) in stored
    loaded, _ = read_graph_file(path)  # recomputed exactly (the round trip test: bit-exact)
    assert irc.print_graph(loaded, full=True) == irc.print_graph(graph, full=True)


def test_a_hand_edited_multiplier_is_stored(tmp_path):
    graph = quantized_graph("int8")
    layer = next(op for op in graph.ops if op.kind == "qconv2d")
    multiplier = layer.operands[3].producer
    multiplier.attrs["value"] = multiplier.attrs["value"] // 2  # not its derivation
    path = tmp_path / "q.ircm"
    write_graph_file(graph, path)
    names = {e["value"] for e in _index_entries(path)}
    assert multiplier.results[0].name in names
    loaded, _ = read_graph_file(path)
    for got, want in zip(irc.run(loaded, [X]), irc.run(graph, [X])):
        np.testing.assert_array_equal(got, want)


def test_a_format_1_file_with_every_payload_still_reads(tmp_path, monkeypatch):
    import irc.serialize as serialize

    graph = quantized_graph("int4")
    monkeypatch.setattr(serialize, "derived_payloads", lambda graph: set())
    monkeypatch.setattr(serialize, "FORMAT_VERSION", 1)
    path = tmp_path / "v1.ircm"
    write_graph_file(graph, path)
    monkeypatch.undo()
    assert struct.unpack_from("<8sI", path.read_bytes())[1] == 1
    assert len(_index_entries(path)) > 2 * 4  # multipliers and shifts stored
    loaded, _ = read_graph_file(path)
    assert irc.print_graph(loaded, full=True) == irc.print_graph(graph, full=True)


@pytest.mark.parametrize("plan, refused", [("int2", True), ("int4", False)])
def test_a_format_2_file_with_int2_weights_is_refused(tmp_path, monkeypatch, plan, refused):
    """Format 2's INT2 fields were the levels [-2, 1]; read as -3..3 they would run a
    different model, so such a file is refused, naming the weight (INT4 files still read)."""
    import irc.serialize as serialize

    graph = quantized_graph(plan)
    monkeypatch.setattr(serialize, "FORMAT_VERSION", 2)
    path = tmp_path / "v2.ircm"
    write_graph_file(graph, path)
    monkeypatch.undo()
    if not refused:
        loaded, _ = read_graph_file(path)
        assert irc.print_graph(loaded, full=True) == irc.print_graph(graph, full=True)
        return
    message = _error(path)
    assert "format version 2" in message and "qconstant" in message and "recompile" in message


def test_compiled_float_model_round_trip(tmp_path):
    model = irc.compile(tiny_cnn(), warmup=False)
    key = graph_key(model.graph, "")
    path = tmp_path / "tiny.ircm"
    model.save(path)
    assert graph_key(model.graph, "") == key  # saving does not modify the model
    loaded = irc.load(path, warmup=False)
    assert isinstance(loaded, irc.CompiledModel)
    x = X[:1]
    np.testing.assert_array_equal(loaded(x)[0], model(x)[0])
    assert loaded.metadata["precision"] == {"conv": "fp32", "fc": "fp32"}
    assert loaded.report().to_dict() == model.report().to_dict()
    assert model.report().totals.counts == {"fp32": 2}


def test_compiled_int8_model_round_trip(tmp_path):
    calib = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    model = irc.compile(tiny_cnn(), precision="int8", calibration=calib, progress=False)
    path = tmp_path / "int8.ircm"
    model.save(path)
    loaded = irc.load(path)
    x = X[:1]
    np.testing.assert_array_equal(loaded(x)[0], model(x)[0])
    np.testing.assert_array_equal(loaded(x)[0], irc.run(loaded.graph, [x])[0])
    assert loaded.metadata["calibration"] == {"method": "minmax", "samples": 8}
    assert loaded.metadata["precision"] == {"conv": "int8", "fc": "int8"}


def test_elided_graph_cannot_be_saved(tmp_path):
    elided = irc.parse_graph(irc.print_graph(float_graph()))
    with pytest.raises(ElidedConstantError, match="%w"):
        write_graph_file(elided, tmp_path / "e.ircm")
    assert not list(tmp_path.iterdir())  # no partial file left behind


# ------------------------------------------------------------------ bad files
def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def _fields(data: bytes):
    return struct.unpack_from("<8sIIQQQQ", data)


def _data_start(data: bytes) -> int:
    meta, ir, index = _fields(data)[3:6]
    return -(-(PREAMBLE_SIZE + meta + ir + index) // 64) * 64


def _error(path) -> str:
    with pytest.raises(ModelFileError) as info:
        read_graph_file(path)
    assert isinstance(info.value, IrcError) and irc.ModelFileError is ModelFileError
    return str(info.value)


def test_corrupt_payload_names_the_constant(saved, tmp_path):
    path, data = saved
    path.write_bytes(_flip(data, _data_start(data) + 10))  # inside %w, the first payload
    message = _error(path)
    assert "corrupt" in message and "payload of %w (constant value, 432 bytes)" in message


def test_corrupt_sections_are_named(saved):
    path, data = saved
    meta_len = _fields(data)[3]
    cases = {
        20: "header fails its SHA-256 checksum",  # the metadata length field
        PREAMBLE_SIZE + 5: "metadata block fails its checksum",
        PREAMBLE_SIZE + meta_len + 3: "IR block fails its checksum",
        len(data) - 1: "file checksum (last 32 bytes)",
    }
    for at, fragment in cases.items():
        path.write_bytes(_flip(data, at))
        assert fragment in _error(path), at


def test_truncated_files(saved):
    path, data = saved
    for length in (3, 12, 100, PREAMBLE_SIZE + 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:length])
        assert "is truncated" in _error(path), length
    path.write_bytes(data + b"\0")
    assert "unexpected bytes after the model" in _error(path)


def test_foreign_files(tmp_path):
    cases = {
        "model.onnx": (tiny_cnn().SerializeToString(), "looks like an ONNX model"),
        "random.bin": (np.random.default_rng(0).bytes(4096), "does not start with"),
        "empty.ircm": (b"", "is empty"),
        "text.irc": (irc.print_graph(float_graph(), full=True).encode(), "is irc text IR"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        message = _error(path)
        assert "not an irc compiled model file" in message and fragment in message, name
    assert "does not exist" in _error(tmp_path / "missing.ircm")
    onnx.save(tiny_cnn(), tmp_path / "saved.onnx")
    assert not is_model_file(tmp_path / "saved.onnx")


def test_future_version_is_refused(saved):
    path, data = saved
    path.write_bytes(MAGIC + struct.pack("<I", FORMAT_VERSION + 1) + data[12:])
    message = _error(path)
    assert f"format version {FORMAT_VERSION + 1}, newer than this irc reads" in message
    assert "upgrade irc" in message


def _rewrite_index(data: bytes, edit) -> bytes:
    """``data`` with its index edited by ``edit`` and every checksum recomputed."""
    fields = list(_fields(data))
    meta_len, ir_len, index_len = fields[3:6]
    start = PREAMBLE_SIZE + meta_len + ir_len
    index = json.loads(zlib.decompress(data[start : start + index_len]))
    edit(index)
    new_index = zlib.compress(json.dumps(index).encode())
    old_start, meta = _data_start(data), data[PREAMBLE_SIZE : PREAMBLE_SIZE + meta_len]
    ir = data[PREAMBLE_SIZE + meta_len : start]
    fields[5] = len(new_index)
    shas = [hashlib.sha256(b).digest() for b in (meta, ir, new_index)]
    head = struct.pack("<8sIIQQQQ32s32s32s", *fields, *shas)
    body = head + hashlib.sha256(head).digest() + meta + ir + new_index
    body += bytes(-len(body) % 64) + data[old_start:-32]
    return body + hashlib.sha256(body).digest()


def test_payloads_must_fit_their_ops(saved):
    """A consistent file (checksums right) whose index disagrees with the IR is refused."""
    path, data = saved

    def wrong_shape(index):
        index[0]["shape"] = [4, 27]

    def wrong_kind(index):
        index[0]["kind"] = "qconstant"

    def missing(index):
        del index[1]

    for edit, fragment in ((wrong_shape, "is float32[4, 27], the op needs float32[4, 3, 3, 3]"),
                           (wrong_kind, "does not match op 0"),
                           (missing, "has no payload in the file")):  # fmt: skip
        path.write_bytes(_rewrite_index(data, edit))
        assert fragment in _error(path), edit.__name__
    path.write_bytes(_rewrite_index(data, lambda index: None))
    read_graph_file(path)  # the rewriting itself keeps a valid file
