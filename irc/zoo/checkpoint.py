"""Read PyTorch checkpoints (.pth) without torch: state dicts as numpy arrays.

A checkpoint is a pickle, and unpickling runs whatever callables the pickle names. This
reader resolves only an explicit allow-list of globals (tensor rebuilding, storage types,
``collections.OrderedDict``), each mapped to a function of our own that builds a
placeholder; anything else (``os.system``, ``builtins.eval``, …) stops the load with a
``CheckpointError`` naming it. Tensors become arrays only after the pickle is read, by
striding over their storage's bytes with every index checked against the storage size.

What a hostile file can make this reader allocate is bounded, and checked before
anything is allocated:

- zip members (the pickle, each storage) are read in 1 MiB pieces, and all of them together
  may inflate to at most ``MAX_INFLATION`` (16) times the checkpoint file's size plus
  ``INFLATION_SLACK`` (16 MiB): a member whose declared size exceeds what is left is refused
  unread (torch stores members uncompressed, so real checkpoints inflate 1×);
- every tensor must lie inside its storage (offset + sum of (size - 1) * stride is an
  element of it), checked against the storage's declared size before any storage is read,
  and the declared sizes against the file before they are read;
- all tensors together may materialise at most ``MAX_EXPANSION`` (4) times their storages'
  bytes plus ``EXPANSION_SLACK`` (64 MiB): overlapping strides (stride 0, as torch's
  ``expand`` saves) repeat elements, and a few hundred bytes could otherwise ask for
  gigabytes. The tensor that crosses the cap is named.

Both layouts torch has written are read:

- zip (torch >= 1.6): ``<dir>/data.pkl`` plus one ``<dir>/data/<key>`` member per storage;
  a storage's persistent id is ``('storage', StorageType, key, location, numel)``.
- legacy (older): pickles of a magic number, the protocol version 1001 and a sys_info
  dict, then the object pickle, then the list of storage keys, then per storage an int64
  element count and its raw bytes. Persistent ids carry a sixth field (a view or None).

    >>> state = load_state_dict("mobilenet_v2-b0353104.pth")
    >>> state["features.0.0.weight"].shape
    (32, 3, 3, 3)
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from irc.errors import IrcError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_INFLATION = 16  # zip members may inflate to 16x the file's size in all ...
INFLATION_SLACK = 16 << 20  # ... plus 16 MiB
MAX_EXPANSION = 4  # tensors may materialise 4x their storages' bytes in all ...
EXPANSION_SLACK = 64 << 20  # ... plus 64 MiB
_PIECE = 1 << 20  # zip members are read this many bytes at a time


class CheckpointError(IrcError):
    """A checkpoint cannot be read: missing, corrupt, truncated, or holding refused objects."""


# The placeholders are named tuples: a pickle's BUILD opcode writes into an object's
# __dict__ (even a frozen dataclass's), and these have none, so nothing can alter them.
class _StorageType(NamedTuple):
    """A torch storage class (``torch.FloatStorage`` …): the element type of its bytes."""

    name: str
    dtype: str  # numpy code without byte order (bfloat16: u2, widened after reading)


class _Storage(NamedTuple):
    """A storage named by the pickle; its bytes are read after the pickle."""

    key: str
    kind: _StorageType
    numel: int
    view: tuple[str, int] | None = None  # a legacy view's (root storage key, offset)


class _TensorRef(NamedTuple):
    """A tensor named by the pickle: a strided window over a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StateDict(dict):
    """What ``collections.OrderedDict`` builds: a dict that drops pickled attributes."""

    def __setstate__(self, state):
        pass  # torch pickles `_metadata` (module versions) here; nothing we need


