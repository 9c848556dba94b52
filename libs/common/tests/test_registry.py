"""One registry style for every integration family: kinds discovered from a package's modules, looked up by
name with an error that names the known ones."""

from __future__ import annotations

import pytest

from shopbotly.common.config import CRM_KINDS
from shopbotly.common.registry import KindRegistry, UnknownKindError
from shopbotly.common.sources import SOURCES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("registry", "family"), [(SOURCES, "source"), (CRM_KINDS, "CRM")])
def test_source_and_crm_kinds_are_registries_of_one_style(
    registry: KindRegistry[object], family: str
) -> None:
    assert isinstance(registry, KindRegistry) and registry.family == family
    assert list(registry) == sorted(registry)
    with pytest.raises(UnknownKindError) as err:
        registry.lookup("nope")
    assert str(err.value) == f"unknown {family} kind 'nope'; known kinds: {', '.join(registry)}"
    # A LookupError for code that looks a kind up, a ValueError for a pydantic validator that does.
    assert isinstance(err.value, LookupError) and isinstance(err.value, ValueError)


def test_a_kind_defined_twice_fails_at_import() -> None:
    with pytest.raises(ImportError, match="source kind 'a' is defined twice"):
        KindRegistry("source", [("a", 1), ("b", 2), ("a", 3)])


def test_a_registry_is_read_only() -> None:
    registry = KindRegistry("CRM", [("b", 2), ("a", 1)])
    assert list(registry.items()) == [("a", 1), ("b", 2)]
    with pytest.raises(TypeError):
        registry["c"] = 3  # type: ignore[index]
