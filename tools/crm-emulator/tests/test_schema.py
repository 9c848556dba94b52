"""The account's schema: a fresh portal/org by default, custom properties/fields created through the APIs
(HubSpot Properties API, Salesforce Tooling API), writes to what the account lacks refused in the CRM's own
words, and what was created kept across a restart and an admin reset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shopbotly.testkit.crm_emulator import HUBSPOT, Emulator, EmulatorFactory

pytestmark = pytest.mark.component

V = "v61.0"
TOOLING = f"/services/data/{V}/tooling/sobjects/CustomField"


def text_field(full_name: str, **metadata: Any) -> dict[str, Any]:
    return {"FullName": full_name, "Metadata": {"label": "X", "type": "Text", "length": 255, **metadata}}


async def described(emu: Emulator, sobject: str) -> dict[str, dict[str, Any]]:
    response = await emu.client.get(
        f"/services/data/{V}/sobjects/{sobject}/describe", headers=await emu.sf_token()
    )
    assert response.status_code == 200, response.text
    return {f["name"]: f for f in response.json()["fields"]}


async def test_a_fresh_portal_refuses_shopbotly_properties_until_they_are_created(emulator: Emulator) -> None:
    upsert = {
        "inputs": [{"idProperty": "email", "id": "a@example.com", "properties": {"shopbotly_tags": "x"}}]
    }
    refused = await emulator.client.post(
        "/crm/v3/objects/contacts/batch/upsert", headers=HUBSPOT, json=upsert
    )
    assert refused.status_code == 207 and "PROPERTY_DOESNT_EXIST" in refused.text
    notes = await emulator.client.post(
        "/crm/v3/objects/notes/batch/upsert",
        headers=HUBSPOT,
        json={"inputs": [{"idProperty": "shopbotly_command_id", "id": "c1", "properties": {}}]},
    )
    assert notes.status_code == 400 and "non-unique" in notes.text

    await emulator.provision_hubspot()
    accepted = await emulator.client.post(
        "/crm/v3/objects/contacts/batch/upsert", headers=HUBSPOT, json=upsert
    )
    assert accepted.status_code == 200, accepted.text


async def test_a_fresh_org_refuses_custom_fields_it_lacks_in_salesforce_words(emulator: Emulator) -> None:
    headers = await emulator.sf_token()
    single = await emulator.client.patch(
        f"/services/data/{V}/sobjects/Lead/ShopBotly_Email__c/a@example.com",
        headers=headers,
        json={"LastName": "Doe", "Company": "Acme"},
    )
    assert single.status_code == 404  # not an external id field of this org
    assert single.json()[0]["errorCode"] == "NOT_FOUND"

    await emulator.create_field("Lead", "ShopBotly_Email__c", external_id=True, unique=True)
    for body in ({"LastName": "Doe", "Company": "Acme", "Plan__c": "pro"}, {"MailingCity": "Paris"}):
        unknown = next(k for k in body if k not in ("LastName", "Company"))
        refused = await emulator.client.patch(
            f"/services/data/{V}/sobjects/Lead/ShopBotly_Email__c/a@example.com", headers=headers, json=body
        )
        assert refused.status_code == 400
        assert refused.json() == [
            {
                "message": f"No such column '{unknown}' on sobject of type Lead",
                "errorCode": "INVALID_FIELD",
                "fields": [],
            }
        ]
    batch = await emulator.client.patch(
        f"/services/data/{V}/composite/sobjects/Lead/ShopBotly_Email__c",
        headers=headers,
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Lead"}, "ShopBotly_Email__c": "b@example.com", "LastName": "B"},
                {"attributes": {"type": "Lead"}, "ShopBotly_Email__c": "c@example.com", "Plan__c": "pro"},
            ],
        },
    )
    # The JSON is read before any record is: one unknown column refuses the whole request.
    assert batch.status_code == 400
    assert batch.json()[0]["errorCode"] == "INVALID_FIELD" and "'Plan__c'" in batch.json()[0]["message"]

    read = await emulator.client.get(
        f"/services/data/{V}/sobjects/Lead/ShopBotly_Email__c/b@example.com",
        headers=headers,
        params={"fields": "LastName,Plan__c"},
    )
    assert read.status_code == 400
    assert read.json() == [
        {"message": "No such column 'Plan__c' on entity 'Lead'", "errorCode": "INVALID_FIELD", "fields": []}
    ]

    await emulator.create_field("Lead", "Plan__c")
    created = await emulator.client.patch(
        f"/services/data/{V}/sobjects/Lead/ShopBotly_Email__c/a@example.com",
        headers=headers,
        json={"LastName": "Doe", "Company": "Acme", "plan__C": "pro"},
    )
    assert created.status_code == 201, created.text


async def test_the_tooling_api_creates_custom_fields_describe_lists(emulator: Emulator) -> None:
    headers = await emulator.sf_token()
    before = await described(emulator, "Contact")
    assert not [f for f in before.values() if f["custom"]]

    created = await emulator.client.post(
        TOOLING, headers=headers, json=text_field("Contact.ShopBotly_Email__c", externalId=True, unique=True)
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["success"] is True and body["id"].startswith("00N") and body["errors"] == []
    tags = {
        "FullName": "Contact.ShopBotly_Tags__c",
        "Metadata": {
            "label": "ShopBotly tags",
            "type": "MultiselectPicklist",
            "visibleLines": 4,
            "valueSet": {"valueSetDefinition": {"value": [{"fullName": "vip", "label": "vip"}]}},
        },
    }
    assert (await emulator.client.post(TOOLING, headers=headers, json=tags)).status_code == 201

    after = await described(emulator, "Contact")
    email = after["ShopBotly_Email__c"]
    assert (email["type"], email["externalId"], email["unique"], email["custom"]) == (
        "string",
        True,
        True,
        True,
    )
    assert after["ShopBotly_Tags__c"]["type"] == "multipicklist"
    assert after["ShopBotly_Tags__c"]["label"] == "ShopBotly tags"

    again = await emulator.client.post(
        TOOLING, headers=headers, json=text_field("Contact.shopbotly_email__c")
    )
    assert again.status_code == 400
    assert again.json()[0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"FullName": "Lead.X__c"}, "REQUIRED_FIELD_MISSING"),
        (text_field("Lead.NoSuffix"), "FIELD_INTEGRITY_EXCEPTION"),
        (text_field("Lead.Double__Under__c"), "FIELD_INTEGRITY_EXCEPTION"),
        (text_field("Widget.X__c"), "INVALID_TYPE"),
        (text_field("Lead.X__c", length=0), "FIELD_INTEGRITY_EXCEPTION"),
        (text_field("Lead.X__c", type="Currency2"), "FIELD_INTEGRITY_EXCEPTION"),
        (
            {"FullName": "Lead.X__c", "Metadata": {"label": "X", "type": "Picklist"}},
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        ({"FullName": "Lead.X__c", "Metadata": {"type": "Checkbox"}}, "FIELD_INTEGRITY_EXCEPTION"),
    ],
)
async def test_the_tooling_api_refuses_bad_definitions(
    emulator: Emulator, body: dict[str, Any], code: str
) -> None:
    response = await emulator.client.post(TOOLING, headers=await emulator.sf_token(), json=body)
    assert response.status_code == 400, response.text
    [error] = response.json()
    assert error["errorCode"] == code and error["message"]
    assert "X__c" not in await described(emulator, "Lead")


async def test_created_schema_outlives_a_restart_and_a_reset_unless_asked(
    make_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    db = tmp_path / "crm.sqlite3"
    first = await make_emulator(db_path=db)
    await first.provision_hubspot()
    await first.create_field("Lead", "ShopBotly_Email__c", external_id=True, unique=True)

    second = await make_emulator(db_path=db)  # the same file: a restarted emulator
    prop = await second.client.get("/crm/v3/properties/notes/shopbotly_command_id", headers=HUBSPOT)
    assert prop.status_code == 200 and prop.json()["hasUniqueValue"] is True
    assert (await described(second, "Lead"))["ShopBotly_Email__c"]["externalId"] is True

    assert (await second.client.post("/_emulator/reset", json={})).status_code == 200
    assert (
        await second.client.get("/crm/v3/properties/contacts/shopbotly_tags", headers=HUBSPOT)
    ).status_code == 200

    assert (await second.client.post("/_emulator/reset", json={"properties": True})).status_code == 200
    gone = await second.client.get("/crm/v3/properties/contacts/shopbotly_tags", headers=HUBSPOT)
    assert gone.status_code == 404
    assert "ShopBotly_Email__c" not in await described(second, "Lead")


DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "crm-emulator.md"


async def test_the_documented_tooling_api_example_creates_the_field(emulator: Emulator) -> None:
    text = DOC.read_text()
    start = text.index("creates a custom field:\n\n```json\n") + len("creates a custom field:\n\n```json\n")
    body = json.loads(text[start : text.index("```", start)])
    created = await emulator.client.post(TOOLING, headers=await emulator.sf_token(), json=body)
    assert created.status_code == 201, created.text
    field = (await described(emulator, "Lead"))["ShopBotly_Email__c"]
    assert field["externalId"] is True and field["unique"] is True and field["label"] == "ShopBotly identity"