def _ints(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(type(v) is int and v >= 0 for v in value):
        raise CheckpointError(f"tensor {what} must be non-negative integers, got {value!r}")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Our ``torch._utils._rebuild_tensor_v2``: a checked placeholder, no torch."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor's storage must be a storage, got {type(storage).__name__}")
    shape, strides = _ints(size, "sizes"), _ints(stride, "strides")
    (offset,) = _ints((storage_offset,), "storage offset")
    if len(shape) != len(strides):
        raise CheckpointError(f"tensor sizes {shape} and strides {strides} differ in rank")
    return _TensorRef(storage, offset, shape, strides)  # bounds: _check_tensors, by name


def _rebuild_parameter(data, *_ignored):
    """Our ``torch._utils._rebuild_parameter(_with_state)``: the tensor itself."""
    if not isinstance(data, _TensorRef):
        raise CheckpointError(f"a parameter must wrap a tensor, got {type(data).__name__}")
    return data


_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}  # fmt: skip
ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _StateDict,
    **{("torch", n): _StorageType(n, dt) for n, dt in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle._Unpickler):
    """Resolves only ``ALLOWED_GLOBALS``; storages become ``_Storage`` placeholders.

    The Python unpickler, not the C one: its memo is a dict, so a forged memo index
    (``LONG_BINPUT 2**31``) costs one entry, where the C unpickler grows an array to it
    (a one-byte change to MobileNetV2's checkpoint took 19 GB that way)."""

    def __init__(self, file, tensors: bool):
        super().__init__(file)
        self.tensors = tensors
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        found = ALLOWED_GLOBALS.get((module, name)) if self.tensors else None
        if found is None:
            raise CheckpointError(
                f"refused global '{module}.{name}': a checkpoint may hold only tensors and "
                "plain containers (the file may be malicious; it was not executed)"
            )
        if isinstance(found, _StorageType):
            return found
        return lambda *args: found(*args)  # fresh: a pickle's BUILD on it changes nothing of ours

    def persistent_load(self, pid):
        ok = self.tensors and isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str):
            raise CheckpointError(f"unknown persistent id {pid!r:.80}")
        _, kind, key, _location, numel, *view = pid
        (numel,) = _ints((numel,), "storage size")
        view = view[0] if view else None
        if view is not None:
            ok = isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
            if not ok:
                raise CheckpointError(f"unknown storage view {view!r:.80}")
            view_key, view_offset, view_numel = view[0], *_ints(view[1:], "view bounds")
            root = self.persistent_load(("storage", kind, key, _location, numel))
            if view_offset + view_numel > root.numel:
                raise CheckpointError(f"storage view {view!r} exceeds storage '{key}'")
            return self._remember(_Storage(view_key, kind, view_numel, (key, view_offset)))
        return self._remember(_Storage(key, kind, numel))

    def _remember(self, storage: _Storage) -> _Storage:
        known = self.storages.setdefault(storage.key, storage)
        if known != storage:
            raise CheckpointError(f"storage '{storage.key}' is declared twice, differently")
        return known


