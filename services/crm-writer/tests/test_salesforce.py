"""Salesforce connector: sObject Collections upsert, OAuth, session expiry, limits (httpx.MockTransport); and
against the CRM emulator as a fresh org: a field the org lacks never costs the fields it has, a Lead without a
company still lands."""

from __future__ import annotations

import asyncio
import itertools
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.errors import OutageError, PermanentError
from shopbotly.common.events import CommandOp
from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.connectors.salesforce import PLACEHOLDER, SalesforceConnector
from shopbotly.crm_writer.domain import Write
from shopbotly.crm_writer.metrics import DROPPED_PROPERTIES
from shopbotly.testkit.crm_emulator import Clock, Emulator
from shopbotly.testkit.crm_writer import crm_command, one_write

pytestmark = pytest.mark.component

API = "/services/data/v61.0"


class FakeSalesforce:
    """Just enough of Salesforce: client-credentials tokens, collections upsert, Task, Case upsert."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {
            "Contact": {},
            "Lead": {},
            "Case": {},
            "Task": {},
        }
        self.ids = itertools.count(1)
        self.valid_tokens: set[str] = set()
        self.minted = 0
        self.expire_next = False
        self.limit_exceeded = False
        self.used = 10
        self.requests: list[tuple[str, str, Any]] = []
        self.transport = httpx.MockTransport(self.handle)

    def _resp(self, status: int, body: Any) -> httpx.Response:
        return httpx.Response(
            status, content=orjson.dumps(body), headers={"Sforce-Limit-Info": f"api-usage={self.used}/15000"}
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/services/oauth2/token":
            form = dict(urllib.parse.parse_qsl(request.content.decode()))
            if form.get("client_secret") != "sf-secret":
                return httpx.Response(
                    400, json={"error": "invalid_client", "error_description": "invalid client credentials"}
                )
            self.minted += 1
            token = f"00D!session{self.minted}"
            self.valid_tokens.add(token)
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "instance_url": "https://org.my.salesforce.test",
                    "token_type": "Bearer",
                },
            )
        body = orjson.loads(request.content) if request.content else None
        self.requests.append((request.method, path, body))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.expire_next:
            self.expire_next = False
            self.valid_tokens.discard(token)
        if token not in self.valid_tokens:
            return self._resp(
                401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            )
        if self.limit_exceeded:
            return self._resp(
                403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            )
        self.used += 1
        parts = path.removeprefix(API).strip("/").split("/")
        if request.method == "PATCH" and parts[:2] == ["composite", "sobjects"]:
            sobject, ext = parts[2], parts[3]
            assert body["allOrNone"] is False and len(body["records"]) <= 200
            out = []
            for rec in body["records"]:
                assert rec["attributes"]["type"] == sobject
                fields = {k: v for k, v in rec.items() if k != "attributes"}
                key = str(fields[ext]).lower()
                if "@" not in key:
                    out.append(
                        {
                            "success": False,
                            "errors": [
                                {"statusCode": "INVALID_EMAIL_ADDRESS", "message": "bad", "fields": [ext]}
                            ],
                        }
                    )
                    continue
                existing = self.records[sobject].get(key)
                if existing is None and sobject in ("Contact", "Lead") and not fields.get("LastName"):
                    out.append(
                        {
                            "success": False,
                            "errors": [
                                {
                                    "statusCode": "REQUIRED_FIELD_MISSING",
                                    "message": "Required fields are missing: [LastName]",
                                    "fields": ["LastName"],
                                }
                            ],
                        }
                    )
                    continue
                if existing is None:
                    existing = self.records[sobject][key] = {"Id": f"003{next(self.ids):012d}"}
                    created = True
                else:
                    created = False
                existing.update(fields)
                out.append({"id": existing["Id"], "success": True, "errors": [], "created": created})
            return self._resp(200, out)
        if request.method == "GET" and parts[0] == "sobjects" and len(parts) == 4:
            rec = self.records[parts[1]].get(urllib.parse.unquote(parts[3]).lower())
            if rec is None:
                return self._resp(
                    404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
                )
            return self._resp(200, rec)
        if request.method == "POST" and parts[0] == "sobjects":
            new_id = f"00T{next(self.ids):012d}"
            self.records[parts[1]][new_id] = {"Id": new_id, **body}
            return self._resp(201, {"id": new_id, "success": True, "errors": []})
        if request.method == "PATCH" and parts[0] == "sobjects" and len(parts) == 4:
            key = urllib.parse.unquote(parts[3])
            existing = self.records[parts[1]].get(key)
            if existing is None:
                new_id = f"500{next(self.ids):012d}"
                self.records[parts[1]][key] = {"Id": new_id, **body}
                return self._resp(201, {"id": new_id, "success": True, "errors": [], "created": True})
            existing.update(body)
            return httpx.Response(204)
        return self._resp(404, [{"errorCode": "NOT_FOUND", "message": path}])


@pytest.fixture
def sf(monkeypatch: pytest.MonkeyPatch) -> FakeSalesforce:
    monkeypatch.setenv("SB_TEST_SF_SECRET", "sf-secret")
    return FakeSalesforce()


def sf_config(**options: Any) -> dict[str, Any]:
    return {
        "kind": "salesforce",
        "base_url": "https://org.my.salesforce.test",
        "batch_size": 200,
        "rate_limit": {"requests": 1000, "per_seconds": 1},
        "auth": {
            "kind": "oauth2_client_credentials",
            "token_url": "https://org.my.salesforce.test/services/oauth2/token",
            "client_id": "cid",
            "client_secret": {"env": "SB_TEST_SF_SECRET"},
        },
        "options": {"tags_field": "Tags__c", "ticket_external_id_field": "ShopBotly_Command__c", **options},
    }


def write(identity: str, op: CommandOp = CommandOp.UPSERT_CONTACT, i: int = 0, **kw: Any) -> Write:
    cmd = crm_command(
        i, op, identity, command_id=f"c-{identity}-{i}", causation_event_id="e", connection="sf", **kw
    )
    return one_write(cmd)


async def test_collections_upsert_batches_and_maps_per_record_results(
    make_runtime: Any, sf: FakeSalesforce
) -> None:
    conn = SalesforceConnector(make_runtime(sf_config(), sf.transport))
    writes = [
        write(f"p{i}@x.io", fields={"email": f"p{i}@x.io", "lastname": f"L{i}", "company": "Acme"})
        for i in range(250)
    ]
    writes[3] = write("p3@x.io", fields={"firstname": "no last name"})
    writes[4] = write("not-an-email", fields={"lastname": "L4"})
    try:
        results = await asyncio.gather(*(conn.apply(w, partition=0) for w in writes), return_exceptions=True)
    finally:
        await conn.aclose()
    assert isinstance(results[4], PermanentError) and "INVALID_EMAIL_ADDRESS" in results[4].message
    assert all(
        isinstance(r, dict) and r["contact"].startswith("003") for i, r in enumerate(results) if i != 4
    )
    # A new contact without the LastName Salesforce requires gets the placeholder, in a request of its own.
    assert sf.records["Contact"]["p3@x.io"]["LastName"] == PLACEHOLDER == "[not provided]"
    assert sf.records["Contact"]["p3@x.io"]["FirstName"] == "no last name"
    upserts = [b for m, p, b in sf.requests if p.endswith("/composite/sobjects/Contact/ShopBotly_Email__c")]
    assert sorted(len(b["records"]) for b in upserts) == [1, 50, 200]
    rec = sf.records["Contact"]["p7@x.io"]
    assert (
        rec["LastName"] == "L7" and rec["Email"] == "p7@x.io" and "Company" not in rec
    )  # Contact has no Company


async def test_leads_tags_notes_and_idempotent_cases(make_runtime: Any, sf: FakeSalesforce) -> None:
    conn = SalesforceConnector(make_runtime(sf_config(), sf.transport))
    try:
        lead = await conn.apply(
            write("l@x.io", CommandOp.UPSERT_LEAD, fields={"lastname": "L", "company": "Acme"}), partition=0
        )
        await conn.apply(write("c@x.io", fields={"lastname": "C"}), partition=0)
        sf.records["Contact"]["c@x.io"]["Tags__c"] = "existing"
        conn.cache.drop("c@x.io")
        await conn.apply(write("c@x.io", CommandOp.ADD_TAGS, i=1, tags=["new", "existing"]), partition=0)
        note = await conn.apply(
            write("c@x.io", CommandOp.ADD_NOTE, i=2, body="Called back\nAll good"), partition=0
        )
        case = write("c@x.io", CommandOp.CREATE_TICKET, i=3, body="Broken item", fields={"priority": "High"})
        first = await conn.apply(case, partition=0)
        again = await conn.apply(case, partition=0)  # a replay: the same case, found by its external id
    finally:
        await conn.aclose()
    assert sf.records["Lead"]["l@x.io"]["Company"] == "Acme" and lead["lead"].startswith("003")
    assert sf.records["Contact"]["c@x.io"]["Tags__c"] == "existing;new"
    task = sf.records["Task"][note["note"]]
    assert task["WhoId"] == note["contact"] and task["Subject"] == "Called back"
    cases = list(sf.records["Case"].values())
    assert len(cases) == 1 and cases[0]["Priority"] == "High" and first["ticket"] == again["ticket"]


async def test_expired_session_is_reminted_once(make_runtime: Any, sf: FakeSalesforce) -> None:
    conn = SalesforceConnector(make_runtime(sf_config(), sf.transport))
    try:
        await conn.apply(write("a@x.io", fields={"lastname": "A"}), partition=0)
        sf.expire_next = True
        await conn.apply(write("b@x.io", fields={"lastname": "B"}), partition=0)
    finally:
        await conn.aclose()
    assert sf.minted == 2 and "b@x.io" in sf.records["Contact"]


async def test_request_limit_exceeded_is_an_outage(make_runtime: Any, sf: FakeSalesforce) -> None:
    rt = make_runtime(sf_config(), sf.transport)
    conn = SalesforceConnector(rt)
    sf.limit_exceeded = True
    try:
        with pytest.raises(OutageError):
            await conn.apply(write("a@x.io", fields={"lastname": "A"}), partition=0)
    finally:
        await conn.aclose()
    assert rt.circuit_state is CircuitState.OPEN


async def test_tags_without_a_tags_field_are_dropped_or_dead_lettered_by_policy(
    make_runtime: Any, sf: FakeSalesforce
) -> None:
    cfg = sf_config()
    cfg["options"].pop("tags_field")
    conn = SalesforceConnector(make_runtime(cfg, sf.transport))
    try:
        tagged = write("b@x.io", CommandOp.UPSERT_CONTACT, tags=["x"], fields={"lastname": "B"})
        result = await conn.apply(tagged, partition=0)
    finally:
        await conn.aclose()
    assert result["dropped_properties"] == "tags" and result["contact"].startswith("003")
    assert sf.records["Contact"]["b@x.io"]["LastName"] == "B"  # the fields the org has still land
    assert not any(k.lower().startswith("tags") for k in sf.records["Contact"]["b@x.io"])

    strict = sf_config(unknown_properties="dead_letter")
    strict["options"].pop("tags_field")
    conn = SalesforceConnector(make_runtime(strict, sf.transport))
    try:
        with pytest.raises(PermanentError, match="tags_field"):
            await conn.apply(write("a@x.io", CommandOp.ADD_TAGS, tags=["x"]), partition=0)
        with pytest.raises(PermanentError, match="cannot apply notify_bot"):
            conn.kind_of(CommandOp.NOTIFY_BOT)
    finally:
        await conn.aclose()


# -- against the CRM emulator: a fresh org, ShopBotly's identity field created as `connections setup` does --

ORG = "https://org.test"


@pytest.fixture
async def org(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Emulator]:
    monkeypatch.setenv("SB_TEST_SF_SECRET", "emulator-sf-secret")
    app = create_app(EmulatorSettings(seed=7))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=ORG) as client,
    ):
        emu = Emulator(app, client, Clock(), app.state.runtime)
        for sobject in ("Lead", "Contact"):
            await emu.create_field(sobject, "ShopBotly_Email__c", external_id=True, unique=True)
        yield emu


def org_connector(make_runtime: Any, org: Emulator, **options: Any) -> SalesforceConnector:
    config = {
        "kind": "salesforce",
        "base_url": ORG,
        "rate_limit": {"requests": 1000, "per_seconds": 1},
        "auth": {
            "kind": "oauth2_client_credentials",
            "token_url": f"{ORG}/services/oauth2/token",
            "client_id": "emulator-sf-client",
            "client_secret": {"env": "SB_TEST_SF_SECRET"},
        },
        "options": options,
    }
    return SalesforceConnector(make_runtime(config, httpx.ASGITransport(app=org.app)))


async def record(org: Emulator, sobject: str, email: str) -> dict[str, Any]:
    response = await org.client.get(
        f"/services/data/v61.0/sobjects/{sobject}/ShopBotly_Email__c/{email}", headers=await org.sf_token()
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def dropped(sobject: str) -> float:
    return DROPPED_PROPERTIES.labels("t:crm", sobject)._value.get()


async def test_fields_the_org_lacks_are_dropped_and_the_rest_lands(make_runtime: Any, org: Emulator) -> None:
    sf = org_connector(make_runtime, org)
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
    sf = org_connector(make_runtime, org, state_ttl_s=0)
    try:
        later = await sf.apply(write("cy@example.com", CommandOp.UPSERT_CONTACT, fields=fields), partition=0)
    finally:
        await sf.aclose()
    assert later["dropped_properties"] == "Seats__c"
    assert (await record(org, "Contact", "cy@example.com"))["Plan__c"] == "pro"


async def test_dead_letter_policy_refuses_the_command(make_runtime: Any, org: Emulator) -> None:
    sf = org_connector(make_runtime, org, unknown_properties="dead_letter")
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
    sf = org_connector(make_runtime, org)
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


async def test_a_tags_field_the_org_lacks_drops_the_tags_not_the_contact(
    make_runtime: Any, org: Emulator
) -> None:
    sf = org_connector(make_runtime, org, tags_field="ShopBotly_Tags__c")
    try:
        tagged = write("tia@example.com", CommandOp.UPSERT_CONTACT, tags=["vip"], fields={"lastname": "Tia"})
        result = await sf.apply(tagged, partition=0)
    finally:
        await sf.aclose()
    assert result["dropped_properties"] == "ShopBotly_Tags__c"
    assert (await record(org, "Contact", "tia@example.com"))["LastName"] == "Tia"
