"""One-file compiled models: ``CompiledModel.save(path)`` and ``irc.load(path)``.

The file holds the final graph (text IR with every constant elided) and the constant
payloads as raw bytes, so a packed INT4 model file is about 1/8 of its FP32 one. Layout
(integers little-endian; all offsets from the start of the file):

    preamble, 176 bytes:
      magic b"IRCMODEL" (8) | format version u32 | flags u32 (0)
      metadata length u64 | IR length u64 | index length u64 | data length u64
      SHA-256 of metadata (32) | of IR (32) | of index (32) | of the preamble before it (32)
    metadata   JSON (UTF-8): irc and format version, inputs/outputs (name, shape, dtype),
               precision per layer, calibration method, payload bytes; the creation time
               only when asked for (see below)
    IR         the graph's text IR, constants printed as dense<...> (``print_graph``)
    index      JSON list, one entry per constant payload in op order (each ``constant``
               value, each ``qconstant`` value and scales): op index, kind, attribute,
               value name, dtype name, shape, offset in the data block, nbytes, SHA-256;
               an integer layer's multiplier, shift and bias scales are not stored (its
               other scales determine them, ``irc.derived_constants``): reading
               recomputes them. A payload may be stored narrower than the op holds it
               (``irc.derived_constants.narrowed``, from format 4): an int32 bias as
               int8 or int16, float32 scales as float16 with an entry ``exponent`` e
               (value = float16 · 2^e, present when e ≠ 0); "dtype" is the stored one,
               and reading widens it back exactly
               (flag bit 0: IR and index are zlib-compressed; always set by this writer)
    zero padding to a multiple of 64
    data       the payloads, raw little-endian bytes, each at a 64-byte-aligned offset
    trailer    SHA-256 of every byte before it (32)

Reading checks the magic, the version (a newer format gets a clear error), the sizes
(truncation), the checksums (naming the section or constant that is corrupt), parses the
IR, re-attaches each payload to its op (checking kind, dtype and shape) and verifies the
graph. Every problem raises ``ModelFileError``. No pickle: nothing in the file runs code.

What a hostile file can make reading allocate is bounded: the IR and index blocks are
inflated in one bounded step, each to at most ``MAX_INFLATION`` (64) times its compressed
bytes plus ``INFLATION_SLACK`` (1 MiB) (real blocks inflate about 10x; a zlib bomb ~1000x),
and JSON nested deeper than Python's recursion limit is a ``ModelFileError`` naming the
block, not a RecursionError.

The same model saved twice is the same bytes:

- ``created`` (the creation time, UTC) is written only when the environment sets
  ``SOURCE_DATE_EPOCH`` (that time: reproducible builds' convention) or the caller passes
  ``timestamp=True`` (then the current time unless ``SOURCE_DATE_EPOCH`` is set). Files of
  earlier versions, which always have it, read as before.
- measurements, which differ from run to run, are left out unless ``measurements=True``:
  the op attributes in ``MEASURED_ATTRS`` (``note_measured_us``, the latency the decision
  measured per layer) and the metadata entries in ``MEASURED_METADATA`` (the decision
  summary's verified latencies; ``irc inspect`` then says the latency was not saved).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import struct
import zlib

import numpy as np

from irc.derived_constants import WIDENINGS, derived_payloads, narrowed, rederive, widened
from irc.errors import InputError, IrcError
from irc.ir import Graph
from irc.loader import is_text_ir
from irc.opdef import infer_types
from irc.parser import parse_graph
from irc.printer import print_graph
from irc.report import model_report
from irc.tensor import ElidedTensor, tensor_value_type
from irc.types import DType
from irc.verifier import verify_graph
from irc.version import __version__

MAGIC = b"IRCMODEL"
# 2: derived requantization constants and bias scales not stored; 3: INT2 levels are the
# odd -3..3 (2-bit fields (level - 1) / 2), no longer two's complement [-2, 1];
# 4: biases and per-channel scales stored narrower where exact (int8/int16, float16 · 2^e)
FORMAT_VERSION = 4
FIRST_ODD_INT2 = 3  # older files' INT2 fields mean other levels: they are refused
FIRST_NARROW = 4  # the first format whose payloads may be stored narrower than they compute
MAX_EXPONENT = 256  # |exponent| of a float16 payload (a float32 spans 2^-149 .. 2^128)
FLAG_ZLIB = 1  # the IR and index blocks are zlib streams
ALIGN = 64
_HEAD = struct.Struct("<8sII")  # magic, version, flags: the same in every format version
_PREAMBLE = struct.Struct("<8sIIQQQQ32s32s32s")
PREAMBLE_SIZE = _PREAMBLE.size + 32
TRAILER_SIZE = 32
# dtypes a payload may have: every DType's numpy storage (no object or structured dtypes)
_DTYPES = {d.numpy_name for d in DType}
MAX_INFLATION = 64  # a zlib block may inflate to 64x its compressed bytes ...
INFLATION_SLACK = 1 << 20  # ... plus 1 MiB
# measurements (they differ from run to run): left out of a file unless asked for
MEASURED_ATTRS = ("note_measured_us",)  # op attributes (irc.decision.choose.annotate)
MEASURED_METADATA = (  # metadata entries
    ("decision", "verified", "latency_ms"),
    ("decision", "verified", "int8_latency_ms"),
)


class ModelFileError(IrcError):
    """A compiled model file cannot be read: foreign, truncated, corrupt or too new."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _sha(data) -> bytes:
    return hashlib.sha256(data).digest()