def load_state_dict(path) -> dict[str, np.ndarray]:
    """The state dict (parameter name → array) of a PyTorch checkpoint file, read without torch.

    Takes a bare state dict or a dict holding one under ``state_dict`` / ``model``. Raises
    ``CheckpointError`` naming the file when it is missing, corrupt, truncated, not a
    checkpoint, names any global outside ``ALLOWED_GLOBALS``, or would exceed the caps of
    the module docstring (a zip member inflating too far, a tensor outside its storage,
    tensors materialising too many bytes), before allocating for it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            f = io.BytesIO(file.read())  # reads of forged lengths return what is there
        state, arrays = _read_zip(f) if zipfile.is_zipfile(f) else _read_legacy(f)
        return {name: _materialize(name, ref, arrays) for name, ref in state.items()}
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint '{path}': {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint '{path}': {e.strerror or e}") from None
    except Exception as e:  # any failure of untrusted bytes: corrupt or truncated
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({type(e).__name__}: {e})"
        ) from None


def _read_zip(f) -> tuple[dict[str, _TensorRef], dict[str, np.ndarray]]:
    """(state dict of tensor placeholders, storage arrays) of a zip checkpoint."""
    budget = _Budget(MAX_INFLATION * len(f.getbuffer()) + INFLATION_SLACK)
    with zipfile.ZipFile(f) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError("a zip file without one '<dir>/data.pkl': not a checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = budget.read(archive, prefix + "byteorder", f"'{prefix}byteorder'")
            order = order.decode("ascii", "replace").strip()
        data = budget.read(archive, pickles[0], f"'{pickles[0]}'")
        unpickler = _Unpickler(io.BytesIO(data), tensors=True)
        state = _state_dict(unpickler.load())
        del data
        _check_tensors(state, unpickler.storages, order)
        raw = {}
        for key, storage in unpickler.storages.items():
            member = f"{prefix}data/{key}"
            if storage.view is not None:
                continue  # a legacy-style view: its root is read
            if member not in names:
                raise CheckpointError(f"storage '{key}' is missing (no '{member}')")
            expected = storage.numel * _numpy_dtype(storage.kind, order).itemsize
            if archive.getinfo(member).file_size != expected:  # checked before inflating it
                raise CheckpointError(f"storage '{key}' is not {storage.numel} elements long")
            raw[key] = budget.read(archive, member, f"storage '{key}' ('{member}')")
    return state, _storage_arrays(unpickler.storages, raw, order)


class _Budget:
    """The bytes zip members may still inflate to (``MAX_INFLATION``, ``INFLATION_SLACK``)."""

    def __init__(self, limit: int):
        self.limit = self.left = limit

    def read(self, archive: zipfile.ZipFile, name: str, what: str) -> bytes:
        """Member ``name`` of ``archive``, read in pieces; CheckpointError (naming it as
        ``what``) when its declared or actual size exceeds what is left of the budget."""
        declared = archive.getinfo(name).file_size
        if declared > self.left:
            raise self._refuse(what, declared)
        pieces, size = [], 0
        with archive.open(name) as member:
            while piece := member.read(min(_PIECE, self.left - size + 1)):
                size += len(piece)
                if size > self.left or size > declared:  # zipfile stops at declared; be sure
                    raise self._refuse(what, size)
                pieces.append(piece)
        self.left -= size
        return b"".join(pieces)

    def _refuse(self, what: str, size: int) -> CheckpointError:
        return CheckpointError(
            f"{what} inflates to {size:,} bytes or more, beyond the {self.limit:,} bytes all "
            f"zip members may inflate to ({MAX_INFLATION}x the file's size + "
            f"{INFLATION_SLACK >> 20} MiB): a zip bomb, or not a checkpoint torch wrote"
        )


def _read_legacy(f) -> tuple[dict[str, _TensorRef], dict[str, np.ndarray]]:
    """(state dict of tensor placeholders, storage arrays) of a legacy checkpoint."""
    f.seek(0)  # is_zipfile moved it
    try:
        magic = _Unpickler(f, tensors=False).load()
    except CheckpointError:
        raise  # a pickle naming a refused global: say which
    except Exception:
        magic = None
    if magic != MAGIC_NUMBER:
        raise CheckpointError("not a PyTorch checkpoint (neither a zip nor the legacy magic)")
    protocol = _Unpickler(f, tensors=False).load()
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol {protocol!r} (expected 1001)")
    sys_info = _Unpickler(f, tensors=False).load()
    big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    order = "big" if big else "little"
    unpickler = _Unpickler(f, tensors=True)
    state = _state_dict(unpickler.load())
    _check_tensors(state, unpickler.storages, order)
    keys = _Unpickler(f, tensors=False).load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("the list of storage keys after the pickle is malformed")
    roots = {s.key: s for s in unpickler.storages.values() if s.view is None}
    size = len(f.getbuffer())
    raw = {}
    for key in keys:
        if key not in roots:
            raise CheckpointError(f"storage '{key}' is stored but no tensor names it")
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"truncated before storage '{key}'")
        numel = int.from_bytes(head, order, signed=True)
        if numel != roots[key].numel:
            raise CheckpointError(f"storage '{key}' holds {numel} elements, not {roots[key].numel}")
        nbytes = numel * _numpy_dtype(roots[key].kind, order).itemsize
        if nbytes > size - f.tell():  # checked before reading: a forged count allocates nothing
            raise CheckpointError(f"truncated: storage '{key}' ends early")
        raw[key] = f.read(nbytes)
    return state, _storage_arrays(unpickler.storages, raw, order)


def _numpy_dtype(kind: _StorageType, order: str) -> np.dtype:
    return np.dtype(("<" if order == "little" else ">") + kind.dtype)


def _storage_arrays(storages, raw: dict[str, bytes], order: str) -> dict[str, np.ndarray]:
    """Each storage's elements as a 1-D native-order array (views sliced from their root)."""
    out = {}
    for key, s in storages.items():
        root_key, start = s.view if s.view is not None else (key, 0)
        if root_key not in raw:
            raise CheckpointError(f"storage '{root_key}' is named but its data is missing")
        dtype = _numpy_dtype(s.kind, order)
        data = np.frombuffer(raw[root_key], dtype=dtype)  # sizes were checked when read
        data = data[start : start + s.numel].astype(dtype.newbyteorder("="))
        if s.kind.name == "BFloat16Storage":  # bfloat16 is the high half of a float32
            data = (data.astype(np.uint32) << 16).view(np.float32)
        out[key] = data
    return out


