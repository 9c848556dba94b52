"""Salesforce through HTTP: OAuth token endpoint, session expiry, collections upsert, limits, errors."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shopbotly.crm_emulator import OAuthClient
from shopbotly.crm_emulator.settings import SalesforceCustomField
from shopbotly.testkit.crm_emulator import Emulator, EmulatorFactory

pytestmark = pytest.mark.component

V = "v60.0"
COLLECTION = f"/services/data/{V}/composite/sobjects/Lead/ShopBotly_Email__c"


# The custom fields these tests write, as an admin created them in Setup (a fresh org has none).
ORG_FIELDS = {
    "Lead": [SalesforceCustomField(name="ShopBotly_Email__c", external_id=True, unique=True)],
    "Contact": [SalesforceCustomField(name="ShopBotly_Email__c", external_id=True, unique=True)],
    "Case": [SalesforceCustomField(name="ShopBotly_Command_Id__c", external_id=True, unique=True)],
}


@pytest.fixture
def make_emulator(make_emulator: EmulatorFactory) -> EmulatorFactory:
    """Orgs that have ORG_FIELDS (unless a test says otherwise)."""

    async def make(**overrides: Any) -> Emulator:
        return await make_emulator(**{"salesforce_custom_fields": ORG_FIELDS, **overrides})

    return make


def lead(email: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Lead"}, "ShopBotly_Email__c": email, **fields}


def full(email: str, **fields: Any) -> dict[str, Any]:
    return lead(email, LastName="Doe", Company="Acme", **fields)


async def test_client_credentials_by_form_and_basic_auth(emulator: Emulator) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "emulator-sf-client",
        "client_secret": "emulator-sf-secret",
    }
    response = await emulator.client.post("/services/oauth2/token", data=form)
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["token_type"] == "Bearer" and body["instance_url"] == "http://crm.test"
    assert body["access_token"].startswith("00D") and "!" in body["access_token"]
    assert body["issued_at"].isdigit()

    basic = base64.b64encode(b"emulator-sf-client:emulator-sf-secret").decode()
    response = await emulator.client.post(
        "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_id": "emulator-sf-client", "client_secret": "x"},
            {"error": "invalid_client", "error_description": "invalid client credentials"},
        ),
        (
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
            {"error": "invalid_client_id", "error_description": "client identifier invalid"},
        ),
        (
            {"grant_type": "password"},
            {"error": "unsupported_grant_type", "error_description": "grant type not supported"},
        ),
        (
            {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"},
            {"error": "invalid_grant", "error_description": "invalid assertion"},
        ),
    ],
)
async def test_token_errors(emulator: Emulator, form: dict[str, str], error: dict[str, str]) -> None:
    response = await emulator.client.post("/services/oauth2/token", data=form)
    assert response.status_code == 400
    assert response.json() == error


async def test_jwt_bearer_flow(make_emulator: EmulatorFactory) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    emu = await make_emulator(
        salesforce_clients=[
            OAuthClient(client_id="jwt-app", jwt_public_key=public, usernames=["bot@shop.example"])
        ]
    )
    claims = {
        "iss": "jwt-app",
        "sub": "bot@shop.example",
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 120,
    }
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    ok = await emu.client.post(
        "/services/oauth2/token",
        data={"grant_type": grant, "assertion": jwt.encode(claims, key, algorithm="RS256")},
    )
    assert ok.status_code == 200, ok.text
    headers = {"Authorization": f"Bearer {ok.json()['access_token']}"}
    assert (await emu.client.get(f"/services/data/{V}/limits", headers=headers)).status_code == 200
    # The emulator's own URL is an accepted audience too (a My Domain login URL).
    own = {**claims, "aud": "http://crm.test"}
    assert (
        await emu.client.post(
            "/services/oauth2/token",
            data={"grant_type": grant, "assertion": jwt.encode(own, key, algorithm="RS256")},
        )
    ).status_code == 200
    bad = {**claims, "aud": "https://elsewhere.example"}
    refused = await emu.client.post(
        "/services/oauth2/token",
        data={"grant_type": grant, "assertion": jwt.encode(bad, key, algorithm="RS256")},
    )
    assert refused.json() == {"error": "invalid_grant", "error_description": "audience is invalid"}


async def test_session_expiry_and_invalidation_give_invalid_session_id(
    make_emulator: EmulatorFactory,
) -> None:
    emu = await make_emulator(salesforce_token_lifetime_s=60)
    headers = await emu.sf_token()
    assert (
        await emu.client.patch(COLLECTION, headers=headers, json={"records": [full("a@example.com")]})
    ).status_code == 200
    emu.clock.advance(61)
    expired = await emu.client.patch(COLLECTION, headers=headers, json={"records": [full("b@example.com")]})
    assert expired.status_code == 401
    assert expired.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]

    headers = await emu.sf_token()  # re-mint, as the writer does once
    await emu.client.post("/_emulator/faults", json={"invalidate_tokens": True})
    revoked = await emu.client.patch(COLLECTION, headers=headers, json={"records": [full("b@example.com")]})
    assert revoked.status_code == 401 and revoked.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    fresh = await emu.sf_token()
    assert (
        await emu.client.patch(COLLECTION, headers=fresh, json={"records": [full("b@example.com")]})
    ).status_code == 200
    assert set((await emu.state())["records"]["salesforce"]) == {"a@example.com", "b@example.com"}


async def test_collection_upsert_creates_updates_and_fails_per_item(emulator: Emulator) -> None:
    headers = await emulator.sf_token()
    first = await emulator.client.patch(
        COLLECTION,
        headers=headers,
        json={"allOrNone": False, "records": [full("a@example.com", FirstName="Ann")]},
    )
    assert first.status_code == 200
    (created,) = first.json()
    assert created["success"] is True and created["created"] is True and created["errors"] == []
    assert created["id"].startswith("00Q") and len(created["id"]) == 18
    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/15000"

    second = await emulator.client.patch(
        COLLECTION,
        headers=headers,
        json={
            "allOrNone": False,
            "records": [
                lead("A@example.com", Phone="123"),  # update: required fields not needed again
                full("b@example.com", Email="not-an-email"),
                lead("c@example.com"),  # create without LastName/Company
                full("d@example.com"),
            ],
        },
    )
    results = second.json()
    assert second.status_code == 200 and len(results) == 4
    assert results[0] == {"id": created["id"], "success": True, "errors": [], "created": False}
    assert results[1]["success"] is False
    assert results[1]["errors"] == [
        {
            "statusCode": "INVALID_EMAIL_ADDRESS",
            "message": "Email: invalid email address: not-an-email",
            "fields": ["Email"],
        }
    ]
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert results[2]["errors"][0]["fields"] == ["LastName", "Company"]
    assert results[3]["success"] is True and results[3]["created"] is True

    records = (await emulator.state())["records"]["salesforce"]
    assert set(records) == {"a@example.com", "d@example.com"}
    assert records["a@example.com"]["properties"]["Phone"] == "123"
    assert records["a@example.com"]["properties"]["FirstName"] == "Ann"


async def test_all_or_none_rolls_back_everything(emulator: Emulator) -> None:
    headers = await emulator.sf_token()
    response = await emulator.client.patch(
        COLLECTION,
        headers=headers,
        json={"allOrNone": True, "records": [full("ok@example.com"), lead("missing@example.com")]},
    )
    first, second = response.json()
    assert first == {
        "success": False,
        "errors": [
            {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using "
                "AllOrNone header",
                "fields": [],
            }
        ],
    }
    assert second["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert (await emulator.state())["records"]["salesforce"] == {}


async def test_more_than_200_records_is_400_exceeded_id_limit(emulator: Emulator) -> None:
    headers = await emulator.sf_token()
    records = [full(f"u{i}@example.com") for i in range(201)]
    response = await emulator.client.patch(COLLECTION, headers=headers, json={"records": records})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    ok = await emulator.client.patch(COLLECTION, headers=headers, json={"records": records[:200]})
    assert ok.status_code == 200 and all(r["success"] for r in ok.json())


async def test_daily_api_limit_is_request_limit_exceeded(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(salesforce_daily_limit=2)
    headers = await emu.sf_token()
    first = await emu.client.get(f"/services/data/{V}/limits", headers=headers)
    assert first.json() == {"DailyApiRequests": {"Max": 2, "Remaining": 1}}
    assert (
        await emu.client.patch(COLLECTION, headers=headers, json={"records": [full("a@example.com")]})
    ).headers["Sforce-Limit-Info"] == "api-usage=2/2"
    refused = await emu.client.patch(COLLECTION, headers=headers, json={"records": [full("b@example.com")]})
    assert refused.status_code == 403
    assert refused.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=2/2"


async def test_several_matches_for_one_external_id(emulator: Emulator) -> None:
    for _ in range(2):
        seeded = await emulator.client.post(
            "/_emulator/salesforce/Lead",
            json={
                "fields": {"ShopBotly_Email__c": "twin@example.com", "LastName": "Twin", "Company": "X"},
                "identity": "twin@example.com",
            },
        )
        assert seeded.status_code == 201
    headers = await emulator.sf_token()
    single = await emulator.client.patch(
        f"/services/data/{V}/sobjects/Lead/ShopBotly_Email__c/twin@example.com",
        headers=headers,
        json={"Phone": "1"},
    )
    assert single.status_code == 300
    assert len(single.json()) == 2 and all(
        u.startswith(f"/services/data/{V}/sobjects/Lead/00Q") for u in single.json()
    )
    collection = await emulator.client.patch(
        COLLECTION, headers=headers, json={"records": [lead("twin@example.com")]}
    )
    assert collection.json()[0]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    record = (await emulator.state())["records"]["salesforce"]["twin@example.com"]
    assert record["creates"] == 2 and len(record["record_ids"]) == 2


async def test_unique_field_duplicate_value(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(salesforce_unique_fields={"Lead": ["Shop_Customer_Id__c"]})
    headers = await emu.sf_token()
    await emu.client.patch(
        COLLECTION, headers=headers, json={"records": [full("a@example.com", Shop_Customer_Id__c="C1")]}
    )
    response = await emu.client.patch(
        COLLECTION, headers=headers, json={"records": [full("b@example.com", Shop_Customer_Id__c="c1")]}
    )
    (result,) = response.json()
    assert result["errors"][0]["statusCode"] == "DUPLICATE_VALUE"
    assert "duplicate value found: Shop_Customer_Id__c" in result["errors"][0]["message"]


async def test_single_record_upsert_read_and_notes(emulator: Emulator) -> None:
    headers = await emulator.sf_token()
    url = f"/services/data/{V}/sobjects/Lead/ShopBotly_Email__c/solo@example.com"
    created = await emulator.client.patch(url, headers=headers, json={"LastName": "Solo", "Company": "One"})
    assert created.status_code == 201 and created.json()["created"] is True
    updated = await emulator.client.patch(url, headers=headers, json={"Title": "CEO"})
    assert updated.status_code == 200 and updated.json()["created"] is False
    record_id = created.json()["id"]
    got = await emulator.client.get(f"/services/data/{V}/sobjects/Lead/{record_id[:15]}", headers=headers)
    assert got.json()["Title"] == "CEO" and got.json()["attributes"]["type"] == "Lead"
    by_external_id = await emulator.client.get(url.replace("solo@", "SOLO@"), headers=headers)
    assert by_external_id.json()["Id"] == record_id  # external ids match case-insensitively
    note = await emulator.client.post(
        f"/services/data/{V}/sobjects/Note",
        headers=headers,
        json={"ParentId": record_id, "Title": "Call", "Body": "hi"},
    )
    assert note.status_code == 201 and note.json()["id"].startswith("002")
    dangling = await emulator.client.post(
        f"/services/data/{V}/sobjects/Note",
        headers=headers,
        json={"ParentId": "00Q5g0000000zzzAAA"[:15], "Title": "x"},
    )
    assert dangling.status_code == 400
    assert dangling.json()[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"
    record = (await emulator.state())["records"]["salesforce"]["solo@example.com"]
    assert [n["properties"]["Title"] for n in record["notes"]] == ["Call"]
    bad_field = await emulator.client.patch(
        f"/services/data/{V}/composite/sobjects/Lead/Email", headers=headers, json={"records": []}
    )
    assert bad_field.status_code == 404
    assert (
        bad_field.json()[0]["message"]
        == "Provided external ID field does not exist or is not accessible: Email"
    )
    old = await emulator.client.patch(
        "/services/data/v45.0/composite/sobjects/Lead/ShopBotly_Email__c",
        headers=headers,
        json={"records": []},
    )
    assert old.status_code == 404


async def test_cases_and_tasks_hang_off_the_contact(emulator: Emulator) -> None:
    """As crm-writer does: Contact upsert by external id, a Task (WhoId), a Case upserted by command id."""
    headers = await emulator.sf_token()
    contacts = f"/services/data/{V}/composite/sobjects/Contact/ShopBotly_Email__c"
    bare = await emulator.client.patch(
        contacts,
        headers=headers,
        json={"records": [{"attributes": {"type": "Contact"}, "ShopBotly_Email__c": "p@example.com"}]},
    )
    assert bare.json()[0]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"  # Contact needs LastName
    created = await emulator.client.patch(
        contacts,
        headers=headers,
        json={
            "records": [
                {"attributes": {"type": "Contact"}, "ShopBotly_Email__c": "p@example.com", "LastName": "P"}
            ]
        },
    )
    contact_id = created.json()[0]["id"]
    assert contact_id.startswith("003")
    task = await emulator.client.post(
        f"/services/data/{V}/sobjects/Task",
        headers=headers,
        json={
            "Subject": "Note",
            "Description": "Asked about shipping",
            "WhoId": contact_id,
            "Status": "Completed",
        },
    )
    assert task.status_code == 201 and task.json()["id"].startswith("00T")
    case_url = f"/services/data/{V}/sobjects/Case/ShopBotly_Command_Id__c/cmd-42"
    case = {
        "Subject": "Where is my order?",
        "Description": "#1001",
        "ContactId": contact_id,
        "Origin": "ShopBotly",
    }
    first = await emulator.client.patch(case_url, headers=headers, json=case)
    replay = await emulator.client.patch(case_url, headers=headers, json=case)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert first.json()["id"] == replay.json()["id"] and first.json()["id"].startswith("500")
    dangling = await emulator.client.patch(
        f"/services/data/{V}/sobjects/Case/ShopBotly_Command_Id__c/cmd-43",
        headers=headers,
        json={**case, "ContactId": "003000000000000AAA"},
    )
    assert dangling.status_code == 400 and dangling.json()[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"

    state = await emulator.state()
    record = state["records"]["salesforce"]["p@example.com"]
    assert record["object"] == "Contact" and set(state["records"]["salesforce"]) == {"p@example.com"}
    assert [t["properties"]["Subject"] for t in record["tickets"]] == ["Where is my order?"]
    assert [n["properties"]["Description"] for n in record["notes"]] == ["Asked about shipping"]
    assert len(state["tickets"]["salesforce"]) == 1

    only_tags = await emulator.client.get(
        f"/services/data/{V}/sobjects/Contact/ShopBotly_Email__c/p@example.com",
        headers=headers,
        params={"fields": "LastName"},
    )
    assert set(only_tags.json()) == {"attributes", "Id", "LastName"}
