"""The torch-free checkpoint reader on hand-assembled .pth files of both layouts.

The pickles are written opcode by opcode (protocol 2, as torch writes them), so these
tests need neither torch nor the weight packages: zip checkpoints (``archive/data.pkl`` +
``archive/data/<key>``) and legacy ones (magic, protocol, sys_info, object, keys, raw
storages), strided and offset tensors, dtypes, and refused or damaged files.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

from irc.errors import IrcError
from irc.zoo.checkpoint import MAGIC_NUMBER, CheckpointError, load_state_dict


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(frozen=True)
class Call:  # callable(*args): pushes callable, args tuple, REDUCE
    func: object
    args: tuple


@dataclass(frozen=True)
class PersistentId:
    pid: tuple


@dataclass(frozen=True)
class Build:  # obj with BUILD state (torch pickles OrderedDict._metadata so)
    obj: object
    state: object


def opcodes(obj) -> bytes:
    """The protocol-2 opcodes that push ``obj`` (no memo: every object written in full)."""
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if -(2**31) <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw  # LONG1
    if isinstance(obj, str):
        data = obj.encode()
        return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE
    if isinstance(obj, tuple):
        return b"(" + b"".join(opcodes(v) for v in obj) + b"t"  # MARK … TUPLE
    if isinstance(obj, list):
        return b"]" + b"(" + b"".join(opcodes(v) for v in obj) + b"e"  # EMPTY_LIST, APPENDS
    if isinstance(obj, dict):
        items = b"".join(opcodes(k) + opcodes(v) for k, v in obj.items())
        return b"}" + (b"(" + items + b"u" if obj else b"")  # EMPTY_DICT, SETITEMS
    if isinstance(obj, Global):
        return b"c" + f"{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, Call):
        return opcodes(obj.func) + opcodes(obj.args) + b"R"
    if isinstance(obj, PersistentId):
        return opcodes(obj.pid) + b"Q"  # BINPERSID
    if isinstance(obj, Build):
        return opcodes(obj.obj) + opcodes(obj.state) + b"b"
    raise TypeError(obj)


def pickled(obj) -> bytes:
    return b"\x80\x02" + opcodes(obj) + b"."


STORAGE_TYPES = {
    np.float32: "FloatStorage", np.float64: "DoubleStorage", np.float16: "HalfStorage",
    np.int64: "LongStorage", np.int32: "IntStorage", np.uint8: "ByteStorage",
    np.int8: "CharStorage", np.bool_: "BoolStorage", "bf16": "BFloat16Storage",
}  # fmt: skip


def tensor(key, storage, shape, stride, offset=0, legacy=False, parameter=False, view=None):
    """``_rebuild_tensor_v2(storage, offset, shape, stride, …)`` over ``storage`` (an array)."""
    dtype = "bf16" if storage.dtype == np.uint16 else storage.dtype.type
    pid = ("storage", Global("torch", STORAGE_TYPES[dtype]), key, "cpu", storage.size)
    if legacy:
        pid += (view,)
    hooks = Call(Global("collections", "OrderedDict"), ())
    t = Call(
        Global("torch._utils", "_rebuild_tensor_v2"),
        (PersistentId(pid), offset, tuple(shape), tuple(stride), False, hooks),
    )
    if parameter:
        t = Call(Global("torch._utils", "_rebuild_parameter"), (t, True, hooks))
    return t


def state_dict(entries: dict) -> Build:
    """An ``OrderedDict`` of ``entries`` with torch's ``_metadata`` attribute."""
    items = tuple((k, v) for k, v in entries.items())
    d = Call(Global("collections", "OrderedDict"), (list(items),))
    return Build(d, {"_metadata": {"": {"version": 1}}})


def write_zip(path, obj, storages: dict, prefix="archive"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pickled(obj))
        for key, array in storages.items():
            z.writestr(f"{prefix}/data/{key}", array.tobytes())
        z.writestr(f"{prefix}/version", "3\n")


