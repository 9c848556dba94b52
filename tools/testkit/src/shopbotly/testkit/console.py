"""Test support for the console (nothing here runs in production): records built from the real contract
models, operator keys, and the console served in a thread."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from shopbotly.common.dlq import DeadLetter, dead_letter_headers
from shopbotly.common.errors import ErrorClass
from shopbotly.common.events import (
    CommandOp,
    CommandOutcome,
    CommandResult,
    CrmCommand,
    RawEvent,
    message_headers,
)
from shopbotly.common.http import ServiceServer, server_config
from shopbotly.common.kafka import KafkaSettings
from shopbotly.console.app import create_app
from shopbotly.console.readmodel import ReadModel
from shopbotly.console.settings import Settings

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def raw_event(event_id: str, email: str, *, tenant: str = "demo", type: str = "lead.created") -> RawEvent:
    return RawEvent(
        id=event_id,
        source="shopbotly",
        type=type,
        subject=email,
        data={"email": email},
        tenant=tenant,
        sourcename="api",
        receivedat=NOW,
    )


def command(event: RawEvent, n: int = 0, *, op: CommandOp = CommandOp.UPSERT_CONTACT) -> CrmCommand:
    return CrmCommand(
        command_id=f"{event.id}:r{n}",
        tenant=event.tenant,
        connection="hubspot",
        identity=event.subject or "",
        op=op,
        fields={"email": event.subject},
        causation_event_id=event.id,
        rule_id=f"r{n}",
        mapping_version="1",
    )


def result(cmd: CrmCommand, outcome: CommandOutcome, **extra: object) -> CommandResult:
    return CommandResult(
        command_id=cmd.command_id,
        tenant=cmd.tenant,
        connection=cmd.connection,
        identity=cmd.identity,
        op=cmd.op,
        outcome=outcome,
        **extra,  # type: ignore[arg-type]
    )


def headers_of(event_id: str, tenant: str, schema: str) -> list[tuple[str, bytes]]:
    return message_headers(event_id=event_id, tenant=tenant, trace_id=None, schema=schema)


def dead_letter_headers_of(cmd: CrmCommand, origin_topic: str) -> list[tuple[str, bytes]]:
    letter = DeadLetter(
        error_class=ErrorClass.PERMANENT,
        error_message="422 Unprocessable: property 'lifecyclestage' is not valid",
        attempts=1,
        first_at=NOW,
        last_at=NOW,
        origin_topic=origin_topic,
        origin_partition=0,
        origin_offset=0,
        origin_service="crm-writer",
    )
    return dead_letter_headers(headers_of(cmd.causation_event_id, cmd.tenant, CrmCommand.SCHEMA), letter)


OPERATOR_KEYS = {
    "admin": "sbo_admin_test_key_0123456789abcdefghijklmn",
    "viewer": "sbo_viewer_test_key_0123456789abcdefghijklm",
    "acme-only": "sbo_acme_only_test_key_0123456789abcdefghij",
}


def operators_json() -> str:
    """SHOPBOTLY_CONSOLE_OPERATORS for OPERATOR_KEYS: an admin, a read-only viewer, an acme-only viewer."""
    return json.dumps(
        [
            {"name": "admin", "sha256": _sha(OPERATOR_KEYS["admin"]), "scopes": ["read", "admin"]},
            {"name": "viewer", "sha256": _sha(OPERATOR_KEYS["viewer"]), "scopes": ["read"]},
            {"name": "acme-only", "sha256": _sha(OPERATOR_KEYS["acme-only"]), "tenants": ["acme"]},
        ]
    )


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def console_settings(kafka: KafkaSettings, **overrides: Any) -> Settings:
    env = {
        "console_operators": json.loads(operators_json()),
        "port": 0,
        "kafka": kafka,
        "console_poll_s": 0.5,
    }
    return Settings(**(env | overrides))


@dataclass
class RunningConsole:
    app: FastAPI
    url: str

    @property
    def model(self) -> ReadModel:
        model: ReadModel = self.app.state.model
        return model


@contextmanager
def serve_in_thread(settings: Settings) -> Iterator[RunningConsole]:
    """The console on a free port, served by the shared runner's server in a thread of its own (so a
    blocking client such as a browser driver can use it); returns once the read model caught up."""
    app = create_app(settings)
    config = server_config(
        app, host="127.0.0.1", port=0, limits=settings.http, shutdown_grace_s=settings.shutdown_grace_s
    )
    server = ServiceServer(config, app.state.health)
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and app.state.health.ready()[0]):
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise TimeoutError("the console did not start and catch up within 30 s")
        time.sleep(0.05)
    try:
        yield RunningConsole(app, f"http://127.0.0.1:{server.port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
