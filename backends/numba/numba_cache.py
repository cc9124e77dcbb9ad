"""Numba's on-disk kernel cache, made robust to corrupt files.

Numba reads a cached kernel's index (``.nbi``) and machine code (``.nbc``) with ``pickle``:
a truncated or damaged file makes every later call of that kernel raise (``pickle data was
truncated``), naming neither the file nor a remedy. ``guard_cache`` turns an unreadable
file into a cache miss: the file is removed, a warning names it, and Numba compiles the
kernel again and writes it anew. (Numba writes each cache file to a temporary name and
renames it into place, so processes that compile the same kernels at once each do the
work but never corrupt each other's files.)
"""

from __future__ import annotations

import os
import warnings

from numba.core import caching

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