def write_legacy(path, obj, storages: dict, little=True):
    sys_info = {"protocol_version": 1001, "little_endian": little,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
    order = "<" if little else ">"
    parts = [pickle.dumps(MAGIC_NUMBER, 2), pickle.dumps(1001, 2), pickle.dumps(sys_info, 2)]
    parts += [pickled(obj), pickle.dumps(sorted(storages), 2)]
    for key in sorted(storages):
        array = storages[key]
        data = array.astype(array.dtype.newbyteorder(order)).tobytes()
        parts += [struct.pack(order + "q", array.size), data]
    path.write_bytes(b"".join(parts))


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def sample(legacy: bool):
    """(checkpoint object, storages, expected state dict): strides, offsets, shared storage."""
    weights = np.arange(24, dtype=np.float32) * 0.5 - 3.0  # one storage, three tensors
    counts = np.array([7], np.int64)
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    entries = {
        "conv.weight": tensor("0", weights, (2, 3, 2, 2), (12, 4, 2, 1), legacy=legacy),
        "fc.weight": tensor("0", weights, (4, 3), (1, 4), 8, legacy=legacy, parameter=True),
        "fc.bias": tensor("0", weights, (3,), (2,), 17, legacy=legacy),
        "bn.num_batches_tracked": tensor("1", counts, (), (), legacy=legacy),
        "grid.t": tensor("2", grid.ravel(), (4, 3), (1, 4), legacy=legacy),
        "empty": tensor("2", grid.ravel(), (0, 5), (5, 1), legacy=legacy),
    }
    expected = {
        "conv.weight": weights.reshape(2, 3, 2, 2),
        "fc.weight": weights[8:20].reshape(3, 4).T,
        "fc.bias": weights[[17, 19, 21]],
        "bn.num_batches_tracked": np.array(7, np.int64),
        "grid.t": grid.T,
        "empty": np.zeros((0, 5), np.float32),
    }
    return state_dict(entries), {"0": weights, "1": counts, "2": grid.ravel()}, expected


@pytest.mark.parametrize("layout", WRITERS)
def test_state_dict_values_strides_and_offsets(tmp_path, layout):
    obj, storages, expected = sample(legacy=layout == "legacy")
    path = tmp_path / "model.pth"
    WRITERS[layout](path, obj, storages)
    state = load_state_dict(path)
    assert list(state) == list(expected)
    for key, want in expected.items():
        got = state[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
        assert got.flags.writeable and got.flags.owndata, key  # a copy, not a strided view


@pytest.mark.parametrize("layout", WRITERS)
@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32, np.uint8, np.int8, np.bool_])
def test_storage_dtypes(tmp_path, layout, dtype):
    values = (np.arange(6) % 3).astype(dtype)
    obj = state_dict({"x": tensor("k", values, (2, 3), (3, 1), legacy=layout == "legacy")})
    WRITERS[layout](tmp_path / "m.pth", obj, {"k": values})
    got = load_state_dict(tmp_path / "m.pth")["x"]
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, values.reshape(2, 3))


def test_bfloat16_storage_becomes_float32(tmp_path):
    floats = np.array([1.0, -2.5, 3.140625], np.float32)  # exact in bfloat16
    halves = (floats.view(np.uint32) >> 16).astype(np.uint16)
    write_zip(tmp_path / "m.pth", state_dict({"x": tensor("k", halves, (3,), (1,))}), {"k": halves})
    got = load_state_dict(tmp_path / "m.pth")["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, floats)


def test_legacy_big_endian_and_storage_views(tmp_path):
    root = np.arange(10, dtype=np.float32)
    view = tensor("root", root, (2, 2), (2, 1), legacy=True, view=("v", 4, 6))
    obj = state_dict({"w": view, "all": tensor("root", root, (10,), (1,), legacy=True)})
    write_legacy(tmp_path / "m.pth", obj, {"root": root}, little=False)
    state = load_state_dict(tmp_path / "m.pth")
    np.testing.assert_array_equal(state["w"], root[4:8].reshape(2, 2))
    np.testing.assert_array_equal(state["all"], root)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_state_dict_nested_in_a_training_checkpoint(tmp_path, key):
    values = np.ones(3, np.float32)
    obj = {"epoch": 3, key: state_dict({"w": tensor("k", values, (3,), (1,))})}
    write_zip(tmp_path / "m.pth", obj, {"k": values}, prefix="m")
    assert list(load_state_dict(tmp_path / "m.pth")) == ["w"]


def _evil(module, name, arg, marker):
    return state_dict({"w": Call(Global(module, name), (arg.format(marker=marker),))})


@pytest.mark.parametrize("layout", WRITERS)
@pytest.mark.parametrize(
    "module, name, arg",
    [("os", "system", "touch {marker}"), ("builtins", "eval", "open('{marker}', 'w')"),
     ("posix", "system", "touch {marker}"), ("subprocess", "Popen", "touch {marker}")],
)  # fmt: skip
def test_refuses_globals_outside_the_allow_list(tmp_path, layout, module, name, arg):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    WRITERS[layout](path, _evil(module, name, arg, marker), {})
    with pytest.raises(CheckpointError) as e:
        load_state_dict(path)
    assert f"'{module}.{name}'" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()
    assert isinstance(e.value, IrcError)  # the CLI prints it on one line, exit 2


def test_refuses_a_plain_malicious_pickle(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickled(Call(Global("os", "system"), (f"touch {marker}",))))
    with pytest.raises(CheckpointError, match=r"refused global 'os\.system'"):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_globals_hidden_in_the_legacy_header_and_key_list(tmp_path):
    good = tmp_path / "good.pth"
    values = np.ones(2, np.float32)
    write_legacy(
        good, state_dict({"w": tensor("k", values, (2,), (1,), legacy=True)}), {"k": values}
    )
    data = good.read_bytes()
    keys = pickle.dumps(["k"], 2)
    evil = pickled(Call(Global("builtins", "exec"), ("pass",)))
    (tmp_path / "bad.pth").write_bytes(data.replace(keys, evil))
    with pytest.raises(CheckpointError, match=r"'builtins\.exec'"):
        load_state_dict(tmp_path / "bad.pth")


@pytest.mark.parametrize(
    "target",
    ["tensor", "storage type", "rebuild function"],
)
def test_build_cannot_alter_placeholders_or_allowed_globals(tmp_path, target):
    """BUILD writes an object's __dict__ (even a frozen dataclass's): nothing we hand out has
    one, or it is a fresh callable, so a checked tensor cannot be widened afterwards."""
    values = np.zeros(4, np.float32)
    t = tensor("k", values, (4,), (1,))
    if target == "tensor":
        evil = Build(t, {"shape": (1 << 20,)})
    elif target == "storage type":
        evil = Build(Global("torch", "FloatStorage"), {"dtype": "f8"})
    else:
        evil = Build(Global("torch._utils", "_rebuild_tensor_v2"), {"__defaults__": (1,)})
    write_zip(tmp_path / "evil.pth", state_dict({"w": t, "evil": evil}), {"k": values})
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "evil.pth")
    write_zip(tmp_path / "good.pth", state_dict({"w": t}), {"k": values})
    assert load_state_dict(tmp_path / "good.pth")["w"].dtype == np.float32  # nothing persisted


