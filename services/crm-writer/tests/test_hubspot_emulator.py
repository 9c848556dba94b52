"""HubSpot connector against the CRM emulator (in process): notes and tickets are created once per command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shopbotly.common.errors import PermanentError
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_writer.connectors.hubspot import HubSpotConnector
from shopbotly.crm_writer.domain import Write, WriteKind

pytestmark = pytest.mark.component

BASE = "https://crm.test"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_HS_TOKEN", "emulator-hubspot-token")


class Portal:
    def __init__(self, transport: httpx.AsyncBaseTransport, admin: httpx.AsyncClient) -> None:
        self.transport = transport
        self.admin = admin

    async def state(self) -> dict[str, Any]:
        return dict((await self.admin.get("/_emulator/state")).json())


async def _portal(*, set_up: bool, **settings: Any) -> AsyncIterator[Portal]:
    """A fresh emulated portal; `set_up`: with the unique command-id property of notes and tickets created
    through the Properties API, as `shopbotly connections setup --apply` does."""
    app = create_app(EmulatorSettings(seed=7, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as admin:
            for object_type in ("notes", "tickets") if set_up else ():
                created = await admin.post(
                    f"/crm/v3/properties/{object_type}",
                    headers={"Authorization": "Bearer emulator-hubspot-token"},
                    json={
                        "name": "shopbotly_command_id",
                        "label": "ShopBotly command id",
                        "type": "string",
                        "fieldType": "text",
                        "groupName": "shopbotly",
                        "hasUniqueValue": True,
                    },
                )
                assert created.status_code == 201, created.text
            yield Portal(transport, admin)


@pytest.fixture
async def portal() -> AsyncIterator[Portal]:
    async for p in _portal(set_up=True):
        yield p


@pytest.fixture
async def bare_portal() -> AsyncIterator[Portal]:
    async for p in _portal(set_up=False):
        yield p


def connector(make_runtime: Any, portal: Portal, api_version: str = "2026-03") -> HubSpotConnector:
    config = {
        "kind": "hubspot",
        "base_url": BASE,
        "auth": {"kind": "bearer", "token": {"env": "SB_TEST_HS_TOKEN"}},
        "rate_limit": {"requests": 1000, "per_seconds": 1},
        "options": {"api_version": api_version},
    }
    return HubSpotConnector(make_runtime(config, portal.transport))


def write(op: CommandOp, command_id: str, **kw: Any) -> Write:
    cmd = CrmCommand(
        command_id=command_id,
        tenant="t",
        connection="hs",
        identity="jo@example.com",
        op=op,
        causation_event_id="e",
        rule_id="r",
        mapping_version="1",
        **kw,
    )
    w = Write(WriteKind.NOTE if op is CommandOp.ADD_NOTE else WriteKind.TICKET, "t", "hs", cmd.identity)
    w.absorb(cmd, 0)
    return w


@pytest.mark.parametrize("api_version", ["v3", "2026-03", "2026-09"])
async def test_the_same_note_and_ticket_commands_twice_make_one_associated_record_each(
    make_runtime: Any, portal: Portal, api_version: str
) -> None:
    hs = connector(make_runtime, portal, api_version)
    note = write(CommandOp.ADD_NOTE, "cmd-note", body="Called about #1001")
    ticket = write(
        CommandOp.CREATE_TICKET, "cmd-ticket", body="Where is my order?", fields={"priority": "HIGH"}
    )
    try:
        first = [await hs.apply(w, partition=0) for w in (note, ticket)]
        again = [await hs.apply(w, partition=0) for w in (note, ticket)]  # as after a kill before the ack
    finally:
        await hs.aclose()
    assert first == again
    state = await portal.state()
    record = state["records"]["hubspot"]["jo@example.com"]
    [n] = record["notes"]
    [t] = record["tickets"]
    assert n["id"] == first[0]["note"] and n["associations"] == [record["id"]] == [first[0]["contact"]]
    assert n["properties"]["hs_note_body"] == "Called about #1001"
    assert n["properties"]["shopbotly_command_id"] == "cmd-note"
    assert t["id"] == first[1]["ticket"] and t["associations"] == [record["id"]]
    assert (
        t["properties"]["subject"] == "Where is my order?" and t["properties"]["hs_ticket_priority"] == "HIGH"
    )
    by_type = state["counters"]["records_by_type"]["hubspot"]
    assert by_type["notes"] == {"creates": 1, "updates": 1}
    assert by_type["tickets"] == {"creates": 1, "updates": 1}


async def test_a_portal_without_the_property_fails_permanently_naming_it(
    make_runtime: Any, bare_portal: Portal
) -> None:
    hs = connector(make_runtime, bare_portal)
    try:
        with pytest.raises(PermanentError) as refused:
            await hs.apply(write(CommandOp.CREATE_TICKET, "cmd-t", body="Help"), partition=0)
    finally:
        await hs.aclose()
    message = str(refused.value)
    assert "tickets property 'shopbotly_command_id' with unique values" in message
    assert "shopbotly connections setup --apply" in message and "docs/services/crm-writer.md" in message
    assert "non-unique 0-5 property shopbotly_command_id" in message  # what HubSpot said
    assert (await bare_portal.state())["records"]["hubspot"]["jo@example.com"]["tickets"] == []


async def test_a_ticket_refused_in_a_shared_upsert_fails_alone(make_runtime: Any, portal: Portal) -> None:
    hs = connector(make_runtime, portal)
    good = write(CommandOp.CREATE_TICKET, "cmd-good", body="Fine", fields={"priority": "HIGH"})
    bad = write(CommandOp.CREATE_TICKET, "cmd-bad", body="Odd", fields={"priority": "SOMEDAY"})
    try:
        outcomes = await asyncio.gather(
            hs.apply(good, partition=0), hs.apply(bad, partition=0), return_exceptions=True
        )
    finally:
        await hs.aclose()
    assert isinstance(outcomes[0], dict) and "ticket" in outcomes[0]
    assert isinstance(outcomes[1], PermanentError) and "SOMEDAY" in str(outcomes[1])
    tickets = (await portal.state())["records"]["hubspot"]["jo@example.com"]["tickets"]
    assert [t["properties"]["subject"] for t in tickets] == ["Fine"]


@pytest.fixture
async def fresh_portal() -> AsyncIterator[Portal]:
    """A fresh portal: standard properties only, no custom one created."""
    async for p in _portal(set_up=False):
        yield p


def contact_write(command_id: str, fields: dict[str, Any]) -> Write:
    cmd = CrmCommand(
        command_id=command_id,
        tenant="t",
        connection="hs",
        identity="jo@example.com",
        op=CommandOp.UPSERT_CONTACT,
        causation_event_id="e",
        rule_id="r",
        mapping_version="1",
        fields=fields,
    )
    w = Write(WriteKind.CONTACT, "t", "hs", cmd.identity)
    w.absorb(cmd, 0)
    return w


def _dropped_total() -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "shopbotly_crm_writer_dropped_properties_total", {"connection": "t:crm", "object_type": "contacts"}
    )
    return value or 0.0


async def test_properties_a_fresh_portal_refuses_are_dropped_and_the_rest_lands(
    make_runtime: Any, fresh_portal: Portal
) -> None:
    """A Stripe checkout's contact on a portal nobody set up: name and phone land, the unknown id and an
    invalid lifecycle stage are left out and named in the result."""
    hs = connector(make_runtime, fresh_portal)
    counted = _dropped_total()
    fields = {
        "firstname": "Jo",
        "lastname": "Doe",
        "phone": "+4915112345678",
        "shopbotly_stripe_customer_id": "cus_123",
        "lifecyclestage": "customerr",
    }
    try:
        first = await hs.apply(contact_write("cmd-1", fields), partition=0)
        second = await hs.apply(contact_write("cmd-2", {**fields, "firstname": "Joanna"}), partition=0)
    finally:
        await hs.aclose()
    assert first["dropped_properties"] == "lifecyclestage,shopbotly_stripe_customer_id"
    assert (
        second["dropped_properties"] == first["dropped_properties"] and second["contact"] == first["contact"]
    )
    props = (await fresh_portal.state())["records"]["hubspot"]["jo@example.com"]["properties"]
    assert (
        props["firstname"] == "Joanna" and props["lastname"] == "Doe" and props["phone"] == "+4915112345678"
    )
    assert "shopbotly_stripe_customer_id" not in props and "lifecyclestage" not in props
    assert _dropped_total() - counted == 4  # two properties, two writes


async def test_with_dead_letter_policy_a_refused_property_fails_the_command(
    make_runtime: Any, fresh_portal: Portal
) -> None:
    config = {
        "kind": "hubspot",
        "base_url": BASE,
        "auth": {"kind": "bearer", "token": {"env": "SB_TEST_HS_TOKEN"}},
        "options": {"unknown_properties": "dead_letter"},
    }
    hs = HubSpotConnector(make_runtime(config, fresh_portal.transport))
    try:
        with pytest.raises(PermanentError, match=r"PROPERTY_DOESNT_EXIST|does not exist"):
            await hs.apply(contact_write("cmd-1", {"firstname": "Jo", "plan": "pro"}), partition=0)
    finally:
        await hs.aclose()


@pytest.mark.parametrize("api_version", ["v3", "2026-03", "2026-09"])
async def test_a_property_the_portal_requires_refuses_new_contacts_from_2026_09_on(
    make_runtime: Any, api_version: str
) -> None:
    """HubSpot enforces a portal's required properties on API writes from 2026-09 on: there the command is a
    permanent error that names the property (dead-lettered, not retried); earlier versions write it."""
    async for portal in _portal(set_up=False, hubspot_required_properties={"contacts": ["lastname"]}):
        hs = connector(make_runtime, portal, api_version)
        try:
            if api_version == "2026-09":
                with pytest.raises(PermanentError, match=r"VALIDATION_ERROR.*lastname is required"):
                    await hs.apply(contact_write("cmd-1", {"firstname": "Jo"}), partition=0)
                assert "jo@example.com" not in (await portal.state())["records"]["hubspot"]
            else:
                await hs.apply(contact_write("cmd-1", {"firstname": "Jo"}), partition=0)
            # With the property, every version creates (or updates) the contact.
            done = await hs.apply(contact_write("cmd-2", {"firstname": "Jo", "lastname": "Doe"}), partition=0)
        finally:
            await hs.aclose()
        record = (await portal.state())["records"]["hubspot"]["jo@example.com"]
        assert record["id"] == done["contact"] and record["properties"]["lastname"] == "Doe"
