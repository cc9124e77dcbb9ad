"""Hostile input files for ``irc run --input`` (issue 25, found auditing finding 3): a
damaged or forged .npy/.npz is one ``InputError`` line naming the file (and the member),
never a zipfile / numpy traceback or an allocation of the size a forged header asks for."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format

from irc.tools.cli import main


def run_cli(capsys, *argv):
    """(exit code, stderr) of ``irc *argv``."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "relu.irc"
    path.write_text("graph @g(%x: f32[1,4]) {\n  %y = relu(%x) : f32[1,4]\n  return %y\n}\n")
    return path


def _forged_npy(f, shape) -> None:
    npy_format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
    f.write(bytes(16))


def _corrupt_crc(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, x=np.ones((1, 4), np.float32))
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF
    return data


def _write_cases(tmp_path, name):
    """The file ``name`` of the hostile cases, written into tmp_path."""
    path = tmp_path / name
    if name == "forged.npy":
        with open(path, "wb") as f:
            _forged_npy(f, (1, 2**40))
    elif name == "forged.npz":
        with zipfile.ZipFile(path, "w") as z, z.open("x.npy", "w") as f:
            _forged_npy(f, (1, 2**40))
    elif name == "crc.npz":
        path.write_bytes(_corrupt_crc(tmp_path))
    elif name == "truncated.npz":
        np.savez(path, x=np.ones((1, 4), np.float32))
        path.write_bytes(path.read_bytes()[:-30])
    elif name == "garbage.npz":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", b"garbage")
    elif name == "object.npz":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
    return path


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("forged.npy", "header says [1, 1099511627776] float32"),
        ("forged.npz", "member 'x.npy', is truncated or forged"),
        ("crc.npz", "Bad CRC-32"),
        ("truncated.npz", "not a readable .npz file"),
        ("garbage.npz", "member 'x.npy', is not a readable .npy file"),
        ("object.npz", "Object arrays cannot be loaded"),
    ],
)
def test_a_hostile_input_file_is_one_input_error_line(tmp_path, model, capsys, name, fragment):
    path = _write_cases(tmp_path, name)
    before = path.read_bytes()
    code, err = run_cli(capsys, "run", model, "--input", path)
    assert code == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("irc: error: input file ") and str(path) in line and fragment in line
    assert path.read_bytes() == before


def test_an_archive_among_several_inputs_is_named(tmp_path, model, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.ones((1, 4), np.float32))
    code, err = run_cli(capsys, "run", model, "--input", f"x={path}", "--input", path)
    assert code == 2 and "is a .npz archive" in err


def test_good_npy_and_npz_inputs_still_run(tmp_path, model, capsys):
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "x.npz", x=x)
    for path in (tmp_path / "x.npy", tmp_path / "x.npz"):
        out = tmp_path / "y.npy"
        code, err = run_cli(capsys, "run", model, "--input", path, "-o", out)
        assert code == 0, err
        np.testing.assert_array_equal(np.load(out), np.maximum(x, 0))
