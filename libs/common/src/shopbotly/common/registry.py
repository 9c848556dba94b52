"""Registries of integration kinds: every module of a kinds package is imported, so a new kind is one module
and no list of kinds is written anywhere by hand."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType

__all__ = ["import_submodules"]


def import_submodules(package: str, path: Iterable[str]) -> list[ModuleType]:
    """The public modules of `package` (whose `__path__` is `path`), imported, in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in names]
