"""Reading model inputs from and writing outputs to .npy/.npz files, for the CLI; reading a
model from standard input (``-``); argument types shared by its subcommands."""

from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile

import numpy as np

from irc.errors import InputError, ModelLoadError, ParseError
from irc.frontends.onnx_importer import import_onnx
from irc.ir import Graph
from irc.loader import is_text_ir
from irc.parser import parse_graph
from irc.specialize import specialize

STDIN = "-"  # the model argument that means standard input
STDIN_NAME = "<stdin>"  # how errors name standard input
# A compiled model file's first bytes (``irc.serialize.MAGIC``, a layer above this one; a
# test checks the two agree)
COMPILED_MAGIC = b"IRCMODEL"


def _reason(error: Exception) -> str:
    """The first line of an error's message (numpy's header errors span several)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_npy_header(stream, path: str, available: int, member: str = "") -> None:
    """InputError when the .npy header read from ``stream`` asks for more data bytes than
    the ``available`` bytes after it (numpy would allocate the header's size first)."""
    where = f"input file '{path}'" + (f", member '{member}'," if member else "")
    try:
        version = np.lib.format.read_magic(stream)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
        if read is None:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not read")
        header = read(stream, max_header_size=10_000)
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise InputError(f"{where} is not a readable .npy file: {_reason(e)}") from None
    shape, _, dtype = header
    needed = math.prod(shape) * dtype.itemsize
    left = available - stream.tell()
    if needed > left:
        raise InputError(
            f"{where} is truncated or forged: its header says {list(shape)} {dtype} "
            f"({needed} bytes), the data holds {left} bytes"
        )


def _load_array(path: str) -> np.ndarray:
    """One array from a .npy file; InputError for anything numpy cannot read safely."""
    if not os.path.isfile(path):
        raise InputError(f"input file '{path}' does not exist")
    if zipfile.is_zipfile(path):
        raise InputError(f"input file '{path}' is a .npz archive: give it as the only --input")
    with open(path, "rb") as f:
        _check_npy_header(f, path, os.path.getsize(path))
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises many kinds; each is the file's fault
        raise InputError(f"input file '{path}' is not a readable .npy file: {_reason(e)}") from None


def _load_archive(path: str) -> dict[str, np.ndarray]:
    """Every array of a .npz archive by name; InputError naming the file (and the member)
    for a damaged archive or member, a member's header asking for more than it holds, or
    an object array."""
    if not os.path.isfile(path):
        raise InputError(f"input file '{path}' does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    _check_npy_header(member, path, info.file_size, info.filename)
        with np.load(path, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}
    except InputError:
        raise
    except Exception as e:  # zipfile, zlib and numpy errors alike: the file's fault
        raise InputError(f"input file '{path}' is not a readable .npz file: {_reason(e)}") from None


def read_inputs(specs: list[str], graph: Graph) -> dict[str, np.ndarray]:
    """Inputs by name from ``--input`` specs: FILE.npy (in order), NAME=FILE.npy, or one .npz."""
    names = [v.name for v in graph.inputs]
    if len(specs) == 1 and specs[0].endswith(".npz"):
        return _load_archive(specs[0])
    out: dict[str, np.ndarray] = {}
    positional = 0
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or os.path.isfile(spec):
            path = spec
            if positional >= len(names):
                raise InputError(
                    f"the model takes {len(names)} input(s) {names}; got more --input files"
                )
            name = names[positional]
            positional += 1
        out[name] = _load_array(path)
    return out


def write_outputs(path: str, names: list[str], outputs: list[np.ndarray]) -> None:
    """One output to .npy; several (or a .npz path) to .npz keyed by output name."""
    if path.endswith(".npz") or len(outputs) > 1:
        np.savez(path, **dict(zip(names, outputs)))
    else:
        np.save(path, outputs[0])


def summarize(names: list[str], outputs: list[np.ndarray]) -> str:
    """One line per output: name, dtype, shape, and a few statistics."""
    lines = []
    for name, y in zip(names, outputs):
        line = f"{name}: {y.dtype}{list(y.shape)}"
        if y.size and y.dtype.kind in "fiub":
            line += f" min={y.min():.6g} max={y.max():.6g} mean={y.mean():.6g}"
            if y.ndim == 2 and y.shape[1] > 1:
                line += f" argmax={y.argmax(axis=1).tolist()[:8]}"
        lines.append(line)
    return "\n".join(lines)


def positive_count(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1, got '{text}'")
    return n


def read_stdin() -> bytes:
    """Every byte of standard input."""
    return sys.stdin.buffer.read()


def graph_from_bytes(data: bytes, input_shapes=None, where: str = STDIN_NAME) -> Graph:
    """The graph in ``data``: irc text IR (parsed) or an ONNX model (imported), as
    ``irc.loader.load_graph`` reads a file; errors name the source ``where``."""
    if not data:
        raise ModelLoadError(f"{where} is empty")
    if data.startswith(COMPILED_MAGIC):
        raise InputError(f"{where} holds a compiled model file: give its path instead")
    if is_text_ir(data):
        try:
            graph = parse_graph(data.decode("utf-8", errors="replace"))
        except ParseError as e:
            raise ParseError(f"{where}: {e}") from None
        return specialize(graph, input_shapes) if input_shapes else graph
    try:
        return import_onnx(data, input_shapes)
    except ModelLoadError as e:
        if _is_utf8(data):
            raise ModelLoadError(
                f"{where} is neither an ONNX model nor irc text IR (text IR starts with "
                "'graph @name(')"
            ) from None
        raise ModelLoadError(str(e).replace("the given bytes", where)) from None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
