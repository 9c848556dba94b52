"""`shopbotly connections check|setup`: a tenant's mapping against each CRM connection's own schema.

`check` lists every property every rule can write (presets included, expanded by the mapper's own
`compile_tenant`) on each connection whose kind has a schema to read, and whether the CRM has it, lets
ShopBotly write it, and takes the values the mapping fixes. `setup` creates the custom properties ShopBotly
owns. How a kind's schema is read and extended is the kind's own (`CrmSchema`, declared by its connector:
HubSpot's Properties API, Salesforce's describe and Tooling API); this module never names a kind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from shopbotly.cli._common import console, err_console, run
from shopbotly.common.config import ConnectionConfig, FieldSpec, ShopbotlyConfig, load_config
from shopbotly.common.errors import ConfigError, ShopbotlyError
from shopbotly.crm_writer.clients import connection_client
from shopbotly.crm_writer.connectors import connector_class, connector_kinds, schema_of
from shopbotly.crm_writer.schema import (
    CommandShape,
    CrmSchema,
    FetchedSchema,
    FieldInfo,
    OwnedProperty,
    Target,
    ValueKind,
    problem,
)
from shopbotly.crm_writer.tokens import TokenManager
from shopbotly.mapper.domain import compile_tenant

__all__ = ["app"]

app = typer.Typer(
    help="Check CRM connections against their schema and create the properties ShopBotly needs.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", envvar="SHOPBOTLY_CONFIG", help="Tenants config file"),
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Only this tenant (default: every tenant)")
]
_TEXT_TRANSFORMS = frozenset(
    {
        "trim",
        "lowercase",
        "uppercase",
        "email",
        "e164",
        "first_name",
        "last_name",
        "strip_html",
        "truncate",
        "string",
        "template",
    }
)


# -- what a mapping writes ----------------------------------------------------------------------------


def _field_info(name: str, spec: FieldSpec) -> FieldInfo:
    """A field's value kind and the values the mapping fixes (constants, map values, defaults)."""
    kind: ValueKind = "any"
    values: list[str] = []
    if spec.value is not None:
        kind = _kind_of(spec.value)
        values.append(_text(spec.value))
    elif spec.template is not None:
        kind = "text"
    for t in spec.transforms:
        if t.name == "iso_date":
            kind = "datetime"
        elif t.name == "minor_units":
            kind = "number"
        elif t.name in _TEXT_TRANSFORMS:
            kind = "text"
        elif t.name == "map" and t.values is not None:
            mapped = [v for v in t.values.values() if v is not None]
            if t.fallback != "keep":
                values = []  # only mapped values come out
            values += [_text(v) for v in mapped]
            if mapped and all(isinstance(v, str) for v in mapped):
                kind = "text"
    if spec.default is not None:
        values.append(_text(spec.default))
    return FieldInfo(name, kind, tuple(dict.fromkeys(values)))


def _kind_of(value: Any) -> ValueKind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "text" if isinstance(value, str) else "any"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Written:
    """One property a connection is written through, and the rules that write it."""

    target: Target
    rules: list[str] = field(default_factory=list)


def checked_kinds() -> list[str]:
    """The CRM kinds whose schema `check` and `setup` read (each kind says so through its connector)."""
    return [kind for kind in connector_kinds() if connector_class(kind).schema is not None]


@dataclass
class ConnectionPlan:
    tenant: str
    name: str
    config: ConnectionConfig
    schema: CrmSchema[Any]
    written: dict[tuple[str, str], Written] = field(default_factory=dict)
    # Rules whose `extra_fields` write properties named by each event (unknown before run time).
    dynamic: list[str] = field(default_factory=list)

    def object_types(self) -> set[str]:
        return {object_type for object_type, _ in self.written}


def plan_connections(cfg: ShopbotlyConfig, tenant: str | None = None) -> list[ConnectionPlan]:
    """Per connection whose kind has a schema, every property the tenant's rules (presets included) write."""
    if tenant is not None and tenant not in cfg.tenants:
        raise ValueError(f"tenant {tenant!r} is not configured; tenants: {sorted(cfg.tenants)}")
    plans: list[ConnectionPlan] = []
    for tname, tcfg in cfg.tenants.items():
        if tenant is not None and tname != tenant:
            continue
        by_name = {
            name: ConnectionPlan(tname, name, conn, schema)
            for name, conn in tcfg.connections.items()
            if (schema := schema_of(conn)) is not None
        }
        for rule in compile_tenant(tname, tcfg).rules:
            for command in rule.commands:
                plan = by_name.get(command.connection)
                if plan is None:
                    continue
                template = command.template
                shape = CommandShape(
                    op=template.op,
                    fields=[_field_info(n, s) for n, s in template.fields.items()],
                    tags=bool(template.tags or template.tags_from),
                    body=template.body is not None,
                    extra_fields=template.extra_fields is not None,
                )
                for target in plan.schema.targets(shape):
                    entry = plan.written.setdefault((target.object_type, target.name), Written(target))
                    if rule.id not in entry.rules:
                        entry.rules.append(rule.id)
                    # Values fixed by several rules all have to be valid.
                    if target.values:
                        merged = tuple(dict.fromkeys((*entry.target.values, *target.values)))
                        entry.target = Target(
                            entry.target.object_type,
                            entry.target.name,
                            entry.target.source,
                            entry.target.kind,
                            merged,
                            entry.target.not_sent,
                        )
                if shape.extra_fields and rule.id not in plan.dynamic:
                    plan.dynamic.append(rule.id)
        plans.extend(by_name.values())
    return plans