# ------------------------------------------------------------------ writing
def _payloads(graph: Graph):
    """(op index, op, attribute, array) of every tensor attribute a file stores, in op
    order: all but those an integer layer's scales determine (``irc.derived_constants``)."""
    derived = derived_payloads(graph)
    for i, op in enumerate(graph.ops):
        for key, value in op.attrs.items():
            if isinstance(value, ElidedTensor):
                value.require(f"%{op.results[0].name} ({op.kind} {key})")
            if isinstance(value, np.ndarray) and (id(op), key) not in derived:
                yield i, op, key, value


def _stored(op, key: str, value: np.ndarray) -> tuple[np.ndarray, int]:
    """(array, exponent) the file holds for a payload: ``narrowed`` from format
    ``FIRST_NARROW`` on (the module's ``FORMAT_VERSION`` when writing), else ``value``."""
    return narrowed(op, key, value) if FORMAT_VERSION >= FIRST_NARROW else (value, 0)


def _keeps_inline(op, key: str) -> bool:
    """A per-tensor qconstant's scale stays in the text (its type cannot be elided)."""
    return op.kind == "qconstant" and key == "scales" and op.attrs.get("axis", 0) < 0


def _elided_text(graph: Graph, measurements: bool = False) -> str:
    """The graph's text IR with every constant payload printed as ``dense<...>``, and
    without the ``MEASURED_ATTRS`` unless ``measurements``."""
    copy = graph.clone()  # attribute dicts are copied: the caller's graph is untouched
    for op in copy.ops:
        if not measurements:
            for key in MEASURED_ATTRS:
                op.attrs.pop(key, None)
        for key, value in op.attrs.items():
            if isinstance(value, np.ndarray) and not _keeps_inline(op, key):
                op.attrs[key] = ElidedTensor(tensor_value_type(value))
    return print_graph(copy, full=False)


def _little_endian_bytes(array: np.ndarray) -> np.ndarray:
    """The array's bytes, little-endian and contiguous, as a flat uint8 view."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.reshape(-1).view(np.uint8)


def _signature(values) -> list[dict]:
    return [
        {"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype.short} for v in values
    ]


def creation_time(timestamp: bool = False) -> str | None:
    """The ``created`` entry of a file written now: ``SOURCE_DATE_EPOCH`` (seconds since
    1970, UTC) when the environment sets it, else the current time if ``timestamp``, else
    None (no entry: the file's bytes do not depend on when it was written)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise InputError(
                f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, got {epoch!r}"
            ) from None
    elif timestamp:
        when = datetime.datetime.now(datetime.timezone.utc)
    else:
        return None
    return when.isoformat(timespec="seconds")


def graph_metadata(graph: Graph, timestamp: bool = False) -> dict:
    """The metadata block's standard fields for ``graph`` (written by ``write_graph_file``);
    ``created`` only as ``creation_time(timestamp)`` gives one."""
    report = model_report(graph)
    created = creation_time(timestamp)
    return {
        "format": "irc-model",
        "format_version": FORMAT_VERSION,
        "irc_version": __version__,
        **({"created": created} if created is not None else {}),
        "graph": graph.name,
        "inputs": _signature(graph.inputs),
        "outputs": _signature(graph.outputs),
        "precision": {row.name: row.precision for row in report.layers},
        "calibration": None,  # {"method", "samples"} when the model was calibrated
        "size_bytes": report.totals.bytes,
        "fp32_bytes": report.totals.fp32_bytes,
    }


