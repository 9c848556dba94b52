"""Registries of integration kinds, one style for all: every public module of a kinds package is imported,
each module says which kinds it defines, and the registry is the only list of kinds: a new kind is one module.

Used by the webhook source kinds (`shopbotly.common.sources`) and the CRM connection kinds
(`shopbotly.common.config.crm_kinds`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Generic, TypeVar

__all__ = ["KindRegistry", "UnknownKindError", "discover", "import_submodules"]

T = TypeVar("T")


class UnknownKindError(LookupError, ValueError):
    """A kind no module defines. A ValueError too, so a pydantic validator that looks a kind up turns it
    into a field error naming the known kinds."""


class KindRegistry(Mapping[str, T], Generic[T]):
    """Kind name → what defines it (a source, a connection model), in name order; read-only."""

    def __init__(self, family: str, entries: Iterable[tuple[str, T]]) -> None:
        self.family = family
        found: dict[str, T] = {}
        for name, value in entries:
            if name in found:
                raise ImportError(f"{family} kind {name!r} is defined twice")
            found[name] = value
        self._kinds = dict(sorted(found.items()))

    def __getitem__(self, name: str) -> T:
        return self._kinds[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def lookup(self, name: str) -> T:
        """The kind's entry; UnknownKindError naming the known kinds otherwise."""
        found = self._kinds.get(name)
        if found is None:
            raise self.unknown(name)
        return found

    def unknown(self, name: object) -> UnknownKindError:
        return UnknownKindError(f"unknown {self.family} kind {name!r}; known kinds: {', '.join(self._kinds)}")


def discover(
    family: str, package: str, path: Iterable[str], kinds_of: Callable[[ModuleType], Iterable[tuple[str, T]]]
) -> KindRegistry[T]:
    """The registry of the kinds every public module of `package` defines (`kinds_of(module)`)."""
    return KindRegistry(
        family, (entry for module in import_submodules(package, path) for entry in kinds_of(module))
    )


def import_submodules(package: str, path: Iterable[str]) -> list[ModuleType]:
    """The public modules of `package` (whose `__path__` is `path`), imported, in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in names]