# -- reading the CRM ----------------------------------------------------------------------------------


async def _read_schema(
    plan: ConnectionPlan, client: httpx.AsyncClient, object_types: set[str]
) -> FetchedSchema:
    tokens = TokenManager(plan.config.auth, client)
    try:
        headers = await tokens.headers()
    except ShopbotlyError as exc:
        return FetchedSchema(errors={t: f"authentication failed: {exc}" for t in object_types})
    return await plan.schema.fetch(client, headers, object_types, instance_url=tokens.instance_url)


@dataclass(frozen=True)
class Row:
    connection: str
    object_type: str
    name: str
    status: str  # ok | missing | read-only | type | option | not sent | unchecked | unreadable
    detail: str
    rules: str
    # `connections setup` creates it.
    owned: bool = False

    @property
    def failed(self) -> bool:
        return self.status in ("missing", "read-only", "type", "option", "unreadable")


def check_rows(plan: ConnectionPlan, schema: FetchedSchema) -> list[Row]:
    label = f"{plan.tenant}:{plan.name}"
    owned = _owned_names(plan)
    rows: list[Row] = []
    for (object_type, name), written in sorted(plan.written.items()):
        t = written.target
        rules = ", ".join(written.rules)
        if t.not_sent is not None:
            rows.append(Row(label, object_type, name, "not sent", t.not_sent, rules))
            continue
        if object_type in schema.errors:
            rows.append(Row(label, object_type, name, "unreadable", schema.errors[object_type], rules))
            continue
        props = schema.objects.get(object_type, {})
        found = problem(t, props.get(name), object_known=object_type in schema.objects)
        is_owned = (object_type, name) in owned
        if found is None:
            rows.append(Row(label, object_type, name, "ok", "", rules, is_owned))
        else:
            status, detail = found
            if status == "missing" and is_owned:
                detail += " (`shopbotly connections setup --apply` creates it)"
            rows.append(Row(label, object_type, name, status, detail, rules, is_owned))
    for rule in plan.dynamic:
        rows.append(
            Row(
                label,
                plan.schema.record_object,
                "(extra_fields)",
                "unchecked",
                "property names come from each event; ones the CRM lacks are dropped at run time "
                f"(unknown_properties: {getattr(plan.config.options, 'unknown_properties', 'drop')})",
                rule,
            )
        )
    return rows


def _owned(plan: ConnectionPlan) -> list[OwnedProperty]:
    return plan.schema.owned(key for key, w in plan.written.items() if w.target.not_sent is None)


def _owned_names(plan: ConnectionPlan) -> set[tuple[str, str]]:
    return {(p.object_type, p.name) for p in _owned(plan)}


def _load(config: Path) -> ShopbotlyConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None


def _plans(config: Path, tenant: str | None) -> list[ConnectionPlan]:
    cfg = _load(config)
    try:
        plans = plan_connections(cfg, tenant)
    except ValueError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    if not plans:
        err_console.print(
            f"no connection to check: only kinds with a schema have one ({', '.join(checked_kinds())})",
            markup=False,
            highlight=False,
        )
    return plans