def write_graph_file(
    graph: Graph,
    path,
    metadata: dict | None = None,
    *,
    timestamp: bool = False,
    measurements: bool = False,
) -> int:
    """Write ``graph`` (constants with data) to ``path``; returns the file's size.

    ``metadata`` entries are added to (and override) ``graph_metadata(graph, timestamp)``;
    they must be JSON-able. Unless ``measurements``, the op attributes ``MEASURED_ATTRS``
    and the metadata entries ``MEASURED_METADATA`` are left out (the graph and ``metadata``
    are not modified): the same graph gives the same bytes. The file is written to a
    temporary name and renamed into place.
    """
    meta = {**graph_metadata(graph, timestamp), **(metadata or {})}
    if not measurements:
        meta = _without_measurements(meta)
    ir = zlib.compress(_elided_text(graph, measurements).encode("utf-8"), 6)
    index, arrays, offset = [], [], 0
    for i, op, key, value in _payloads(graph):
        stored, exponent = _stored(op, key, value)
        data = _little_endian_bytes(stored)
        index.append({
            "op": i, "kind": op.kind, "value": op.results[0].name, "attr": key,
            "dtype": stored.dtype.name, "shape": [int(d) for d in value.shape],
            "offset": offset, "nbytes": int(data.nbytes), "sha256": _sha(data).hex(),
            **({"exponent": exponent} if exponent else {}),
        })  # fmt: skip
        arrays.append((offset, data))
        offset = _align(offset + data.nbytes)
    meta["payload_bytes"] = int(sum(d.nbytes for _, d in arrays))
    meta_bytes = json.dumps(meta, indent=1, sort_keys=False).encode("utf-8")
    index_bytes = zlib.compress(json.dumps(index, separators=(",", ":")).encode("utf-8"), 6)
    data_length = arrays[-1][0] + arrays[-1][1].nbytes if arrays else 0
    head = _PREAMBLE.pack(
        MAGIC, FORMAT_VERSION, FLAG_ZLIB, len(meta_bytes), len(ir), len(index_bytes), data_length,
        _sha(meta_bytes), _sha(ir), _sha(index_bytes),
    )  # fmt: skip
    head += _sha(head)
    sections = head + meta_bytes + ir + index_bytes
    sections += bytes(_align(len(sections)) - len(sections))
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:

            def write(chunk) -> None:
                f.write(chunk)
                digest.update(chunk)

            write(sections)
            position = 0
            for start, data in arrays:
                if start > position:
                    write(bytes(start - position))
                write(data)
                position = start + data.nbytes
            f.write(digest.digest())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return len(sections) + data_length + TRAILER_SIZE


def _without_measurements(meta: dict) -> dict:
    """``meta`` without the entries ``MEASURED_METADATA`` names (copied where changed)."""
    for path in MEASURED_METADATA:
        meta = _without(meta, path)
    return meta


def _without(d, path: tuple[str, ...]):
    if not isinstance(d, dict) or path[0] not in d:
        return d
    out = dict(d)
    if len(path) == 1:
        del out[path[0]]
    else:
        out[path[0]] = _without(d[path[0]], path[1:])
    return out


def save_model(compiled, path, *, timestamp: bool = False, measurements: bool = False) -> int:
    """Write a ``CompiledModel`` to one file (``irc.load`` reads it); returns its size.

    The model is not modified. The calibration method (and sample count), when the model
    was quantized with calibration data, and the decision summary (strategy, budgets,
    prediction, verification), when a strategy chose its precisions, go into the metadata;
    per-layer reasons are annotations on the IR. ``timestamp`` and ``measurements`` are as
    for ``write_graph_file``: by default the same model gives the same bytes.
    """
    extra = {}
    calibration = getattr(compiled, "calibration", None)
    method = getattr(calibration, "method", None)
    if method:
        extra["calibration"] = {"method": method, "samples": getattr(calibration, "count", None)}
    elif getattr(compiled, "metadata", None):  # a loaded model keeps what its file said
        extra["calibration"] = compiled.metadata.get("calibration")
    choice = getattr(compiled, "choice", None)
    if choice is not None:
        extra["decision"] = choice.summary()
    elif getattr(compiled, "metadata", None) and compiled.metadata.get("decision"):
        extra["decision"] = compiled.metadata["decision"]
    return write_graph_file(
        compiled.graph, path, extra, timestamp=timestamp, measurements=measurements
    )


