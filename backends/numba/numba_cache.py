"""Numba's on-disk kernel cache, made robust to corrupt files.

Numba reads a cached kernel's index (``.nbi``) and machine code (``.nbc``) with ``pickle``:
a truncated or damaged file makes every later call of that kernel raise (``pickle data was
truncated``), naming neither the file nor a remedy. ``guard_cache`` turns an unreadable
file into a cache miss: the file is removed, a warning names it, and Numba compiles the
kernel again and writes it anew. Numba writes each cache file to a temporary name and
renames it into place, so processes that compile the same kernels at once never corrupt
each other's files; ``compile_lock`` makes them take turns, so the second loads what the
first compiled instead of compiling it again.

Numba keys a cached kernel by its bytecode, closure and target CPU, not by the module
globals it read while compiling; irc's kernels read their instruction choice
(``IRC_DISABLE_SIMD``, ``IRC_DISABLE_AVX512``, ``IRC_DISABLE_VNNI``) that way, so
``key_by_kernel_choice`` adds those settings to the key: a process that forces a lower
path compiles (and caches) its own kernels instead of loading the others'.

``serial_twin`` compiles a ``parallel=True`` kernel's Python function once more without
parallelism (``prange`` runs as ``range``), under a name of its own so the two never share
a cache index: a call on one thread then skips the parallel region's launch.
"""

from __future__ import annotations

import contextlib
import os
import types
import warnings
from pathlib import Path

import numba
from numba.core import caching

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; processes compile side by side
    fcntl = None

_GUARDED = "_irc_guarded"


class CorruptCacheWarning(UserWarning):
    """A Numba cache file could not be read; it was removed and will be rewritten."""


def _discard(path: str, error: BaseException) -> None:
    """Remove the unreadable cache file ``path`` and say so."""
    try:
        os.remove(path)
    except OSError:
        pass
    warnings.warn(
        f"irc: the Numba cache file {path} is corrupt ({type(error).__name__}: {error}); "
        "it was removed and its kernel is compiled again",
        CorruptCacheWarning,
        stacklevel=3,
    )


def guard_cache() -> None:
    """Make Numba treat an unreadable cache index or data file as a miss (idempotent)."""
    cls = caching.IndexDataCacheFile
    if getattr(cls, _GUARDED, False):
        return
    load_index, load_data = cls._load_index, cls._load_data

    def _load_index(self):
        try:
            return load_index(self)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - any damage a pickle can show
            _discard(self._index_path, e)
            return {}

    def _load_data(self, name):
        try:
            return load_data(self, name)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - any damage a pickle can show
            _discard(self._data_path(name), e)
            raise OSError(f"corrupt cache file {name}") from e  # Numba's miss

    cls._load_index, cls._load_data = _load_index, _load_data
    setattr(cls, _GUARDED, True)


KERNEL_CHOICE = ("IRC_DISABLE_SIMD", "IRC_DISABLE_AVX512", "IRC_DISABLE_VNNI")
_KEYED = "_irc_keyed"


def key_by_kernel_choice() -> None:
    """Add the ``KERNEL_CHOICE`` settings of this process to every cache key (idempotent)."""
    cls = caching.Cache
    if getattr(cls, _KEYED, False):
        return
    choice = tuple((name, os.environ.get(name, "")) for name in KERNEL_CHOICE)
    index_key = cls._index_key

    def _index_key(self, sig, codegen):
        return (*index_key(self, sig, codegen), choice)

    cls._index_key = _index_key
    setattr(cls, _KEYED, True)


def _lock_path() -> Path:
    """The lock file beside the kernels' cache (``NUMBA_CACHE_DIR``, else this package's
    ``__pycache__``)."""
    folder = numba.config.CACHE_DIR or str(Path(__file__).parent / "__pycache__")
    return Path(folder) / "irc-compile.lock"


@contextlib.contextmanager
def compile_lock():
    """Hold an exclusive lock shared by every irc process using the same kernel cache, for
    the duration of a warm-up (where kernels compile or load); a no-op where the lock file
    cannot be made (a read-only cache folder, no ``fcntl``)."""
    if fcntl is None:
        yield
        return
    try:
        path = _lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held across the yield
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def serial_twin(kernel, name: str):
    """``kernel``'s Python function compiled without ``parallel``, cached under ``name``
    (its own index file: Numba names the index after the function's qualified name)."""
    fn = kernel.py_func
    twin = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__,
                              fn.__closure__)  # fmt: skip
    twin.__qualname__ = name
    twin.__doc__ = f"{fn.__qualname__} on the calling thread only."
    return numba.njit(cache=True)(twin)
