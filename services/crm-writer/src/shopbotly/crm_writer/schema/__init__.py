"""What a CRM's schema is, what a connection writes into it, and whether the two fit.

- `CrmProperty` / `ObjectSchema`: one property or field of an object type, parsed from the CRM's own answers.
- `CrmSchema`: the part of a CRM kind that `shopbotly connections check|setup` uses, one subclass per kind
  (`schema/<kind>.py`), declared by the kind's connector (`schema=` in its class line; `schema=None`: the kind
  has no schema discovery): where a command's fields land (the same mapping the connector applies), which
  properties ShopBotly owns, how the CRM describes an object type and how a property is created.
- `problem(...)`: whether a property exists, is writable, fits the value's type and, for enumerations and
  picklists, whether the known values are among its options.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import httpx

from shopbotly.common.config import ConnectionConfig
from shopbotly.common.config._base import StrictModel
from shopbotly.common.events import CommandOp

__all__ = [
    "CommandShape",
    "CrmProperty",
    "CrmSchema",
    "FetchedSchema",
    "FieldInfo",
    "ObjectSchema",
    "OwnedProperty",
    "Target",
    "ValueKind",
    "parse_described",
    "problem",
]

# What ShopBotly knows of a value before it is sent: its kind and, when fixed by the mapping, its values.
ValueKind = Literal["text", "number", "bool", "datetime", "any"]


@dataclass(frozen=True)
class CrmProperty:
    name: str
    # HubSpot: string | number | date | datetime | enumeration | bool. Salesforce: the describe `type`
    # (string, email, phone, picklist, multipicklist, double, boolean, date, datetime, textarea, ...).
    type: str
    writable: bool = True
    # Allowed values of an enumeration/picklist; None: not fixed by the schema (or not an enumeration).
    options: frozenset[str] | None = None
    unique: bool = False
    multi: bool = False


ObjectSchema = Mapping[str, CrmProperty]


def parse_described(
    body: Any, key: str, read: Callable[[dict[str, Any]], CrmProperty]
) -> dict[str, CrmProperty]:
    """A CRM's description of an object type (its `key` list of named entries, each `read`) → property."""
    entries = body.get(key) if isinstance(body, dict) else None
    return {str(e["name"]): read(e) for e in entries or [] if isinstance(e, dict) and e.get("name")}


@dataclass(frozen=True)
class Target:
    """A property a command writes: on which object, fed by which command field, with which known values."""

    object_type: str
    name: str
    source: str  # the command field (or `tags`, or the connector's own bookkeeping)
    kind: ValueKind = "any"
    values: tuple[str, ...] = ()
    # Not sent as a property by the connector (e.g. appended to a ticket's text): nothing to check.
    not_sent: str | None = None


@dataclass(frozen=True)
class FieldInfo:
    """A command field as far as the mapping tells it before any event: its kind and fixed values."""

    name: str
    kind: ValueKind = "any"
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommandShape:
    op: CommandOp
    fields: Sequence[FieldInfo] = ()
    tags: bool = False
    body: bool = False
    extra_fields: bool = False


@dataclass(frozen=True)
class OwnedProperty:
    """A custom property ShopBotly creates where it is missing."""

    object_type: str
    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    unique: bool = False
    description: str = ""
    external_id: bool = False


_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_KIND_FITS: Mapping[str, frozenset[str]] = {
    # CRM type → value kinds that fit it (`any` always fits: nothing is known before the event).
    "number": frozenset({"number", "any"}),
    "double": frozenset({"number", "any"}),
    "int": frozenset({"number", "any"}),
    "currency": frozenset({"number", "any"}),
    "percent": frozenset({"number", "any"}),
    "date": frozenset({"datetime", "any"}),
    "datetime": frozenset({"datetime", "number", "any"}),
    "bool": frozenset({"bool", "any"}),
    "boolean": frozenset({"bool", "any"}),
}


