"""Hostile files found by fuzzing (issue 25): each is refused before it allocates much.

- PyTorch checkpoints: a stride-0 tensor that would materialise gigabytes from a few
  hundred bytes, zip members that inflate far beyond the file (storages and the pickle),
  many tensors sharing one storage.
- compiled model files: IR and index blocks that are zlib bombs (checksums right, so the
  cap is what refuses them) and JSON nested deeper than Python's recursion limit.
- reproducible model files: the same model saved twice is the same bytes (no wall-clock
  time unless SOURCE_DATE_EPOCH or ``timestamp=True`` asks; no measured timings).
- ``irc inspect`` on a model whose notes are strings.
- calibration on degenerate data (zeros, one image repeated, too few samples) warns; an
  image Pillow refuses (a decompression bomb, a broken file) is an InputError naming it.

The checkpoints are written by hand with the helpers of ``test_zoo_checkpoint`` (no torch).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from onnx_builders import single_node_model, tiny_cnn
from test_zoo_checkpoint import (
    WRITERS,
    pickled,
    state_dict,
    tensor,
    write_legacy,
)

import irc
from irc.calibration import calibrate, load_image
from irc.calibration.images import PRESETS
from irc.errors import InputError
from irc.serialize import (
    PREAMBLE_SIZE,
    ModelFileError,
    describe_metadata,
    read_graph_file,
    save_model,
    write_graph_file,
)
from irc.tools.cli import main
from irc.zoo import checkpoint
from irc.zoo.checkpoint import CheckpointError, load_state_dict

MIB = 1 << 20


# ------------------------------------------------------------------ checkpoints
def _stride0(key, count, shape, legacy):
    """A tensor of ``shape`` with every stride 0 over a storage of ``count`` float32."""
    return tensor(key, np.zeros(count, np.float32), shape, (0,) * len(shape), legacy=legacy)


@pytest.mark.parametrize("layout", WRITERS)
def test_stride_0_tensor_beyond_the_cap_is_refused_by_name(tmp_path, layout):
    """One float32 repeated 2^25 times (128 MiB, over the 64 MiB slack) from a tiny file."""
    one = np.ones(1, np.float32)
    legacy = layout == "legacy"
    obj = state_dict({"ok": tensor("k", one, (1,), (1,), legacy=legacy),
                      "huge": _stride0("k", 1, (1 << 15, 1 << 10), legacy)})  # fmt: skip
    path = tmp_path / "m.pth"
    WRITERS[layout](path, obj, {"k": one})
    assert path.stat().st_size < 1000
    with pytest.raises(CheckpointError) as e:
        load_state_dict(path)
    message = str(e.value)
    assert "tensor 'huge'" in message and str(path) in message and "MiB" in message


@pytest.mark.parametrize("layout", WRITERS)
def test_a_small_stride_0_tensor_still_loads(tmp_path, layout):
    """Overlapping strides (torch's expand) are legal: within the cap they are read."""
    values = np.array([1.5, -2.0], np.float32)
    obj = state_dict({"w": tensor("k", values, (3, 2), (0, 1), legacy=layout == "legacy")})
    WRITERS[layout](tmp_path / "m.pth", obj, {"k": values})
    np.testing.assert_array_equal(load_state_dict(tmp_path / "m.pth")["w"], np.tile(values, (3, 1)))


def test_many_tensors_sharing_one_storage_are_capped_together(tmp_path):
    """Each tensor alone is under the slack; together they exceed it: the one that crosses
    the total is named."""
    values = np.zeros(4, np.float32)
    per = 2 * MIB  # float32 elements: 8 MiB each, the 9th crosses the 64 MiB slack
    entries = {f"t{i}": tensor("k", values, (per,), (0,)) for i in range(12)}
    WRITERS["zip"](tmp_path / "m.pth", state_dict(entries), {"k": values})
    with pytest.raises(CheckpointError, match=r"tensor 't8'"):
        load_state_dict(tmp_path / "m.pth")
    assert checkpoint.EXPANSION_SLACK == 64 * MIB


def test_stride_0_tensor_needs_no_memory(tmp_path):
    """The fuzzer's case, 4 GiB asked for by a few hundred bytes: peak RSS stays small."""
    one = np.ones(1, np.float32)
    obj = state_dict({"w": _stride0("k", 1, (1 << 30,), legacy=True)})
    path = tmp_path / "m.pth"
    write_legacy(path, obj, {"k": one})
    assert (
        _peak_rss_mib(f"""
from irc.zoo.checkpoint import CheckpointError, load_state_dict
try:
    load_state_dict({str(path)!r})
except CheckpointError as e:
    assert "tensor 'w'" in str(e), e
else:
    raise SystemExit("loaded")
""")
        < 400
    )


def _peak_rss_mib(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python running ``code`` (which must succeed), its heap
    limited to 1 GiB (a regression fails there, not by taking the host's memory); Linux."""
    limit = "import resource\nresource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))\n"
    # VmHWM, not ru_maxrss: the latter keeps the forking test worker's peak across exec
    usage = "\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    probe = limit + code + usage
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


def _deflated_zip(path, members: dict, big: tuple[str, int] | None = None):
    """A zip of ``members`` (name → bytes), deflated; ``big`` = (name, n) adds a member of
    n zero bytes written in 1 MiB pieces (a zip bomb)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if big is not None:
            with z.open(big[0], "w", force_zip64=True) as w:
                for _ in range(big[1] // MIB):
                    w.write(bytes(MIB))


def test_zip_bomb_storage_is_refused_before_inflating(tmp_path):
    """64 MiB of zeros in a 64 kB file: its declared size exceeds the inflation cap."""
    count = 16 * MIB  # float32 elements: 64 MiB
    values = np.zeros(count, np.float32)
    obj = state_dict({"w": tensor("k", values, (count,), (1,))})
    path = tmp_path / "bomb.pth"
    _deflated_zip(path, {"archive/data.pkl": pickled(obj)}, big=("archive/data/k", 4 * count))
    assert path.stat().st_size < MIB
    with pytest.raises(CheckpointError, match=r"storage 'k'.*inflates") as e:
        load_state_dict(path)
    assert str(path) in str(e.value)


def test_zip_bomb_pickle_is_refused_before_inflating(tmp_path):
    """A data.pkl whose valid pickle is followed by 64 MiB of zeros (ignored by pickle)."""
    values = np.ones(2, np.float32)
    obj = state_dict({"w": tensor("k", values, (2,), (1,))})
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as w:
            w.write(pickled(obj))
            for _ in range(64):
                w.write(bytes(MIB))
        z.writestr("archive/data/k", values.tobytes())
    with pytest.raises(CheckpointError, match=r"'archive/data.pkl'.*inflates"):
        load_state_dict(path)


def test_deflated_checkpoint_within_the_cap_still_loads(tmp_path):
    values = np.arange(1000, dtype=np.float32)
    obj = state_dict({"w": tensor("k", values, (1000,), (1,))})
    path = tmp_path / "m.pth"
    _deflated_zip(path, {"archive/data.pkl": pickled(obj), "archive/data/k": values.tobytes()})
    np.testing.assert_array_equal(load_state_dict(path)["w"], values)


# ------------------------------------------------------------------ model files
def _sections(data: bytes) -> dict:
    magic, version, flags, meta, ir, index, length = struct.unpack_from("<8sIIQQQQ", data)
    start, parts = PREAMBLE_SIZE, {}
    for name, n in (("metadata", meta), ("IR", ir), ("index", index)):
        parts[name] = data[start : start + n]
        start += n
    begin = -(-start // 64) * 64
    parts["data"] = data[begin : begin + length]
    parts["head"] = (magic, version, flags)
    return parts


def _assemble(parts: dict) -> bytes:
    """A model file of ``parts`` with every checksum (sections, header, trailer) right."""
    meta, ir, index, data = parts["metadata"], parts["IR"], parts["index"], parts["data"]
    sha = [hashlib.sha256(b).digest() for b in (meta, ir, index)]
    head = struct.pack("<8sIIQQQQ32s32s32s", *parts["head"], len(meta), len(ir), len(index),
                       len(data), *sha)  # fmt: skip
    body = head + hashlib.sha256(head).digest() + meta + ir + index
    body += bytes(-len(body) % 64) + data
    return body + hashlib.sha256(body).digest()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A valid float model file (tiny CNN) and its sections."""
    path = tmp_path_factory.mktemp("ircm") / "tiny.ircm"
    write_graph_file(irc.import_onnx(tiny_cnn(batch=1)), path)
    data = path.read_bytes()
    assert _assemble(_sections(data)) == data  # the helpers rebuild the file exactly
    return data


def _load_error(tmp_path, parts) -> str:
    path = tmp_path / "hostile.ircm"
    path.write_bytes(_assemble(parts))
    with pytest.raises(ModelFileError) as e:
        read_graph_file(path)
    assert str(path) in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("section", ["IR", "index"])
def test_zlib_bomb_sections_are_refused(tmp_path, model_file, section):
    """The block's valid text followed by 16 MiB of whitespace (which would parse)."""
    parts = _sections(model_file)
    text = zlib.decompress(parts[section])
    compressor = zlib.compressobj(9)
    bomb = compressor.compress(text)
    for _ in range(16):
        bomb += compressor.compress(b"\n" * MIB)
    parts[section] = bomb + compressor.flush()
    assert len(parts[section]) < 64 * 1024
    message = _load_error(tmp_path, parts)
    assert f"{section} block inflates to more than" in message


@pytest.mark.parametrize("section", ["metadata", "index"])
def test_deeply_nested_json_is_a_model_file_error(tmp_path, model_file, section):
    parts = _sections(model_file)
    nested = b"[" * 100_000 + b"]" * 100_000
    parts[section] = zlib.compress(nested) if section == "index" else nested
    message = _load_error(tmp_path, parts)
    assert f"{section} block" in message and "nested" in message


def test_a_truncated_zlib_stream_is_corrupt(tmp_path, model_file):
    parts = _sections(model_file)
    parts["IR"] = parts["IR"][: len(parts["IR"]) // 2]
    assert "IR block cannot be read" in _load_error(tmp_path, parts)


# ------------------------------------------------------------------ reproducible files
@pytest.fixture(scope="module")
def compiled():
    return irc.compile(tiny_cnn(batch=1), warmup=False, num_threads=1)


def test_saving_a_model_twice_gives_the_same_bytes(tmp_path, compiled, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    compiled.save(tmp_path / "a.ircm")
    time.sleep(1.1)
    compiled.save(tmp_path / "b.ircm")
    assert (tmp_path / "a.ircm").read_bytes() == (tmp_path / "b.ircm").read_bytes()
    _, meta = read_graph_file(tmp_path / "a.ircm")
    assert "created" not in meta
    assert "created" not in describe_metadata(tmp_path / "a.ircm", meta)


def test_source_date_epoch_and_timestamp(tmp_path, compiled, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    compiled.save(tmp_path / "a.ircm")
    time.sleep(1.1)
    save_model(compiled, tmp_path / "b.ircm", timestamp=True)
    assert (tmp_path / "a.ircm").read_bytes() == (tmp_path / "b.ircm").read_bytes()
    _, meta = read_graph_file(tmp_path / "a.ircm")
    assert meta["created"] == "2023-11-14T22:13:20+00:00"
    assert "created 2023-11-14T22:13:20+00:00" in describe_metadata("a", meta)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    save_model(compiled, tmp_path / "c.ircm", timestamp=True)
    assert read_graph_file(tmp_path / "c.ircm")[1]["created"].startswith("20")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(irc.IrcError, match="SOURCE_DATE_EPOCH"):
        compiled.save(tmp_path / "d.ircm")


def _decided(compiled, measured: float):
    """``compiled`` as if a strategy chose it: a decision summary and per-layer notes
    whose timings are ``measured``."""
    graph = compiled.graph.clone()
    for op in graph.ops:
        if op.kind in ("conv2d", "gemm"):
            op.attrs["note_predicted_us"] = 12.5
            op.attrs["note_measured_us"] = measured
    summary = {
        "strategy": "auto", "budgets": "no budget", "tries": 1, "sensitivity_images": 8,
        "sensitivity_loss": "nsr",
        "predicted": {"bytes": 100, "latency_ms": 0.5, "output_sqnr_db": 30.0},
        "verified": {"bytes": 100, "latency_ms": 0.6, "output_sqnr_db": 31.0, "top1": None,
                     "float_top1": None, "drop": None, "int8_latency_ms": measured},
    }  # fmt: skip
    choice = SimpleNamespace(summary=lambda: summary)
    return SimpleNamespace(graph=graph, calibration=None, metadata=None, choice=choice)


def test_measured_timings_are_not_saved(tmp_path, compiled):
    save_model(_decided(compiled, 41.0), tmp_path / "a.ircm")
    save_model(_decided(compiled, 43.5), tmp_path / "b.ircm")
    assert (tmp_path / "a.ircm").read_bytes() == (tmp_path / "b.ircm").read_bytes()
    graph, meta = read_graph_file(tmp_path / "a.ircm")
    notes = [op.attrs for op in graph.ops if "note_predicted_us" in op.attrs]
    assert notes and not any("note_measured_us" in n for n in notes)
    assert "int8_latency_ms" not in meta["decision"]["verified"]
    save_model(_decided(compiled, 41.0), tmp_path / "c.ircm", measurements=True)
    graph, meta = read_graph_file(tmp_path / "c.ircm")
    assert any(op.attrs.get("note_measured_us") == 41.0 for op in graph.ops)
    assert meta["decision"]["verified"]["int8_latency_ms"] == 41.0


def test_files_of_the_previous_version_with_created_still_load(tmp_path, compiled):
    write_graph_file(compiled.graph, tmp_path / "old.ircm",
                     {"created": "2024-01-02T03:04:05+00:00"})  # fmt: skip
    _, meta = read_graph_file(tmp_path / "old.ircm")
    assert "created 2024-01-02T03:04:05+00:00" in describe_metadata("old.ircm", meta)


# ------------------------------------------------------------------ irc inspect
def test_inspect_prints_string_notes_as_they_are(tmp_path, compiled, capsys):
    graph = compiled.graph.clone()
    for op in graph.ops:
        if op.kind in ("conv2d", "gemm"):
            op.attrs.update(note_output_nsr="n/a", note_local_sqnr="high",
                            note_predicted_us="fast", note_reason=7)  # fmt: skip
    write_graph_file(graph, tmp_path / "notes.ircm")
    assert main(["inspect", str(tmp_path / "notes.ircm")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("conv"))
    assert row.split()[2:5] == ["n/a", "high", "fast"] and row.split()[-1] == "7"


# ------------------------------------------------------------------ calibration
@pytest.fixture(scope="module")
def relu():
    return irc.import_onnx(single_node_model("Relu", [("x", ["N", 6])], [("y", ["N", 6])]))


def _calibration_warnings(graph, data) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibrate(graph, data, progress=False)
    return [str(w.message) for w in caught if "calibration" in str(w.message)]


def test_all_zero_calibration_warns_once(relu):
    with pytest.warns(UserWarning, match=r"range zero.*%x.*%y") as caught:
        calibrate(relu, np.zeros((16, 6), np.float32), progress=False)
    assert len([w for w in caught if "degenerate" in str(w.message)]) == 1


def test_one_sample_repeated_warns(relu):
    one = np.random.default_rng(0).standard_normal((1, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"input 'x' is the same in all 16 samples"):
        calibrate(relu, np.repeat(one, 16, axis=0), progress=False)


def test_too_few_samples_warn(relu):
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"only 3 samples.*at least 8"):
        calibrate(relu, x, progress=False)


def test_healthy_calibration_is_silent(relu):
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    assert _calibration_warnings(relu, x) == []


def _png(path, size=(64, 64)) -> None:
    from PIL import Image

    Image.new("RGB", size, (120, 30, 200)).save(path)


@pytest.mark.parametrize("pixels", [3000, 1500])  # over 2× the limit: an error; over it: a warning
def test_decompression_bomb_image_is_an_input_error(tmp_path, monkeypatch, pixels):
    from PIL import Image

    path = tmp_path / "bomb.png"
    _png(path, (pixels // 10, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match=r"bomb\.png") as e:
        load_image(path, PRESETS["torchvision"])
    assert "pixels" in str(e.value)


def test_broken_images_are_input_errors(tmp_path):
    path = tmp_path / "good.png"
    _png(path)
    data = path.read_bytes()
    ihdr = data.index(b"IHDR")  # type, 13 bytes of fields (width, height first), CRC
    fields = struct.pack(">II", 1 << 16, 1 << 16) + data[ihdr + 12 : ihdr + 17]
    huge = b"IHDR" + fields + struct.pack(">I", zlib.crc32(b"IHDR" + fields))
    short = data[ihdr + 4 : ihdr + 9]  # an IHDR of 5 bytes, its CRC right: a ValueError
    short = struct.pack(">I", 5) + b"IHDR" + short + struct.pack(">I", zlib.crc32(b"IHDR" + short))
    cases = {  # 2^32 pixels with a right CRC: Pillow's DecompressionBombError
        "huge.png": data[:ihdr] + huge + data[ihdr + 21 :],
        "ihdr.png": data[: ihdr - 4] + short + data[ihdr + 21 :],
        "crc.png": data[: ihdr + 6] + bytes([data[ihdr + 6] ^ 0xFF]) + data[ihdr + 7 :],
        "cut.png": data[: len(data) // 2],
        "garbage.png": data[:40] + bytes(range(256)) * 4,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            load_image(tmp_path / name, PRESETS["torchvision"])


def test_metadata_json_is_still_plain_json(tmp_path, compiled):
    """The metadata block stays what other tools read: one JSON object."""
    compiled.save(tmp_path / "m.ircm")
    meta = json.loads(_sections((tmp_path / "m.ircm").read_bytes())["metadata"])
    assert meta["format"] == "irc-model" and meta["format_version"] == 4


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_a_forged_memo_index_costs_no_memory(tmp_path, layout):
    """LONG_BINPUT 2**25: the C unpickler grows its memo array past it (512 MiB here,
    under the probe's 1 GiB heap; a one-byte change to MobileNetV2's legacy checkpoint took
    19 GB that way); irc's reader stays small."""
    bomb = b"\x80\x02}r\x00\x00\x00\x02."  # PROTO 2, EMPTY_DICT, LONG_BINPUT 2^25, STOP
    path = tmp_path / "m.pth"
    if layout == "legacy":
        sys_info = {"protocol_version": 1001, "little_endian": True}
        parts = [pickle.dumps(checkpoint.MAGIC_NUMBER, 2), pickle.dumps(1001, 2),
                 pickle.dumps(sys_info, 2), bomb, pickle.dumps([], 2)]  # fmt: skip
        path.write_bytes(b"".join(parts))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", bomb)
    peak = _peak_rss_mib(f"""
from irc.zoo.checkpoint import CheckpointError, load_state_dict
try:
    load_state_dict({str(path)!r})
except CheckpointError:
    pass
""")
    assert peak < 400
