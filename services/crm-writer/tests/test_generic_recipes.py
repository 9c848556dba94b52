"""Generic recipes without a broker: the documented Pipedrive and EspoCRM recipes, response rules, value maps,
reasons kept verbatim, remembered ids (httpx.MockTransport answering in each CRM's documented shapes)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from shopbotly.common.config import parse_connection
from shopbotly.common.config.crm_kinds.generic import GenericOptions
from shopbotly.common.errors import AuthError, PermanentError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.connectors.generic import GenericConnector, classify_generic, crm_reason
from shopbotly.crm_writer.domain import Write
from shopbotly.crm_writer.verdict import VerdictKind
from shopbotly.testkit.crm_writer import crm_command, one_write

pytestmark = pytest.mark.component

DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "crm-writer.md"


def documented_recipes() -> dict[str, Any]:
    section = DOC.read_text().split("### Generic REST (`kind: generic`)", 1)[1]
    loaded: dict[str, Any] = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    return loaded


def write(n: int, op: CommandOp, identity: str = "ann@example.com", **kw: Any) -> Write:
    return one_write(crm_command(n, op, identity, **kw))


class FakeCrm:
    """People by e-mail; records every request as (METHOD, path, query, JSON body)."""

    def __init__(self, answer: Any) -> None:
        self.people: dict[str, int] = {}
        self.ids = itertools.count(101)
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []
        self.answer = answer
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, dict(request.url.params), body))
        status, answer = self.answer(self, request, body)
        return httpx.Response(status, json=answer)


def pipedrive(crm: FakeCrm, request: httpx.Request, body: Any) -> tuple[int, Any]:
    assert request.headers["x-api-token"] == "pd-token"
    path = request.url.path
    if path == "/api/v1/persons/search":
        found = crm.people.get(request.url.params["term"])
        items = [{"result_score": 1, "item": {"id": found, "type": "person"}}] if found else []
        return 200, {"success": True, "data": {"items": items}}
    if (request.method, path) == ("POST", "/api/v1/persons"):
        crm.people[body["email"][0]["value"]] = new = next(crm.ids)
        return 201, {"success": True, "data": {"id": new, "name": body["name"]}}
    if request.method == "PUT" and path.startswith("/api/v1/persons/"):
        return 200, {"success": True, "data": {"id": int(path.rsplit("/", 1)[1])}}
    if path == "/api/v1/notes":
        return 201, {"success": True, "data": {"id": 9001, "person_id": body["person_id"]}}
    return 404, {"success": False, "error": "Unknown method ."}


def espocrm(crm: FakeCrm, request: httpx.Request, body: Any) -> tuple[int, Any]:
    assert request.headers["x-api-key"] == "espo-key"
    path = request.url.path
    if request.method == "GET" and path == "/api/v1/Lead":
        found = crm.people.get(request.url.params["where[0][value]"])
        return 200, {"total": int(bool(found)), "list": [{"id": f"L{found}"}] if found else []}
    if (request.method, path) == ("POST", "/api/v1/Lead"):
        if body["emailAddress"] in crm.people:
            return 409, [{"id": f"L{crm.people[body['emailAddress']]}", "name": "dup"}]
        crm.people[body["emailAddress"]] = new = next(crm.ids)
        return 200, {"id": f"L{new}", **body}
    if request.method == "PUT" and path.startswith("/api/v1/Lead/"):
        return 200, {"id": path.rsplit("/", 1)[1]}
    if path == "/api/v1/Note":
        return 200, {"id": "N1", **body}
    return 404, None


@pytest.mark.parametrize(
    ("name", "answer", "env"),
    [("pipedrive", pipedrive, "ACME_PIPEDRIVE_TOKEN"), ("espocrm", espocrm, "ACME_ESPOCRM_KEY")],
)
async def test_documented_recipes_find_then_create_or_update(
    name: str, answer: Any, env: str, make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, "pd-token" if name == "pipedrive" else "espo-key")
    cfg = parse_connection(documented_recipes()[name])
    crm = FakeCrm(answer)
    op = CommandOp.UPSERT_CONTACT if name == "pipedrive" else CommandOp.UPSERT_LEAD
    first = GenericConnector(make_runtime(cfg, crm.transport))
    ids = await first.apply(write(1, op, fields={"firstname": "Ann", "phone": "+1 555"}), partition=0)
    # A fresh replica (nothing remembered) updates the same person instead of creating a second.
    second = GenericConnector(make_runtime(cfg, crm.transport))
    again = await second.apply(write(2, op, fields={"lastname": "Lee"}), partition=0)
    assert again == ids and len(crm.people) == 1
    note = await second.apply(write(3, CommandOp.ADD_NOTE, body="called"), partition=0)
    assert note["record"] == next(iter(ids.values()))
    assert await second.apply(write(4, CommandOp.ADD_TAGS, tags=["vip"]), partition=0) == {}
    methods = [(m, p.rsplit("/", 1)[0] if p[-1].isdigit() else p) for m, p, _, _ in crm.seen]
    if name == "pipedrive":
        assert methods == [
            ("GET", "/api/v1/persons/search"),
            ("POST", "/api/v1/persons"),
            ("GET", "/api/v1/persons/search"),
            ("PUT", "/api/v1/persons"),
            ("POST", "/api/v1/notes"),  # the id is remembered: no second search
        ]
        created = crm.seen[1][3]
        assert created == {
            "name": "Ann",
            "email": [{"value": "ann@example.com", "primary": True}],
            "phone": [{"value": "+1 555", "primary": True}],
        }
        assert crm.seen[3][3]["name"] == "Lee" and "phone" not in crm.seen[3][3]
        assert crm.seen[4][3] == {"content": "called", "person_id": 101}
    else:
        assert [m for m, _ in methods] == ["GET", "POST", "GET", "PUT", "POST"]
        assert crm.seen[1][3] == {
            "emailAddress": "ann@example.com",
            "firstName": "Ann",
            "lastName": "ann@example.com",
            "phoneNumber": "+1 555",
        }
        assert crm.seen[4][3]["parentId"] == "L101"


async def test_espocrm_duplicate_answer_converges_with_lookup_on_duplicate(
    make_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_ESPOCRM_KEY", "espo-key")
    raw = documented_recipes()["espocrm"]
    raw["options"]["operations"]["upsert_lead"]["lookup"] = "on_duplicate"
    crm = FakeCrm(espocrm)
    crm.people["ann@example.com"] = 7  # created by a request whose answer was lost
    conn = GenericConnector(make_runtime(parse_connection(raw), crm.transport))
    assert await conn.apply(write(1, CommandOp.UPSERT_LEAD), partition=0) == {"lead": "L7"}
    assert [(m, p) for m, p, _, _ in crm.seen] == [
        ("POST", "/api/v1/Lead"),
        ("GET", "/api/v1/Lead"),
        ("PUT", "/api/v1/Lead/L7"),
    ]


def test_the_crm_reason_is_kept_not_its_error_flag() -> None:
    body = {"error": True, "errors": {"phone": ["Enter a valid phone number"]}}
    assert crm_reason(body) == '{"phone":["Enter a valid phone number"]}'
    verdict = classify_generic(httpx.Response(400, json=body), frozenset({201}))
    assert verdict.message == 'CRM answered 400: {"phone":["Enter a valid phone number"]}'
    assert crm_reason({"error": {"code": "x", "message": "y"}}) == "x: y"
    assert crm_reason({"detail": "Invalid token."}, "errors") == "Invalid token."  # fallback


def test_response_rules_come_before_the_default_classes() -> None:
    cfg = parse_connection(
        {
            "kind": "generic",
            "base_url": "https://crm",
            "options": {
                "responses": {
                    "message": "errors",
                    "rules": [
                        {"status": [400], "when": "errors.email", "outcome": "duplicate"},
                        {"status": [403], "outcome": "auth"},
                        {"status": [200], "when": "error", "outcome": "permanent"},
                        {"status": [404], "outcome": "applied"},
                    ],
                }
            },
        }
    )
    assert isinstance(cfg.options, GenericOptions)
    rules = cfg.options.responses

    def kind(status: int, body: Any = None) -> VerdictKind:
        return classify_generic(httpx.Response(status, json=body), frozenset({200, 201}), rules).kind

    assert kind(400, {"errors": {"email": ["exists"]}}) is VerdictKind.DUPLICATE
    assert kind(400, {"errors": {"phone": ["bad"]}}) is VerdictKind.PERMANENT
    assert kind(403) is VerdictKind.AUTH
    assert kind(200, {"error": "quota"}) is VerdictKind.PERMANENT
    assert kind(200, {"id": 1}) is VerdictKind.OK
    assert kind(404) is VerdictKind.OK


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"operations": {"upsert_lead": {"lookup": "on_duplicate"}}}, "options.operations.upsert_lead"),
        ({"operations": {"add_note": {"path": "/x/{record_id"}}}, "options.operations.add_note.path"),
        ({"responses": {"rules": [{"status": [400], "outcome": "maybe"}]}}, "options.responses.rules.0"),
        (
            {"operations": {"default": {"value_maps": {"labels": {}}}}},
            "options.operations.default.value_maps",
        ),
    ],
)
def test_recipe_mistakes_are_load_errors_naming_the_field(options: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        parse_connection({"kind": "generic", "base_url": "https://crm", "options": options})


async def test_value_maps_and_a_remembered_id_that_is_gone(make_runtime: Any) -> None:
    seen: list[tuple[str, str, Any]] = []
    leads = {"ann@example.com": 5}

    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.method == "GET":
            found = leads.get(request.url.params["email"])
            return httpx.Response(200, json={"results": [{"id": found}] if found else []})
        if request.method == "PATCH":
            gone = int(request.url.path.split("/")[3]) not in leads.values()
            return (
                httpx.Response(404, json={"detail": "Not found."}) if gone else httpx.Response(200, json={})
            )
        return httpx.Response(201, json={"id": 9})

    find = {
        "method": "GET",
        "path": "/api/leads/",
        "query": {"email": "{identity}"},
        "id_field": "results[0].id",
    }
    lead = {"tags": "{tags}", "size": "{fields.size}"}
    cfg = {
        "kind": "generic",
        "base_url": "https://crm",
        "options": {
            "operations": {
                "default": {
                    "find": find,
                    "path": "/api/leads/",
                    "body": lead,
                    "update": {"method": "PATCH", "path": "/api/leads/{record_id}/", "body": lead},
                    "value_maps": {"tags": {"vip": 1}, "fields.size": {"L": "large"}},
                }
            }
        },
    }
    conn = GenericConnector(make_runtime(cfg, httpx.MockTransport(handle)))
    await conn.apply(write(1, CommandOp.UPSERT_CONTACT, tags=["vip"], fields={"size": "L"}), partition=0)
    assert seen[-1] == ("PATCH", "/api/leads/5/", {"tags": [1], "size": "large"})
    with pytest.raises(PermanentError, match=r"value_maps\.tags has no entry for 'gold'"):
        await conn.apply(write(2, CommandOp.UPSERT_CONTACT, tags=["gold"]), partition=0)
    leads["ann@example.com"] = 6  # merged in the CRM: the remembered 5 is gone
    seen.clear()
    await conn.apply(write(3, CommandOp.UPSERT_CONTACT, fields={"size": "L"}), partition=0)
    assert [(m, p) for m, p, _ in seen] == [
        ("PATCH", "/api/leads/5/"),
        ("GET", "/api/leads/"),
        ("PATCH", "/api/leads/6/"),
    ]


async def test_a_403_configured_as_auth_reads_the_secret_file_again(
    make_runtime: Any, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    presented: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        presented.append(request.headers["authorization"])
        if request.headers["authorization"] != "Bearer new":
            return httpx.Response(403, json={"detail": "Invalid token."})
        return httpx.Response(201, json={"id": 1})

    cfg = {
        "kind": "generic",
        "base_url": "https://crm",
        "auth": {"kind": "bearer", "token": {"file": str(token)}},
        "options": {"responses": {"rules": [{"status": [403], "outcome": "auth"}]}},
    }
    conn = GenericConnector(make_runtime(cfg, httpx.MockTransport(handle)))
    with pytest.raises(AuthError, match="403: Invalid token"):
        await conn.apply(write(1, CommandOp.UPSERT_CONTACT), partition=0)
    token.write_text("new")
    assert await conn.apply(write(2, CommandOp.UPSERT_CONTACT), partition=0) == {"contact": "1"}
    assert presented == ["Bearer old", "Bearer old", "Bearer old", "Bearer new"]
