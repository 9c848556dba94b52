"""The webhook route served before FastAPI's middleware stack and router (IngestApi): it matches exactly the
paths the router would, answers exactly what the documented model says, and fails like any other route."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from starlette.routing import compile_path

from shopbotly.ingest import intake
from shopbotly.ingest.app import IngestApi, create_app
from shopbotly.ingest.schemas import WebhookAccepted, webhook_accepted_json
from shopbotly.ingest.settings import Settings
from shopbotly.ingest.webhook_routes import PATH, webhook_path
from shopbotly.testkit.ingest import BASE_URL, demo_config, signed_headers

pytestmark = pytest.mark.component

EVENT = orjson.dumps({"type": "contact.created", "data": {"email": "jane@example.com"}})


@pytest.mark.parametrize(
    "path",
    [
        "/v1/webhooks/acme/shopbotly",
        "/v1/webhooks/acme/shopbotly/",
        "/v1/webhooks/acme/",
        "/v1/webhooks//shopbotly",
        "/v1/webhooks/acme",
        "/v1/webhooks/a/b/c",
        "/v1/webhooks/a b/ü%2F",
        "/v1/webhooks/acme/shopbotly\n",
        "/v1/webhook/acme/shopbotly",
        "//v1/webhooks/acme/shopbotly",
        "/api/v1/leads",
    ],
)
def test_the_fast_path_matches_what_the_router_matches(path: str) -> None:
    regex, _, _ = compile_path(PATH)
    match = regex.match(path)
    assert webhook_path(path) == (None if match is None else (match["tenant"], match["source"]))


@pytest.mark.parametrize(
    ("ids", "published"), [([], 0), (["evt_1"], 1), (["evt_1"], 0), (["a", "b", 'ü"\\'], 2)]
)
def test_the_written_answer_is_the_documented_model(ids: list[str], published: int) -> None:
    model = WebhookAccepted(
        event_id=ids[0] if ids else None,
        event_ids=ids,
        published=published,
        duplicate=bool(ids) and not published,
    )
    assert orjson.loads(webhook_accepted_json(ids, published)) == model.model_dump(mode="json")
    assert WebhookAccepted.model_validate_json(webhook_accepted_json(ids, published)) == model


@pytest.fixture
def app(offline_settings: Settings) -> IngestApi:
    return create_app(offline_settings, demo_config())


@pytest.fixture
async def client(app: IngestApi) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def test_a_bug_on_the_fast_path_is_a_500_problem_like_on_any_route(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object, **__: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(intake.Intake, "webhook", broken)
    resp = await client.post(
        "/v1/webhooks/acme/shopbotly", content=EVENT, headers=signed_headers("shopbotly", EVENT)
    )
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["detail"] == "an unexpected error occurred; it has been logged"


async def test_a_body_in_several_chunks_is_read_whole(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(EVENT), 7):
            yield EVENT[i : i + 7]

    # Kafka is not started: a body that was read whole and verified gets 503 (a torn one would be a 401).
    resp = await client.post(
        "/v1/webhooks/acme/shopbotly", content=chunks(), headers=signed_headers("shopbotly", EVENT)
    )
    assert resp.status_code == 503, resp.text


async def test_under_a_root_path_the_router_serves_the_route_the_same_way(app: IngestApi) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/ingest")
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        path = "/ingest/v1/webhooks/acme/shopbotly"
        resp = await client.post(path, content=EVENT, headers=signed_headers("shopbotly", EVENT))
        assert resp.status_code == 503, resp.text
        resp = await client.post(path, content=EVENT, headers=signed_headers("shopbotly", b"{}"))
        assert (resp.status_code, resp.json()["code"]) == (401, "invalid_signature")
        resp = await client.post("/ingest/v1/webhooks/acme/nothing", content=EVENT)
        assert (resp.status_code, resp.json()["code"]) == (404, "unknown_source")