@pytest.mark.parametrize("layout", WRITERS)
def test_tensor_reaching_past_its_storage_is_refused(tmp_path, layout):
    values = np.zeros(6, np.float32)
    obj = state_dict({"w": tensor("k", values, (2, 3), (3, 2), legacy=layout == "legacy")})
    WRITERS[layout](tmp_path / "m.pth", obj, {"k": values})
    with pytest.raises(CheckpointError, match="reaches element 7 of a storage of 6"):
        load_state_dict(tmp_path / "m.pth")


def test_truncated_legacy_file(tmp_path):
    obj, storages, _ = sample(legacy=True)
    write_legacy(tmp_path / "full.pth", obj, storages)
    data = (tmp_path / "full.pth").read_bytes()
    for cut in (len(data) - 3, len(data) - 60, len(data) // 3, 10):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            load_state_dict(path)
        assert str(path) in str(e.value)


def test_forged_storage_size_allocates_nothing(tmp_path):
    values = np.ones(4, np.float32)
    obj = state_dict({"w": Call(Global("torch._utils", "_rebuild_tensor_v2"), (
        PersistentId(("storage", Global("torch", "FloatStorage"), "k", "cpu", 2**60, None)),
        0, (4,), (1,), False, {}))})  # fmt: skip
    write_legacy(tmp_path / "m.pth", obj, {"k": values})
    data = (tmp_path / "m.pth").read_bytes()
    data = data.replace(struct.pack("<q", 4) + values.tobytes(), struct.pack("<q", 2**60))
    (tmp_path / "m.pth").write_bytes(data)
    with pytest.raises(CheckpointError, match="truncated: storage 'k' ends early"):
        load_state_dict(tmp_path / "m.pth")


def test_zip_damage_is_reported_with_the_file(tmp_path):
    obj, storages, _ = sample(legacy=False)
    write_zip(tmp_path / "full.pth", obj, storages)
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.pth"):
        load_state_dict(tmp_path / "half.pth")
    write_zip(tmp_path / "missing.pth", obj, {k: v for k, v in storages.items() if k != "1"})
    with pytest.raises(CheckpointError, match=r"storage '1' is missing"):
        load_state_dict(tmp_path / "missing.pth")
    write_zip(tmp_path / "short.pth", obj, {**storages, "1": np.zeros(0, np.int64)})
    with pytest.raises(CheckpointError, match=r"storage '1' is not 1 elements long"):
        load_state_dict(tmp_path / "short.pth")
    with zipfile.ZipFile(tmp_path / "garbled.pth", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00(X\x01")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_state_dict(tmp_path / "garbled.pth")


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", b"\x80\x02J\x07\x00\x00\x00."]
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as e:
        load_state_dict(path)
    assert str(path) in str(e.value)


def test_missing_file_and_non_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*nope.pth"):
        load_state_dict(tmp_path / "nope.pth")
    write_zip(tmp_path / "list.pth", [1, 2, 3], {})
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_state_dict(tmp_path / "list.pth")
