"""Salesforce outbound messages from the emulated org: an agent's Case change and comment become SOAP
notifications, batched, re-sent until the listener acknowledges them with `<Ack>true</Ack>`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shopbotly.common.sources.salesforce import ACK, OutboundMessage, org_id_key, parse_outbound_message
from shopbotly.crm_emulator.domain import SALESFORCE_ORG_ID
from shopbotly.crm_emulator.salesforce_outbound import acknowledged
from shopbotly.testkit.crm_emulator import Emulator

pytestmark = pytest.mark.component


@dataclass
class Listener:
    """An outbound message listener: answers each request as scripted ("ack", or a bare status)."""

    url: str = ""
    script: list[str | int] = field(default_factory=list)
    received: list[tuple[dict[str, str], OutboundMessage]] = field(default_factory=list)


@pytest.fixture
async def listener(serve_app: Callable[[Any], Awaitable[int]]) -> Listener:
    state = Listener()

    async def hook(request: Request) -> Response:
        state.received.append((dict(request.headers), parse_outbound_message(await request.body())))
        action = state.script.pop(0) if state.script else "ack"
        if action == "ack":
            return Response(ACK, 200, media_type="text/xml")
        return Response(b"<html>busy</html>", int(action), media_type="text/html")

    port = await serve_app(FastAPI(routes=[Route("/sf", hook, methods=["POST"])]))
    state.url = f"http://127.0.0.1:{port}/sf?token=listener-token-0123456789"
    return state


async def _set_up(emu: Emulator, listener: Listener, **extra: Any) -> None:
    settings = {
        "url": listener.url,
        "batch_window_ms": 50,
        "retry_initial_ms": 20,
        "retry_max_ms": 100,
        **extra,
    }
    response = await emu.client.post("/_emulator/outbound-messages", json=settings)
    assert response.status_code == 200, response.text
    assert "listener-token" not in response.text  # the token in the URL is a secret


async def _case(emu: Emulator, subject: str = "Broken armrest") -> str:
    contact = await emu.client.post(
        "/_emulator/salesforce/Contact", json={"fields": {"LastName": "Doe", "Email": "jane@example.com"}}
    )
    case = await emu.client.post(
        "/_emulator/salesforce/Case",
        json={"fields": {"Subject": subject, "Status": "New", "ContactId": contact.json()["id"]}},
    )
    assert case.status_code == 201, case.text
    case_id: str = case.json()["id"]
    return case_id


async def _view_when(emu: Emulator, stat: str, count: int) -> dict[str, Any]:
    """The outbound view once `stat` reached `count` (bounded: 500 looks, 20 ms apart)."""
    for _ in range(500):
        view: dict[str, Any] = (await emu.client.get("/_emulator/outbound-messages")).json()
        if view["stats"][stat] >= count and not view["messages_in_flight"]:
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"{stat} never reached {count}: {view}")


async def _delivered(emu: Emulator, messages: int) -> dict[str, Any]:
    return await _view_when(emu, "messages_acknowledged", messages)


async def test_a_case_change_and_a_comment_are_sent_as_salesforce_writes_them(
    emulator: Emulator, listener: Listener
) -> None:
    await _set_up(emulator, listener)
    case_id = await _case(emulator)
    answer = await emulator.client.post(
        f"/_emulator/salesforce/cases/{case_id}",
        json={"fields": {"Status": "Working"}, "reply": {"text": "A new armrest ships today."}},
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["notification_ids"]) == 2
    await _delivered(emulator, 2)  # one outbound message per sObject type

    by_type = {m.notifications[0].sobject_type: (h, m) for h, m in listener.received}
    headers, case_message = by_type["Case"]
    assert headers["content-type"].startswith("text/xml") and headers["soapaction"] == '""'
    assert org_id_key(case_message.organization_id) == org_id_key(SALESFORCE_ORG_ID)
    (case_note,) = case_message.notifications
    assert case_note.id.startswith("04l")
    assert case_note.fields["Id"] == case_id and case_note.fields["Status"] == "Working"
    assert case_note.fields["IsClosed"] == "false" and case_note.fields["ContactEmail"] == "jane@example.com"
    (comment,) = by_type["CaseComment"][1].notifications
    assert (
        comment.fields["ParentId"] == case_id
        and comment.fields["CommentBody"] == "A new armrest ships today."
    )


async def test_changes_close_in_time_are_batched_into_one_message(
    emulator: Emulator, listener: Listener
) -> None:
    await _set_up(emulator, listener, batch_window_ms=200)
    cases = [await _case(emulator, f"Case {i}") for i in range(3)]
    for case_id in cases:
        await emulator.client.post(
            f"/_emulator/salesforce/cases/{case_id}", json={"fields": {"Status": "Escalated"}}
        )
    await _delivered(emulator, 1)
    ((_, message),) = listener.received
    assert [n.fields["Id"] for n in message.notifications] == cases


async def test_a_message_is_resent_with_the_same_ids_until_it_is_acknowledged(
    emulator: Emulator, listener: Listener
) -> None:
    listener.script = [503, 200, "ack"]  # a 200 without <Ack>true</Ack> is no delivery either
    await _set_up(emulator, listener)
    case_id = await _case(emulator)
    await emulator.client.post(
        f"/_emulator/salesforce/cases/{case_id}", json={"fields": {"Status": "Closed"}}
    )
    view = await _delivered(emulator, 1)
    assert [(a["status"], a["outcome"]) for a in view["attempts"]] == [
        (503, "retry"),
        (200, "retry"),
        (200, "acknowledged"),
    ]
    ids = {tuple(n.id for n in m.notifications) for _, m in listener.received}
    assert len(listener.received) == 3 and len(ids) == 1


async def test_a_message_never_acknowledged_is_dropped_after_its_attempts(
    emulator: Emulator, listener: Listener
) -> None:
    listener.script = [500, 500]
    await _set_up(emulator, listener, max_attempts=2)
    case_id = await _case(emulator)
    await emulator.client.post(
        f"/_emulator/salesforce/cases/{case_id}", json={"fields": {"Status": "Closed"}}
    )
    view = await _view_when(emulator, "messages_dropped", 1)
    assert [a["outcome"] for a in view["attempts"]] == ["retry", "dropped"]


def test_only_200_with_ack_true_acknowledges() -> None:
    assert acknowledged(200, ACK)
    assert not acknowledged(200, ACK.replace(b"true", b"false"))
    assert not acknowledged(500, ACK)
    assert not acknowledged(200, b'{"ok": true}')