def problem(target: Target, prop: CrmProperty | None, *, object_known: bool = True) -> tuple[str, str] | None:
    """(status, detail) of a target against the CRM's property, or None when it fits."""
    if not object_known:
        return ("missing", f"the CRM has no object type {target.object_type!r}")
    if prop is None:
        return ("missing", f"{target.object_type} has no property {target.name!r}")
    if not prop.writable:
        return ("read-only", f"{target.name!r} is read-only in the CRM")
    fits = _KIND_FITS.get(prop.type)
    if fits is not None and target.kind not in fits:
        return ("type", f"{target.name!r} is {prop.type}, the mapping writes {target.kind}")
    for value in target.values:
        if prop.type in ("number", "double", "int", "currency", "percent") and not _NUMERIC.match(value):
            return ("type", f"{value!r} is not a number ({target.name!r} is {prop.type})")
        if prop.options is not None:
            values = value.split(";") if prop.multi else [value]
            bad = [v for v in values if v not in prop.options]
            if bad:
                return ("option", f"{bad[0]!r} is not an option of {target.name!r}: {sorted(prop.options)}")
    return None


# -- reading a connection's schema --------------------------------------------------------------------


@dataclass
class FetchedSchema:
    objects: dict[str, dict[str, CrmProperty]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


OptionsT = TypeVar("OptionsT", bound=StrictModel)


class CrmSchema(abc.ABC, Generic[OptionsT]):
    """A CRM kind's schema as `connections check|setup` reads and extends it, for one connection.

    A kind's subclass says where commands land (`targets`), which properties ShopBotly owns (`owned`), how
    an object type is described (`describe_url`, `parse`) and how an owned property is created
    (`create_request`); reading and creating over HTTP are shared here.
    """

    # The object type named for properties an event names itself (`extra_fields`): unchecked.
    record_object: ClassVar[str] = "(record)"
    # The detail of a property created (None: its description) and of one the CRM says exists already.
    created_note: ClassVar[str | None] = None
    exists_note: ClassVar[str] = ""

    def __init__(self, connection: ConnectionConfig) -> None:
        self.connection = connection
        self.options = cast(OptionsT, connection.options)

    @abc.abstractmethod
    def targets(self, command: CommandShape) -> list[Target]:
        """The properties a command writes through the connection, as its connector sends them."""

    @abc.abstractmethod
    def owned(self, wanted: Iterable[tuple[str, str]] = ()) -> list[OwnedProperty]:
        """What `connections setup` creates, among what the mapping writes (`wanted`: (object type, name))."""

    @abc.abstractmethod
    def describe_url(self, base: str, object_type: str) -> str:
        """Where the CRM describes an object type's properties."""

    @abc.abstractmethod
    def parse(self, body: Any) -> dict[str, CrmProperty]:
        """The CRM's description of an object type → property name → CrmProperty."""

    @abc.abstractmethod
    def create_request(self, base: str, prop: OwnedProperty) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body that create an owned property."""

    def instruction(self, prop: OwnedProperty) -> str:
        """What is created (a dry run says it), or how an admin creates it by hand."""
        return f"{prop.type}/{prop.field_type}" + (", unique values" if prop.unique else "")

    def api_base(self, instance_url: str | None) -> str:
        """The base URL of schema calls (`instance_url`: the one the token endpoint returned, if any)."""
        return (self.connection.base_url or "").rstrip("/")

    def already_exists(self, response: httpx.Response) -> bool:
        """The CRM refused a create because the property exists (created meanwhile, or hidden from us)."""
        return response.status_code == 409

    async def fetch(
        self,
        client: httpx.AsyncClient,
        headers: Mapping[str, str],
        object_types: Iterable[str],
        *,
        instance_url: str | None = None,
    ) -> FetchedSchema:
        """Each object type's properties; an object type the CRM could not describe is in `errors`."""
        base = self.api_base(instance_url)
        result = FetchedSchema()
        for object_type in sorted(set(object_types)):
            url = self.describe_url(base, object_type)
            try:
                response = await client.get(url, headers=dict(headers), timeout=self.connection.timeout_s)
            except httpx.HTTPError as exc:
                result.errors[object_type] = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code != 200:
                result.errors[object_type] = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            result.objects[object_type] = self.parse(response.json())
        return result

    async def create(
        self,
        client: httpx.AsyncClient,
        headers: Mapping[str, str],
        prop: OwnedProperty,
        *,
        instance_url: str | None = None,
    ) -> tuple[Literal["created", "exists", "failed"], str]:
        """Create one owned property: what happened and its detail."""
        url, body = self.create_request(self.api_base(instance_url), prop)
        response = await client.post(url, json=body, headers=dict(headers), timeout=self.connection.timeout_s)
        if response.status_code == 201:
            return "created", self.instruction(prop) if self.created_note is None else self.created_note
        if self.already_exists(response):
            return "exists", self.exists_note
        return "failed", f"HTTP {response.status_code}: {response.text[:300]}"
