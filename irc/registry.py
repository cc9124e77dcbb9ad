"""Registries filled by import: load a package's modules once so they register themselves.

Passes (``irc.passes``) and backend kernels (``irc.backends.numba.kernels_*``) register
with decorators when their modules are imported; the tables load them on first use.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def import_submodules(package_name: str, prefix: str = "") -> None:
    """Import every module of ``package_name`` whose name starts with ``prefix``, once."""
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith(prefix):
            importlib.import_module(f"{package_name}.{info.name}")
