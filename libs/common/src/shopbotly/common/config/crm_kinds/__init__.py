"""CRM connection kinds, one module each, found by `kind`.

`<kind>.py` defines the kind's connection model: a `ConnectionConfig` subclass with `kind: Literal["<kind>"]`,
its typed `options`, and its limits (`max_batch_size`, `field_limits`). A tenant's `connections` are the union
of these models keyed on `kind` (validated once, at load); crm-writer registers a connector class per kind
(services/crm-writer connectors/<kind>.py). Modules are discovered (`shopbotly.common.registry`, as source
kinds are), so adding a kind edits no list.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, get_args

from pydantic import TypeAdapter

from shopbotly.common.config._base import union_by_kind
from shopbotly.common.config._connections import ConnectionConfig
from shopbotly.common.registry import KindRegistry, discover

__all__ = ["CRM_KINDS", "AnyConnection", "crm_kind", "parse_connection"]


def _model_of(module: ModuleType) -> type[ConnectionConfig]:
    models = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ConnectionConfig)
        and value is not ConnectionConfig
        and value.__module__ == module.__name__
    ]
    if len(models) != 1:
        raise ImportError(
            f"CRM kind module {module.__name__} must define exactly one ConnectionConfig subclass "
            f"(found {[m.__name__ for m in models]})"
        )
    return models[0]


def _kind_name(model: type[ConnectionConfig]) -> str:
    tags = get_args(model.model_fields["kind"].annotation)
    if len(tags) != 1 or not isinstance(tags[0], str):
        raise ImportError(f"{model.__name__}.kind must be a Literal of one name (the kind), got {tags}")
    return tags[0]


def _kinds_of(module: ModuleType) -> list[tuple[str, type[ConnectionConfig]]]:
    model = _model_of(module)
    name = _kind_name(model)
    if name != module.__name__.rpartition(".")[2]:
        raise ImportError(f"{module.__name__} defines kind {name!r}: a kind's module is named after it")
    return [(name, model)]


# kind → its connection model, in name order.
CRM_KINDS: KindRegistry[type[ConnectionConfig]] = discover("CRM", __name__, __path__, _kinds_of)


def crm_kind(name: str) -> type[ConnectionConfig]:
    """The connection model of a kind; UnknownKindError (a LookupError) lists the known kinds."""
    return CRM_KINDS.lookup(name)


if TYPE_CHECKING:
    # Statically a connection is its base class; narrow with isinstance on the kind's model or its options.
    AnyConnection = ConnectionConfig
else:
    AnyConnection = union_by_kind("CRM", CRM_KINDS)

_ADAPTER: TypeAdapter[ConnectionConfig] = TypeAdapter(AnyConnection)


def parse_connection(data: Any) -> ConnectionConfig:
    """One connection (the `connections.<name>` mapping of the file) validated as its kind's model."""
    return _ADAPTER.validate_python(data)