def _check_tensors(state: dict[str, _TensorRef], storages, order: str) -> None:
    """CheckpointError naming the first tensor that reaches outside its storage, or that
    takes the tensors' materialised bytes past ``MAX_EXPANSION`` x their storages' bytes +
    ``EXPANSION_SLACK``; from the pickle's metadata alone, before any storage is read."""
    roots = [s for s in storages.values() if s.view is None]
    stored = sum(s.numel * _numpy_dtype(s.kind, order).itemsize for s in roots)
    limit = MAX_EXPANSION * stored + EXPANSION_SLACK
    total = 0
    for name, t in state.items():
        count = math.prod(t.shape)
        if count == 0:
            continue  # nothing to read
        what = f"tensor '{name}' {list(t.shape)} (strides {list(t.stride)}, offset {t.offset})"
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
        if last >= t.storage.numel:  # as_strided would read past the buffer
            raise CheckpointError(
                f"{what} reaches element {last} of a storage of {t.storage.numel}"
            )
        bfloat16 = t.storage.kind.name == "BFloat16Storage"  # read as float32
        total += count * (4 if bfloat16 else np.dtype(t.storage.kind.dtype).itemsize)
        if total > limit:
            raise CheckpointError(
                f"{what} would bring the tensors to {total / 2**20:,.1f} MiB from "
                f"{stored / 2**20:,.1f} MiB of storages, beyond the cap of {MAX_EXPANSION}x "
                f"those + {EXPANSION_SLACK >> 20} MiB (overlapping strides repeat elements); "
                "refused unread"
            )


def _materialize(name: str, t: _TensorRef, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Tensor placeholder ``t`` (named ``name``) as its own array, copied from its storage."""
    data = arrays[t.storage.key]
    if 0 in t.shape:
        return np.zeros(t.shape, data.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
    if last >= data.size:  # _check_tensors saw the declared size; this is the one read
        raise CheckpointError(f"tensor '{name}' reaches element {last} of a storage of {data.size}")
    strides = tuple(s * data.itemsize for s in t.stride)
    window = np.lib.stride_tricks.as_strided(data[t.offset :], t.shape, strides)
    return np.array(window, copy=True)


def _state_dict(obj) -> dict[str, _TensorRef]:
    """The state dict (name → tensor placeholder) in an unpickled checkpoint object."""
    if isinstance(obj, dict):
        if obj and all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return _state_dict(obj[key])
    raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict of named tensors")