# ------------------------------------------------------------------ reading
def is_model_file(path) -> bool:
    """True when ``path`` is a file that starts with the compiled model magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _foreign(path: str, data: bytes) -> ModelFileError:
    if not data:
        return ModelFileError(f"'{path}' is empty, not an irc compiled model file")
    what = "does not start with the irc model header IRCMODEL"
    if is_text_ir(data):
        what = "is irc text IR, not a compiled model (compile it with irc compile)"
    elif data[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version)
        what = "looks like an ONNX model, not a compiled one (compile it with irc compile)"
    return ModelFileError(f"'{path}' is not an irc compiled model file: it {what}")


def _split(path: str, data: bytes):
    """The preamble fields and section views of a file's bytes, after checking sizes."""
    if len(data) < _HEAD.size or data[: len(MAGIC)] != MAGIC:
        if data[: len(MAGIC)] == MAGIC[: len(data)] and data:
            raise ModelFileError(f"'{path}' is truncated: {len(data)} bytes, no complete header")
        raise _foreign(path, data)
    _, version, _ = _HEAD.unpack_from(data)
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"'{path}' has model format version {version}, newer than this irc reads "
            f"({FORMAT_VERSION}): it was written by a newer irc; upgrade irc to load it "
            "(or the file is corrupt)"
        )
    if version < 1:
        raise ModelFileError(f"'{path}' has an invalid model format version {version}")
    if len(data) < PREAMBLE_SIZE:
        raise ModelFileError(
            f"'{path}' is truncated: {len(data)} bytes, the header alone takes {PREAMBLE_SIZE}"
        )
    fields = _PREAMBLE.unpack_from(data)
    if _sha(data[: _PREAMBLE.size]) != data[_PREAMBLE.size : PREAMBLE_SIZE]:
        raise ModelFileError(f"'{path}' is corrupt: its header fails its SHA-256 checksum")
    if fields[2] & ~FLAG_ZLIB:
        raise ModelFileError(
            f"'{path}' uses features this irc does not know (flags {fields[2]:#x}); upgrade irc"
        )
    meta_len, ir_len, index_len, data_len = fields[3:7]
    data_start = _align(PREAMBLE_SIZE + meta_len + ir_len + index_len)
    expected = data_start + data_len + TRAILER_SIZE
    if len(data) < expected:
        raise ModelFileError(
            f"'{path}' is truncated: {len(data):,} bytes, its header says {expected:,}"
        )
    if len(data) > expected:
        raise ModelFileError(
            f"'{path}' is corrupt: {len(data) - expected:,} unexpected bytes after the model"
        )
    view = memoryview(data)
    start = PREAMBLE_SIZE
    sections = {}
    for name, length in (("metadata", meta_len), ("IR", ir_len), ("index", index_len)):
        sections[name] = view[start : start + length]
        start += length
    sections["data"] = view[data_start : data_start + data_len]
    sections["flags"] = fields[2]
    return fields, sections


def _text(path: str, sections, name: str) -> str:
    """A block's text: the metadata as stored; the IR and index inflated when compressed
    (to at most ``MAX_INFLATION`` times their compressed size + ``INFLATION_SLACK``)."""
    raw = bytes(sections[name])
    try:
        if name != "metadata" and sections["flags"] & FLAG_ZLIB:
            raw = _inflate(path, name, raw)
        return raw.decode("utf-8")
    except (zlib.error, UnicodeDecodeError) as e:
        raise ModelFileError(
            f"'{path}' is corrupt: its {name} block cannot be read ({e})"
        ) from None


def _inflate(path: str, name: str, raw: bytes) -> bytes:
    """The zlib stream ``raw`` inflated, refused once it passes the cap (never inflated
    further: a zlib bomb allocates the cap at most)."""
    cap = MAX_INFLATION * len(raw) + INFLATION_SLACK
    inflater = zlib.decompressobj()
    out = inflater.decompress(raw, cap)
    if inflater.eof:
        return out
    if len(out) < cap:
        raise zlib.error("the compressed stream is truncated")
    raise ModelFileError(
        f"'{path}' is corrupt: its {name} block inflates to more than {cap:,} bytes, "
        f"{MAX_INFLATION}x its {len(raw):,} compressed bytes + {INFLATION_SLACK >> 20} MiB "
        "(a zlib bomb, or not written by irc)"
    )


