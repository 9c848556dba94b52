"""Hostile and unusual requests against ingest served by the shared HTTP runner over a real socket, with the
producer on the real broker: every nesting depth gets 202 or a 4xx problem (never a 5xx) on one kept-alive
connection, for every source kind and the lead API; Svix-named headers signed by the official `svix`
library are accepted; nothing redirects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest
from svix.webhooks import Webhook

from shopbotly.common.events import RawEvent
from shopbotly.common.http import ServiceServer
from shopbotly.common.kafka import KafkaSettings
from shopbotly.ingest.__main__ import uvicorn_config
from shopbotly.ingest.app import create_app
from shopbotly.ingest.domain import MAX_JSON_DEPTH
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import API_KEY, SECRETS, demo_config, read_topic, signed_headers

pytestmark = pytest.mark.integration

DEPTHS = [100, 255, 260, 1_000, 10_000]


@dataclass
class Served:
    server: ServiceServer
    port: int


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings, demo_config())
    server = ServiceServer(uvicorn_config(app, settings, port=0), app.state.runtime.health)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.02)
        assert await app.state.runtime.publisher.wait_ready(30)
        yield Served(server, server.port)
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task


class Connection:
    """One HTTP/1.1 connection, used for request after request: a reset or close fails the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        answer = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        content = await self.reader.readexactly(int(answer.get("content-length", "0")))
        return int(status_line.split()[1]), answer, content


@pytest.fixture
async def connection(served: Served) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    yield Connection(reader, writer, f"127.0.0.1:{served.port}")
    writer.close()


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _with_deep(base: object, depth: int) -> bytes:
    """`base` (an object, or HubSpot's array of one object) with a "deep" member making the body exactly
    `depth` levels deep."""
    if isinstance(base, list):
        return b"[" + orjson.dumps(base[0])[:-1] + b',"deep":' + _nested(depth - 2) + b"}]"
    return orjson.dumps(base)[:-1] + b',"deep":' + _nested(depth - 1) + b"}"


def _delivery(kind: str, n: str) -> tuple[object, dict[str, str]]:
    """A body and extra headers an event of `kind` needs to be identified (id, type)."""
    match kind:
        case "shopbotly" | "standard_webhooks":
            return {"type": "deep.test", "data": {"email": "d@example.com"}}, {}
        case "shopify":
            return {"id": 1, "email": "d@example.com"}, {"x-shopify-webhook-id": n, "x-shopify-topic": "t/x"}
        case "github":
            return {"sender": {"login": "o"}}, {"x-github-delivery": n, "x-github-event": "issues"}
        case "slack":
            return {"event_id": n, "type": "event_callback"}, {}
        case "intercom":
            return {"id": n, "topic": "contact.created"}, {}
        case "hubspot":
            return [{"eventId": n, "subscriptionType": "contact.creation", "objectId": 1}], {}
        case _:  # stripe, generic_hmac
            return {"id": n, "type": "deep.test"}, {}


@pytest.mark.parametrize("kind", list(SECRETS))
async def test_every_depth_is_accepted_or_refused_with_a_4xx_on_a_surviving_connection(
    connection: Connection, kafka_settings: KafkaSettings, kind: str
) -> None:
    path = f"/v1/webhooks/acme/{kind}"
    for depth in DEPTHS:
        n = f"deep-{kind}-{depth}"
        base, extra = _delivery(kind, n)
        body = _with_deep(base, depth)
        headers = signed_headers(kind, body, msg_id=n, url=f"http://{connection.host}{path}", extra=extra)
        status, answer, content = await connection.request("POST", path, body, headers)
        if depth <= MAX_JSON_DEPTH:
            assert status == 202, (depth, content)
        else:
            assert status == 400, (depth, content)
            assert answer["content-type"] == "application/problem+json"
            problem = orjson.loads(content)
            assert problem["code"] == "too_deep" and str(MAX_JSON_DEPTH) in problem["detail"]
    # The connection is still the same one and still answers.
    status, _, _ = await connection.request("GET", "/healthz")
    assert status == 200
    # What was accepted is readable by every consumer of raw-events (pydantic parses the envelope).
    records = await read_topic(kafka_settings, expected=1)
    assert [RawEvent.from_json(r.value).id for r in records] == [f"deep-{kind}-100"]


async def test_every_depth_of_a_lead_is_refused_with_a_4xx_on_a_surviving_connection(
    connection: Connection,
) -> None:
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    for depth in DEPTHS:
        body = _with_deep({"email": "d@example.com"}, depth)
        status, answer, content = await connection.request("POST", "/api/v1/leads", body, headers)
        # A lead has no member that nests: too deep to read (400), or an unknown field (422).
        assert (status, orjson.loads(content)["code"]) == (
            (422, "invalid_lead") if depth <= MAX_JSON_DEPTH else (400, "too_deep")
        ), depth
        assert answer["content-type"] == "application/problem+json"
    status, _, _ = await connection.request(
        "POST", "/api/v1/leads", orjson.dumps({"email": "d@example.com"}), headers
    )
    assert status == 202


@pytest.mark.parametrize("kind", ["shopbotly", "standard_webhooks"])
async def test_svix_named_headers_signed_by_the_svix_library_are_accepted(
    connection: Connection, kafka_settings: KafkaSettings, kind: str
) -> None:
    body = orjson.dumps({"type": "invoice.paid", "data": {"email": "svix@example.com"}})
    msg_id = f"msg_svix_{kind}"
    now = datetime.now(tz=UTC)
    signature = Webhook(SECRETS[kind]).sign(msg_id, now, body.decode())
    headers = {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
    }
    status, _, content = await connection.request("POST", f"/v1/webhooks/acme/{kind}", body, headers)
    assert status == 202, content
    assert orjson.loads(content)["event_id"] == msg_id
    # The svix library's own verifier agrees with what was sent.
    Webhook(SECRETS[kind]).verify(body, headers)
    tampered = {**headers, "svix-signature": Webhook(SECRETS[kind]).sign(msg_id, now, "{}")}
    status, _, content = await connection.request("POST", f"/v1/webhooks/acme/{kind}", body, tampered)
    assert (status, orjson.loads(content)["code"]) == (401, "invalid_signature")
    records = await read_topic(kafka_settings, expected=1)
    assert [RawEvent.from_json(r.value).id for r in records] == [msg_id]


async def test_no_redirect_is_built_from_the_host_header(connection: Connection) -> None:
    body = orjson.dumps({"type": "x"})
    for method, path in (
        ("POST", "/v1/webhooks/demo/shopbotly/"),
        ("POST", "/v1/webhooks/acme/shopbotly/"),
        ("POST", "/api/v1/leads/"),
        ("GET", "/healthz/"),
        ("GET", "//evil.example.com/"),
    ):
        connection.host = "evil.example.com"
        status, answer, content = await connection.request(
            method, path, body, signed_headers("shopbotly", body, now=time.time())
        )
        assert status == 404 and "location" not in answer, (path, status, answer)
        assert answer["content-type"] == "application/problem+json"
        assert orjson.loads(content)["code"] == "not_found"
