"""The connections page: every crm-writer replica's `GET /connections`, merged as the CLI merges them."""

from __future__ import annotations

import httpx
import pytest

from shopbotly.common.kafka import KafkaSettings
from shopbotly.console.app import create_app
from shopbotly.console.replicas import resolve_host
from shopbotly.testkit.console import OPERATOR_KEYS, console_settings

pytestmark = pytest.mark.component

REPLICAS = {
    "w1": [{"connection": "demo:hubspot", "held": 2, "oldest_held_age_s": 40.0, "circuit": "open",
            "circuit_reason": "5 failures in 30 s", "throttled": 1, "window_remaining": 90}],
    "w2": [{"connection": "demo:hubspot", "held": 3, "oldest_held_age_s": 12.0, "circuit": "closed",
            "throttled": 2, "window_remaining": 80},
           {"connection": "acme:salesforce", "held": 0, "circuit": "closed", "throttled": 0}],
}  # fmt: skip


def writers(request: httpx.Request) -> httpx.Response:
    rows = REPLICAS.get(request.url.host)
    if rows is None:
        return httpx.Response(503)
    return httpx.Response(200, json={"connections": rows})


async def page_as(who: str) -> str:
    settings = console_settings(
        KafkaSettings(), console_writer_urls=["http://w1:9102", "http://w2:9102", "http://w3:9102"]
    )
    app = create_app(settings, consume=False, writer_transport=httpx.MockTransport(writers))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://console", headers={"Accept": "text/html"}
    ) as client:
        signed = await client.post("/login", data={"key": OPERATOR_KEYS[who], "next": "/connections"})
        assert signed.status_code == 303
        answer = await client.get("/connections")
        assert answer.status_code == 200
        return answer.text


async def test_connections_are_merged_over_replicas_and_scoped_to_the_operators_tenants() -> None:
    page = await page_as("viewer")
    assert "2 of 3 crm-writer replica(s) answered" in page and "unreachable: http://w3:9102" in page
    row = page.split("<td>demo:hubspot</td>", 1)[1].split("</tr>", 1)[0]
    assert ">open</span> 5 failures in 30 s" in row  # the worst circuit wins
    assert "<td>5</td>" in row and "<td>40 s</td>" in row and "<td>80</td>" in row and "<td>3</td>" in row
    assert "acme:salesforce" in page
    scoped = await page_as("acme-only")
    assert "acme:salesforce" in scoped and "demo:hubspot" not in scoped


async def test_a_dns_url_merges_every_replica_the_headless_service_resolves_to() -> None:
    """`dns+http://crm-writer-replicas:9102` is looked up on each load: each address is one replica."""
    answers = {"crm-writer-replicas": ["10.0.0.2", "10.0.0.1"], "gone": []}
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return sorted(answers[host])

    def by_address(request: httpx.Request) -> httpx.Response:
        rows = {"10.0.0.1": REPLICAS["w1"], "10.0.0.2": REPLICAS["w2"]}.get(request.url.host)
        return httpx.Response(200, json={"connections": rows}) if rows else httpx.Response(503)

    urls = ["dns+http://crm-writer-replicas:9102", "dns+http://gone:9102", "dns+http://nowhere:9102"]
    app = create_app(
        console_settings(KafkaSettings(), console_writer_urls=urls),
        consume=False,
        writer_transport=httpx.MockTransport(by_address),
        resolver=resolver,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console", headers={"Accept": "text/html"}
    ) as client:
        await client.post("/login", data={"key": OPERATOR_KEYS["viewer"], "next": "/connections"})
        page = (await client.get("/connections")).text
    assert "2 of 2 crm-writer replica(s) answered" in page
    row = page.split("<td>demo:hubspot</td>", 1)[1].split("</tr>", 1)[0]
    assert "<td>5</td>" in row  # held: 2 on one replica + 3 on the other
    assert "dns+http://gone:9102: gone has no address (no ready replica)" in page
    assert "dns+http://nowhere:9102: cannot resolve nowhere (Name or service not known)" in page
    assert ("crm-writer-replicas", 9102) in asked


async def test_the_default_resolver_asks_the_systems_resolver() -> None:
    assert "127.0.0.1" in await resolve_host("localhost", 9102)
