"""Salesforce sObject describe: a fresh org's standard fields, custom fields only once the org has them."""

from __future__ import annotations

from typing import Any

import pytest

from shopbotly.crm_emulator.salesforce_rules import SOBJECTS
from shopbotly.testkit.crm_emulator import Emulator, EmulatorFactory

pytestmark = pytest.mark.component

V = "v61.0"


async def describe(emu: Emulator, sobject: str) -> tuple[int, Any]:
    response = await emu.client.get(
        f"/services/data/{V}/sobjects/{sobject}/describe", headers=await emu.sf_token()
    )
    return response.status_code, response.json()


@pytest.mark.parametrize("sobject", ["Lead", "Contact", "Task", "Case"])
async def test_a_fresh_org_describes_standard_fields_only(emulator: Emulator, sobject: str) -> None:
    status, body = await describe(emulator, sobject)
    assert status == 200  # `describe` is not read as a record id
    assert body["name"] == sobject and body["keyPrefix"] == SOBJECTS[sobject].key_prefix
    assert body["urls"]["describe"] == f"/services/data/{V}/sobjects/{sobject}/describe"
    fields = {f["name"]: f for f in body["fields"]}
    assert not [n for n, f in fields.items() if f["custom"] or n.endswith("__c")]
    # Every field the emulator accepts on writes is described, and writable.
    for name in SOBJECTS[sobject].fields:
        assert fields[name]["createable"], (sobject, name)
    for name in ("Id", "CreatedDate", "LastModifiedDate", "SystemModstamp"):
        assert not fields[name]["createable"] and not fields[name]["updateable"]
    assert fields["Id"]["type"] == "id" and fields["Id"]["soapType"] == "tns:ID"
    for f in fields.values():
        assert {"name", "type", "label", "updateable", "createable", "nillable", "picklistValues"} <= set(f)
        assert {"externalId", "unique", "restrictedPicklist", "referenceTo", "length", "soapType"} <= set(f)


async def test_standard_picklists_required_fields_and_errors(emulator: Emulator) -> None:
    _, lead = await describe(emulator, "Lead")
    fields = {f["name"]: f for f in lead["fields"]}
    lead_status = fields["Status"]
    assert (
        lead_status["type"] == "picklist" and not lead_status["nillable"] and lead_status["defaultedOnCreate"]
    )
    assert [v["value"] for v in lead_status["picklistValues"] if v["defaultValue"]] == [
        "Open - Not Contacted"
    ]
    assert {"active", "defaultValue", "label", "validFor", "value"} == set(lead_status["picklistValues"][0])
    assert fields["LastName"]["nillable"] is False and fields["Company"]["nillable"] is False
    assert fields["Name"]["updateable"] is False and fields["Name"]["nameField"] is True
    _, case = await describe(emulator, "Case")
    origin = {f["name"]: f for f in case["fields"]}["Origin"]
    assert [v["value"] for v in origin["picklistValues"]] == ["Phone", "Email", "Web"]
    # Errors in Salesforce's shape: another sObject, a version before v20.0, no session.
    status, body = await describe(emulator, "Opportunity")
    assert status == 404 and body[0]["errorCode"] == "NOT_FOUND" and set(body[0]) == {"message", "errorCode"}
    old = await emulator.client.get(
        "/services/data/v19.0/sobjects/Lead/describe", headers=await emulator.sf_token()
    )
    assert old.status_code == 404 and old.json()[0]["errorCode"] == "NOT_FOUND"
    anonymous = await emulator.client.get(f"/services/data/{V}/sobjects/Lead/describe")
    assert anonymous.status_code == 401 and anonymous.json()[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_custom_fields_appear_once_the_org_has_them(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(
        salesforce_custom_fields={
            "Contact": [
                {"name": "ShopBotly_Tags__c", "type": "multipicklist", "picklist_values": ["vip", "new"]}
            ]
        },
        salesforce_external_id_fields={"Contact": ["ShopBotly_Email__c"]},
        salesforce_unique_fields={"Case": ["ShopBotly_Command_Id__c"]},
    )
    _, contact = await describe(emu, "Contact")
    custom = {f["name"]: f for f in contact["fields"] if f["custom"]}
    assert set(custom) == {"ShopBotly_Tags__c", "ShopBotly_Email__c"}
    assert custom["ShopBotly_Email__c"]["externalId"] and custom["ShopBotly_Email__c"]["type"] == "string"
    tags = custom["ShopBotly_Tags__c"]
    assert tags["type"] == "multipicklist" and [v["value"] for v in tags["picklistValues"]] == ["vip", "new"]
    _, case = await describe(emu, "Case")
    [command_id] = [f for f in case["fields"] if f["custom"]]
    assert command_id["name"] == "ShopBotly_Command_Id__c" and command_id["unique"]
    _, lead = await describe(emu, "Lead")
    assert not [f for f in lead["fields"] if f["custom"]]