def _check_sums(path: str, data: bytes, fields, sections) -> None:
    """ModelFileError naming the corrupt part when the file's checksum does not match."""
    if _sha(memoryview(data)[:-TRAILER_SIZE]) == data[-TRAILER_SIZE:]:
        return
    for name, stored in zip(("metadata", "IR", "index"), fields[7:10]):
        if _sha(sections[name]) != stored:
            raise ModelFileError(f"'{path}' is corrupt: its {name} block fails its checksum")
    for entry in _index(path, sections):
        chunk = sections["data"][entry["offset"] : entry["offset"] + entry["nbytes"]]
        if _sha(chunk).hex() != entry["sha256"]:
            raise ModelFileError(
                f"'{path}' is corrupt: the payload of %{entry['value']} ({entry['kind']} "
                f"{entry['attr']}, {entry['nbytes']:,} bytes) fails its SHA-256 checksum"
            )
    raise ModelFileError(
        f"'{path}' is corrupt: the file checksum (last 32 bytes) does not match; the checksum "
        "itself or the padding between blocks is damaged"
    )


def _json(path: str, sections, name: str):
    text = _text(path, sections, name)
    try:
        return json.loads(text)
    except ValueError as e:
        raise ModelFileError(f"'{path}' is corrupt: its {name} block is not JSON ({e})") from None
    except RecursionError:
        raise ModelFileError(
            f"'{path}' is corrupt: its {name} block is JSON nested too deeply to read "
            "(irc writes a few levels)"
        ) from None


def _index(path: str, sections) -> list[dict]:
    """The payload index, each entry's fields checked for type and range."""
    entries = _json(path, sections, "index")
    size = len(sections["data"])
    if not isinstance(entries, list):
        raise ModelFileError(f"'{path}' is corrupt: its index block is not a list")
    for entry in entries:
        try:
            ok = (
                isinstance(entry["op"], int) and isinstance(entry["offset"], int)
                and isinstance(entry["nbytes"], int) and entry["dtype"] in _DTYPES
                and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
                and 0 <= entry["offset"] <= entry["offset"] + entry["nbytes"] <= size
                and all(isinstance(entry[k], str) for k in ("kind", "attr", "value", "sha256"))
                and _valid_exponent(entry.get("exponent", 0))
            )  # fmt: skip
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise ModelFileError(f"'{path}' is corrupt: bad index entry {str(entry)[:200]}")
    return entries


def _valid_exponent(exponent) -> bool:
    """Whether an index entry's ``exponent`` is a whole number within ``MAX_EXPONENT``."""
    return type(exponent) is int and abs(exponent) <= MAX_EXPONENT


def _stored_dtype_ok(stored: np.dtype, wanted: np.dtype, entry: dict, version: int) -> bool:
    """Whether a payload stored as ``stored`` may stand for the op's ``wanted`` dtype: the
    same, or (from format ``FIRST_NARROW``) one of ``WIDENINGS``; an ``exponent`` only on
    a float16 payload."""
    if entry.get("exponent", 0) and stored != np.float16:
        return False
    return stored == wanted or (version >= FIRST_NARROW and (stored, wanted) in WIDENINGS)


def _attach(path: str, graph: Graph, entries: list[dict], data, version: int) -> None:
    """Put each payload back on its op (widened to its dtype where stored narrower),
    checking kind, attribute, dtype and shape."""
    for entry in entries:
        where = f"'{path}': payload of %{entry['value']} ({entry['kind']} {entry['attr']})"
        if not entry["op"] < len(graph.ops):
            raise ModelFileError(f"{where} names op {entry['op']}; the graph has fewer ops")
        op = graph.ops[entry["op"]]
        if op.kind != entry["kind"] or entry["attr"] not in op.attrs:
            raise ModelFileError(f"{where} does not match op {entry['op']}, {op.label()}")
        expected = tensor_value_type(op.attrs[entry["attr"]])
        dtype, wanted = np.dtype(entry["dtype"]), np.dtype(expected.dtype.numpy)
        shape = tuple(entry["shape"])
        if not _stored_dtype_ok(dtype, wanted, entry, version) or shape != expected.shape:
            raise ModelFileError(
                f"{where} is {dtype}{list(shape)}, the op needs {wanted}{list(expected.shape)}"
            )
        count = math.prod(shape)  # Python ints: a forged shape cannot wrap around
        if count * dtype.itemsize != entry["nbytes"]:
            raise ModelFileError(f"{where}: {entry['nbytes']} bytes do not hold {dtype}{shape}")
        chunk = data[entry["offset"] : entry["offset"] + entry["nbytes"]]
        array = np.frombuffer(chunk, dtype.newbyteorder("<"), count).astype(dtype)
        if dtype != wanted:
            array = widened(array, wanted, entry.get("exponent", 0))
        op.attrs[entry["attr"]] = array.reshape(shape)
    try:
        rederive(graph)  # what an integer layer's scales determine is not stored
    except ValueError as e:
        raise ModelFileError(f"'{path}': {e}") from None
    for op in graph.ops:
        for key, value in op.attrs.items():
            if isinstance(value, ElidedTensor):
                raise ModelFileError(f"'{path}': {op.label()} {key} has no payload in the file")


