"""Salesforce connector against the CRM emulator as a fresh org set up by `connections setup` (only
ShopBotly's identity field created): a field the org lacks never costs the fields it has, and a Lead
without a company still lands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shopbotly.common.errors import PermanentError
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_emulator.testing import Clock, Emulator
from shopbotly.crm_writer.connectors.salesforce import PLACEHOLDER, SalesforceConnector
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.metrics import DROPPED_PROPERTIES

pytestmark = pytest.mark.component

BASE = "http://org.test"


@pytest.fixture
async def org(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    monkeypatch.setenv("SB_TEST_SF_SECRET", "emulator-sf-secret")
    app = create_app(EmulatorSettings(seed=7))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE) as client,
    ):
        emu = Emulator(app, client, Clock(), app.state.runtime)
        for sobject in ("Lead", "Contact"):
            await emu.create_field(sobject, "ShopBotly_Email__c", external_id=True, unique=True)
        yield emu


def connector(make_runtime: Any, org: Emulator, **options: Any) -> SalesforceConnector:
    config = {
        "kind": "salesforce",
        "base_url": BASE,
        "rate_limit": {"requests": 1000, "per_seconds": 1},
        "auth": {
            "kind": "oauth2_client_credentials",
            "token_url": f"{BASE}/services/oauth2/token",
            "client_id": "emulator-sf-client",
            "client_secret": {"env": "SB_TEST_SF_SECRET"},
        },
        "options": options,
    }
    return SalesforceConnector(make_runtime(config, httpx.ASGITransport(app=org.app)))


def write(identity: str, op: CommandOp, i: int = 0, **kw: Any) -> Write:
    cmd = CrmCommand(
        command_id=f"c-{identity}-{i}",
        tenant="t",
        connection="sf",
        identity=identity,
        op=op,
        causation_event_id="e",
        rule_id="r",
        mapping_version="1",
        **kw,
    )
    w = Write(WriteKind.LEAD if op is CommandOp.UPSERT_LEAD else WriteKind.CONTACT, "t", "sf", identity)
    w.absorb(cmd, 0)
    return w


async def record(org: Emulator, sobject: str, email: str) -> dict[str, Any]:
    response = await org.client.get(
        f"/services/data/v61.0/sobjects/{sobject}/ShopBotly_Email__c/{email}", headers=await org.sf_token()
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def dropped(sobject: str) -> float:
    return DROPPED_PROPERTIES.labels("t:crm", sobject)._value.get()


async def test_fields_the_org_lacks_are_dropped_and_the_rest_lands(make_runtime: Any, org: Emulator) -> None:
    sf = connector(make_runtime, org)
    before = dropped("Contact")
    fields = {"firstname": "Ada", "lastname": "Lovelace", "Plan__c": "pro", "Seats__c": 3}
    try:
        first = await sf.apply(write("ada@example.com", CommandOp.UPSERT_CONTACT, fields=fields), partition=0)
        # Later writes leave the refused fields out without asking the org again.
        again = await sf.apply(
            write("bob@example.com", CommandOp.UPSERT_CONTACT, 1, fields={**fields, "firstname": "Bob"}),
            partition=0,
        )
    finally:
        await sf.aclose()
    assert first["dropped_properties"] == "Plan__c,Seats__c" == again["dropped_properties"]
    ada = await record(org, "Contact", "ada@example.com")
    assert (ada["FirstName"], ada["LastName"]) == ("Ada", "Lovelace")
    assert (await record(org, "Contact", "bob@example.com"))["FirstName"] == "Bob"
    assert dropped("Contact") - before == 4
    # One refusal per unknown column (the org names one at a time), none for the second write.
    answers = org.runtime.counters.by_endpoint
    refused = sum(c.get("400", 0) for e, c in answers.items() if "composite/sobjects" in e)
    assert refused == 2, answers

    await org.create_field("Contact", "Plan__c")  # an admin creates one: picked up after state_ttl_s
    sf = connector(make_runtime, org, state_ttl_s=0)
    try:
        later = await sf.apply(write("cy@example.com", CommandOp.UPSERT_CONTACT, fields=fields), partition=0)
    finally:
        await sf.aclose()
    assert later["dropped_properties"] == "Seats__c"
    assert (await record(org, "Contact", "cy@example.com"))["Plan__c"] == "pro"


async def test_dead_letter_policy_refuses_the_command(make_runtime: Any, org: Emulator) -> None:
    sf = connector(make_runtime, org, unknown_properties="dead_letter")
    try:
        with pytest.raises(PermanentError, match="No such column 'Plan__c' on sobject of type Contact"):
            await sf.apply(
                write("d@example.com", CommandOp.UPSERT_CONTACT, fields={"lastname": "D", "Plan__c": "x"}),
                partition=0,
            )
    finally:
        await sf.aclose()


async def test_a_lead_without_company_or_last_name_gets_the_placeholder_only_when_new(
    make_runtime: Any, org: Emulator
) -> None:
    sf = connector(make_runtime, org)
    try:
        await sf.apply(
            write("eve@example.com", CommandOp.UPSERT_LEAD, fields={"firstname": "Eve"}), partition=0
        )
        assert (await record(org, "Lead", "eve@example.com"))["Company"] == PLACEHOLDER
        lead = await record(org, "Lead", "eve@example.com")
        assert (lead["LastName"], lead["FirstName"]) == (PLACEHOLDER, "Eve")

        known = {"lastname": "Adams", "company": "Acme"}
        await sf.apply(write("eve@example.com", CommandOp.UPSERT_LEAD, 1, fields=known), partition=0)
        await sf.apply(
            write("eve@example.com", CommandOp.UPSERT_LEAD, 2, fields={"phone": "+1"}), partition=0
        )
    finally:
        await sf.aclose()
    lead = await record(org, "Lead", "eve@example.com")
    # An existing lead is never given the placeholder back.
    assert (lead["LastName"], lead["Company"], lead["Phone"]) == ("Adams", "Acme", "+1")