@app.command("check")
def check(config: ConfigOption = Path("config/shopbotly.yaml"), tenant: TenantOption = None) -> None:
    """Check every property the mapping can write against each connection's schema.

    Exit 0: everything fits; 1: a property is missing, read-only, of another type or a value is not one of
    its options (or a schema could not be read); 2: config error.
    """
    plans = _plans(config, tenant)

    async def read_all() -> list[Row]:
        rows: list[Row] = []
        for plan in plans:
            try:
                client = connection_client(plan.config.tls)  # verifies as crm-writer does (tls.ca_bundle)
            except ConfigError as exc:
                rows += check_rows(plan, FetchedSchema(errors=dict.fromkeys(plan.object_types(), str(exc))))
                continue
            async with client:
                rows += check_rows(plan, await _read_schema(plan, client, plan.object_types()))
        return rows

    rows = run(read_all())
    table = Table(title="CRM schema check", title_justify="left")
    for column in ("connection", "object", "property", "status", "detail", "written by"):
        table.add_column(column, overflow="fold")
    styles = {"ok": "green", "not sent": "yellow", "unchecked": "yellow"}
    for r in rows:
        style = styles.get(r.status, "red")
        table.add_row(r.connection, r.object_type, r.name, f"[{style}]{r.status}[/]", r.detail, r.rules)
    console.print(table)
    failed = [r for r in rows if r.failed]
    console.print(
        f"{len(rows)} properties checked: {len(rows) - len(failed)} fine, {len(failed)} problem(s)",
        markup=False,
        highlight=False,
    )
    if failed:
        raise typer.Exit(1)


# -- setup --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupStep:
    connection: str
    object_type: str
    name: str
    action: str  # exists | create | created | failed
    detail: str = ""
    # The schema could not be read (the CRM not answering yet): `--wait` tries again.
    unreadable: bool = False


async def setup_connection(
    plan: ConnectionPlan, client: httpx.AsyncClient, *, apply: bool
) -> list[SetupStep]:
    """Create (or with `apply=False` list) the owned properties the connection lacks."""
    label = f"{plan.tenant}:{plan.name}"
    owned = _owned(plan)
    if not owned:
        return []
    object_types = {p.object_type for p in owned}
    schema = await _read_schema(plan, client, object_types)
    tokens = TokenManager(plan.config.auth, client)
    steps: list[SetupStep] = []
    for prop in owned:
        if prop.object_type in schema.errors:
            error = schema.errors[prop.object_type]
            steps.append(SetupStep(label, prop.object_type, prop.name, "failed", error, unreadable=True))
            continue
        existing = schema.objects.get(prop.object_type, {}).get(prop.name)
        if existing is not None:
            detail = "" if existing.unique or not prop.unique else "exists WITHOUT unique values: recreate it"
            steps.append(SetupStep(label, prop.object_type, prop.name, "exists", detail))
        elif not apply:
            what = plan.schema.instruction(prop)
            steps.append(SetupStep(label, prop.object_type, prop.name, "create", what))
        else:
            headers = await tokens.headers()
            action, detail = await plan.schema.create(client, headers, prop, instance_url=tokens.instance_url)
            steps.append(SetupStep(label, prop.object_type, prop.name, action, detail))
    return steps


@app.command("setup")
def setup(
    config: ConfigOption = Path("config/shopbotly.yaml"),
    tenant: TenantOption = None,
    apply: Annotated[bool, typer.Option("--apply", help="Create the properties (default: dry run)")] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            help="Seconds to keep trying while a CRM does not answer yet (a stack starting); default 0",
        ),
    ] = 0.0,
) -> None:
    """Create the custom properties ShopBotly needs (idempotent), as each kind does: on HubSpot through the
    Properties API, on Salesforce the custom fields through the Tooling API (or in Setup as the dry run says).

    Without --apply, only lists what would be created. Exit 1 when a property could not be created or a
    schema could not be read.
    """
    plans = _plans(config, tenant)

    async def all_steps() -> list[SetupStep]:
        deadline = time.monotonic() + wait
        while True:
            out: list[SetupStep] = []
            for plan in plans:
                try:
                    client = connection_client(plan.config.tls)
                except ConfigError as exc:  # a CA bundle not written yet (the emulator starting): wait
                    label = f"{plan.tenant}:{plan.name}"
                    out += [
                        SetupStep(label, p.object_type, p.name, "failed", str(exc), unreadable=True)
                        for p in _owned(plan)
                    ]
                    continue
                async with client:
                    out += await setup_connection(plan, client, apply=apply)
            if not any(s.unreadable for s in out) or time.monotonic() >= deadline:
                return out
            await asyncio.sleep(1.0)

    steps = run(all_steps())
    for s in _sorted(steps):
        line = f"{s.connection}  {s.object_type}.{s.name}: {s.action}" + (
            f" ({s.detail})" if s.detail else ""
        )
        console.print(line, markup=False, highlight=False)
    pending = sum(1 for s in steps if s.action == "create")
    if pending:
        console.print(f"dry run: {pending} to create; run again with --apply", markup=False, highlight=False)
    if any(s.action == "failed" for s in steps):
        raise typer.Exit(1)


def _sorted(steps: list[SetupStep]) -> Iterator[SetupStep]:
    yield from sorted(steps, key=lambda s: (s.connection, s.object_type, s.name))