def _restore_types(path: str, graph: Graph) -> None:
    """Re-infer result types whose per-axis scales the text elided (now the data is back)."""
    for op in graph.ops:
        if not any(r.type.quant is not None and r.type.quant.elided for r in op.results):
            continue
        types = infer_types(op.kind, [o.type for o in op.operands], op.attrs, op.label())
        for result, t in zip(op.results, types):
            if (t.dtype, t.shape) != (result.type.dtype, result.type.shape):
                raise ModelFileError(f"'{path}': {op.label()} has type {t}, the file says "
                                     f"{result.type}")  # fmt: skip
            result.type = t


def _refuse_old_int2(path: str, graph: Graph, version: int) -> None:
    """ModelFileError if a file older than format 3 holds INT2 weights (whose fields meant
    the levels [-2, 1], which this irc's kernels would read as -3..3)."""
    if version >= FIRST_ODD_INT2:
        return
    for op in graph.ops:
        if op.kind == "qconstant" and op.attrs.get("dtype") == "i2":
            raise ModelFileError(
                f"'{path}' has model format version {version}, whose INT2 weights ({op.label()}) "
                "are levels [-2, 1]; this irc's INT2 levels are -3, -1, 1, 3: recompile the "
                "model with this irc"
            )


def read_graph_file(path) -> tuple[Graph, dict]:
    """The graph (constants attached, verified) and the metadata of a model file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file '{path}' does not exist")
    with open(path, "rb") as f:
        data = f.read()
    fields, sections = _split(path, data)
    _check_sums(path, data, fields, sections)
    meta = _json(path, sections, "metadata")
    entries = _index(path, sections)
    text = _text(path, sections, "IR")
    try:
        graph = parse_graph(text, verify=False)
        _refuse_old_int2(path, graph, fields[1])
        _attach(path, graph, entries, sections["data"], fields[1])
        _restore_types(path, graph)
        verify_graph(graph)
    except ModelFileError:
        raise
    except IrcError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"'{path}': the saved graph cannot be rebuilt: {first}") from None
    except RecursionError:
        raise ModelFileError(
            f"'{path}' is corrupt: its IR block nests too deeply to read"
        ) from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"'{path}' is corrupt: its metadata block is not a JSON object")
    return graph, meta


def describe_metadata(path, meta: dict) -> str:
    """A few lines on a model file from its metadata (format, versions, signature)."""

    def get(d, key):
        return d.get(key) if isinstance(d, dict) else None

    def signature(values) -> str:
        items = values if isinstance(values, list) else []
        return ", ".join(
            f"{get(v, 'name')}: {get(v, 'dtype')}" + str(get(v, "shape")).replace(" ", "")
            for v in items
        )

    created = get(meta, "created")  # only files written with a timestamp have one
    lines = [
        f"{os.fspath(path)}: irc compiled model (format {get(meta, 'format_version')}, "
        f"irc {get(meta, 'irc_version')}" + (f", created {created})" if created else ")"),
        f"inputs  {signature(get(meta, 'inputs'))}",
        f"outputs {signature(get(meta, 'outputs'))}",
    ]
    calibration = get(meta, "calibration")
    if isinstance(calibration, dict):
        lines.append(
            f"calibration {get(calibration, 'method')} over {get(calibration, 'samples')} samples"
        )
    return "\n".join(lines)


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MEASURED_ATTRS",
    "MEASURED_METADATA",
    "ModelFileError",
    "creation_time",
    "describe_metadata",
    "graph_metadata",
    "is_model_file",
    "read_graph_file",
    "save_model",
    "write_graph_file",
]
