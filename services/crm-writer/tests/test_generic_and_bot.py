"""Generic REST connector and signed bot notifications (httpx.MockTransport)."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.config import BotWebhookConfig
from shopbotly.common.errors import PermanentError, RetryableError
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.crm_writer.connectors.bot import BotConnector
from shopbotly.crm_writer.connectors.generic import GenericConnector
from shopbotly.crm_writer.domain import WriteKind, coalesce
from shopbotly.testkit.crm_writer import BotReceiver, crm_command, one_write

pytestmark = pytest.mark.component

BOT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def command(i: int, op: CommandOp, identity: str = "a@x.io", **kw: Any) -> CrmCommand:
    return crm_command(i, op, identity, command_id=f"cmd_{i}", **kw)


class GenericCrm:
    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.status = 201
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            form = dict(urllib.parse.parse_qsl(request.content.decode()))
            assert form == {"grant_type": "client_credentials", "client_id": "c1", "client_secret": "cs"}
            return httpx.Response(200, json={"access_token": "gen-tok", "expires_in": 60})
        self.seen.append(request)
        if request.headers.get("authorization") != "Bearer gen-tok":
            return httpx.Response(401)
        return httpx.Response(self.status, json={"data": {"id": "lead-77"}})


async def test_generic_rest_from_configuration_alone(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SB_TEST_GEN_SECRET", "cs")
    crm = GenericCrm()
    cfg = {
        "kind": "generic",
        "base_url": "https://crm.internal",
        "auth": {
            "kind": "oauth2_client_credentials",
            "token_url": "https://crm.internal/oauth/token",
            "client_id": "c1",
            "client_secret": {"env": "SB_TEST_GEN_SECRET"},
        },
        "options": {
            "idempotency_header": "X-Request-Key",
            "operations": {
                "default": {
                    "path": "/api/v1/leads",
                    "body": {"email": "{identity}", "props": "{fields}", "labels": "{tags}"},
                    "success_codes": [201],
                    "id_field": "data.id",
                },
                "add_note": {
                    "method": "PUT",
                    "path": "/api/v1/contacts/{identity}/notes/{command_id}",
                    "body": {"text": "Note: {body}"},
                    "success_codes": [200, 201],
                },
            },
        },
    }
    conn = GenericConnector(make_runtime(cfg, crm.transport))
    cmds = [
        command(1, CommandOp.UPSERT_CONTACT, fields={"firstname": "A", "n": 2}),
        command(2, CommandOp.ADD_TAGS, tags=["vip"]),
        command(3, CommandOp.ADD_NOTE, body="hi"),
    ]
    writes = coalesce(list(enumerate(cmds)), conn.kind_of, max_merge=conn.max_merge, group_of=conn.group_of)
    assert [len(w.commands) for w in writes] == [2, 1]  # the upsert and the tags share an endpoint: merged
    ids = await conn.apply(writes[0], partition=0)
    assert ids == {"contact": "lead-77"}
    first = crm.seen[0]
    assert orjson.loads(first.content) == {
        "email": "a@x.io",
        "props": {"firstname": "A", "n": 2},
        "labels": ["vip"],
    }
    assert first.headers["x-request-key"] == writes[0].key
    await conn.apply(writes[1], partition=0)
    note = crm.seen[1]
    assert (note.method, note.url.path) == ("PUT", "/api/v1/contacts/a@x.io/notes/cmd_3")
    assert note.url.raw_path == b"/api/v1/contacts/a%40x.io/notes/cmd_3"
    assert orjson.loads(note.content) == {"text": "Note: hi"}
    crm.status = 503
    with pytest.raises(RetryableError):
        await conn.apply(writes[1], partition=0)
    crm.status = 422
    with pytest.raises(PermanentError, match="422"):
        await conn.apply(writes[1], partition=0)


async def test_generic_without_coalescing_or_ops(make_runtime: Any) -> None:
    cfg = {
        "kind": "generic",
        "base_url": "https://crm.internal",
        "options": {"coalesce": False, "operations": {"upsert_contact": {}}},
    }
    conn = GenericConnector(make_runtime(cfg, httpx.MockTransport(lambda r: httpx.Response(200))))
    assert conn.max_merge == 1
    with pytest.raises(PermanentError, match="no operation for add_note"):
        conn.kind_of(CommandOp.ADD_NOTE)


async def test_bot_notification_verifies_with_standard_webhooks(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SB_TEST_BOT", BOT_SECRET)
    bot = BotReceiver(BOT_SECRET)
    hook = BotWebhookConfig.model_validate(
        {"url": "https://bot.example/hooks", "secret": {"env": "SB_TEST_BOT"}}
    )
    conn = BotConnector(make_runtime({"kind": "bot_webhook"}, bot.transport), hook)
    when = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    cmd = command(
        9,
        CommandOp.NOTIFY_BOT,
        fields={"ticket_id": "T-1", "status": "closed"},
        body="Your ticket is closed",
        event_type="ticket.updated",
        received_at=when,
    )
    ids = await conn.apply(one_write(cmd, WriteKind.NOTIFY), partition=0)
    assert ids == {"webhook_id": "cmd_9"} and bot.ids == ["cmd_9"] and bot.rejected == 0
    assert bot.received == [
        {
            "type": "ticket.updated",
            "timestamp": "2026-11-24T10:00:00Z",
            "data": {
                "ticket_id": "T-1",
                "status": "closed",
                "identity": "a@x.io",
                "body": "Your ticket is closed",
            },
        }
    ]
    with pytest.raises(PermanentError):
        conn.kind_of(CommandOp.UPSERT_CONTACT)
    bot.fail_with = 500
    with pytest.raises(RetryableError):
        await conn.apply(one_write(cmd, WriteKind.NOTIFY), partition=0)
    bot.fail_with = 410
    with pytest.raises(PermanentError):
        await conn.apply(one_write(cmd, WriteKind.NOTIFY), partition=0)


async def test_bot_secret_problems_are_permanent(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = BotReceiver(BOT_SECRET)
    hook = BotWebhookConfig.model_validate(
        {"url": "https://bot.example/hooks", "secret": {"env": "SB_TEST_BOT_MISSING"}}
    )
    conn = BotConnector(make_runtime({"kind": "bot_webhook"}, bot.transport), hook)
    cmd = command(1, CommandOp.NOTIFY_BOT)
    with pytest.raises(PermanentError, match="env:SB_TEST_BOT_MISSING"):
        await conn.apply(one_write(cmd, WriteKind.NOTIFY), partition=0)
    assert bot.attempts == 0
