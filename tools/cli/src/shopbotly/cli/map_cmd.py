"""`shopbotly map --event FILE [--tenant T] [--config FILE]`: what an event would become (dry run, no Kafka).

FILE is a raw event as it appears on the raw-events topic (the CloudEvents envelope). A bare webhook body
works too with `--type` and `--source` (the configured source name), so a payload copied from a platform's
webhook log can be tried directly. Order and ticket state start empty, as for a first event.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from shopbotly.cli._common import console, err_console
from shopbotly.common.config import load_config
from shopbotly.common.errors import ConfigError
from shopbotly.common.events import utcnow
from shopbotly.common.ids import order_key, ticket_key
from shopbotly.mapper.domain import Mappings, Outcome, Status, map_event
from shopbotly.mapper.state import StateStore

EXIT_DEAD_LETTER = 3


def _envelope(
    document: Any, *, tenant: str | None, event_type: str | None, source: str | None
) -> dict[str, Any]:
    if isinstance(document, dict) and "specversion" in document and "data" in document:
        envelope = dict(document)
        if tenant:
            envelope["tenant"] = tenant
            envelope["source"] = f"/tenants/{tenant}/sources/{envelope.get('sourcename', '')}"
        return envelope
    if not (tenant and event_type and source):
        raise typer.BadParameter(
            "the file is not a raw-event envelope (no `specversion`/`data`): to map a bare webhook body, "
            "give --tenant, --type and --source",
            param_hint="--event",
        )
    now = utcnow().isoformat()
    return {
        "specversion": "1.0",
        "id": f"dry-run-{uuid.uuid4().hex[:12]}",
        "source": f"/tenants/{tenant}/sources/{source}",
        "type": event_type,
        "data": document,
        "tenant": tenant,
        "sourcename": source,
        "receivedat": now,
    }


def dry_run(envelope: dict[str, Any], mappings: Mappings) -> tuple[Outcome, dict[str, Any]]:
    """What the mapper would make of a raw-event envelope, with empty order and ticket state: its outcome
    and the report `shopbotly map` prints (also the operator console's mapping playground)."""
    outcome = map_event(orjson.dumps(envelope), mappings, StateStore(), now=utcnow())
    report = {
        "status": outcome.status.value,
        "rule_hits": outcome.rule_hits,
        "errors": outcome.errors,
        "crm_commands": [
            {"key": c.key().decode(), "value": orjson.loads(c.to_json())} for c in outcome.commands
        ],
        "orders": [
            {"key": order_key(o.tenant, o.order_id).decode(), "value": orjson.loads(o.to_json())}
            for o in outcome.orders
        ],
        "tickets": [
            {"key": ticket_key(t.tenant, t.ticket_id).decode(), "value": orjson.loads(t.to_json())}
            for t in outcome.tickets
        ],
    }
    return outcome, report


def map_event_command(
    event: Annotated[Path, typer.Option("--event", help="Raw event (envelope) or webhook body JSON file")],
    tenant: Annotated[str | None, typer.Option(help="Tenant (overrides the envelope's)")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Tenants config; default $SHOPBOTLY_CONFIG or config/shopbotly.yaml"),
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Event type, for a bare body")] = None,
    source: Annotated[str | None, typer.Option(help="Configured source name, for a bare body")] = None,
) -> None:
    """Print the commands, order and ticket state an event would produce (JSON), without Kafka.

    Exit 0 when mapped or when no rule matched, 1 on a config or file error, 3 when the event would be
    dead-lettered (the reason is printed on stderr).
    """
    config_path = config or Path(os.environ.get("SHOPBOTLY_CONFIG", "config/shopbotly.yaml"))
    try:
        mappings = Mappings.from_config(load_config(config_path))
    except (ConfigError, ValueError) as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    try:
        document = orjson.loads(event.read_bytes())
    except OSError as exc:
        err_console.print(f"{event}: cannot read: {exc.strerror}", markup=False)
        raise typer.Exit(1) from None
    except orjson.JSONDecodeError as exc:
        err_console.print(f"{event}: not JSON: {exc}", markup=False)
        raise typer.Exit(1) from None
    envelope = _envelope(document, tenant=tenant, event_type=event_type, source=source)
    outcome, report = dry_run(envelope, mappings)
    console.print_json(orjson.dumps(report).decode())
    if outcome.status == Status.DEAD_LETTERED:
        err_console.print(f"would be dead-lettered: {outcome.reason}", markup=False, highlight=False)
        raise typer.Exit(EXIT_DEAD_LETTER)
    if outcome.status == Status.NO_RULE:
        err_console.print("no rule matched this event", markup=False)
