"""The lookup API in-process over a real store, no Kafka: auth, isolation, errors, ETags, read-through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import orjson
import pytest

from shopbotly.common.config import parse_config
from shopbotly.order_reader.domain import Kind
from shopbotly.testkit.order_reader import KEYS, T0, ServeFactory, auth, config_data, minutes, order, ticket

pytestmark = pytest.mark.component


async def test_fetch_order_answers_the_stored_order_with_etag_and_cache_control(start: ServeFactory) -> None:
    async with start() as r:
        o = order()
        r.load([o])
        resp = await r.client.get("/api/v1/orders/1001", headers=auth())
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == orjson.loads(o.to_json())
        assert resp.headers["etag"].startswith('"') and resp.headers["etag"].endswith('"')
        assert resp.headers["cache-control"] == "private, max-age=5"
        assert resp.headers["vary"] == "Authorization"
        assert r.metric("shopbotly_order_reader_lookups_total", kind="order", outcome="found") == 1


async def test_if_none_match_gives_304_until_the_order_changes(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order()])
        etag = (await r.client.get("/api/v1/orders/1001", headers=auth())).headers["etag"]
        for sent in (etag, f"W/{etag}", f'"other", {etag}'):
            resp = await r.client.get("/api/v1/orders/1001", headers={**auth(), "If-None-Match": sent})
            assert resp.status_code == 304 and resp.content == b"" and resp.headers["etag"] == etag
        r.load([order(status="cancelled", cancelled_at=T0 + minutes(3))])
        resp = await r.client.get("/api/v1/orders/1001", headers={**auth(), "If-None-Match": etag})
        assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
        assert resp.headers["etag"] != etag
        assert r.metric("shopbotly_order_reader_lookups_total", kind="order", outcome="not_modified") == 3


async def test_missing_or_bad_keys_are_401_with_a_challenge(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order()])
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS['acme']}"}):
            resp = await r.client.get("/api/v1/orders/1001", headers=headers)
            assert resp.status_code == 401
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert resp.json()["status"] == 401 and resp.json()["detail"]
        assert r.metric("shopbotly_order_reader_lookups_total", kind="order", outcome="unauthorized") == 3


async def test_a_key_without_the_scope_is_403(start: ServeFactory) -> None:
    async with start() as r:
        r.load([ticket()])
        resp = await r.client.get("/api/v1/tickets/T-1", headers=auth("acme-orders-only"))
        assert resp.status_code == 403 and "tickets" in resp.json()["detail"]


async def test_another_tenants_id_answers_exactly_like_an_unknown_id(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order(tenant="acme", order_id="A-1"), ticket(tenant="acme", ticket_id="T-9")])
        foreign = await r.client.get("/api/v1/orders/A-1", headers=auth("globex"))
        unknown = await r.client.get("/api/v1/orders/A-2", headers=auth("globex"))
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.content == unknown.content
        assert dict(foreign.headers) == dict(unknown.headers)
        t_foreign = await r.client.get("/api/v1/tickets/T-9", headers=auth("globex"))
        t_unknown = await r.client.get("/api/v1/tickets/T-8", headers=auth("globex"))
        assert (t_foreign.status_code, t_foreign.content) == (404, t_unknown.content)
        page = await r.client.get("/api/v1/customers/jane@example.com/orders", headers=auth("globex"))
        assert page.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("path", "mentions"),
    [
        ("/api/v1/orders/a%20b", "order_id"),
        ("/api/v1/orders/" + "x" * 129, "order_id"),
        ("/api/v1/tickets/a%09b", "ticket_id"),
        ("/api/v1/customers/not-an-email/orders", "email"),
        ("/api/v1/customers/jane@example.com/orders?limit=0", "limit"),
        ("/api/v1/customers/jane@example.com/orders?limit=101", "limit"),
        ("/api/v1/customers/jane@example.com/orders?limit=ten", "limit"),
        ("/api/v1/customers/jane@example.com/orders?cursor=garbage", "cursor"),
        ("/api/v1/customers/jane@example.com/tickets?cursor=WyJvIiwwLDEsIngiXQ", "cursor"),
        ("/api/v1/customers/jane@example.com/orders?limt=5", "limt"),
        ("/api/v1/orders/1001?expand=lines", "expand"),
    ],
)
async def test_malformed_input_is_400_naming_the_parameter(
    start: ServeFactory, path: str, mentions: str
) -> None:
    async with start() as r:
        resp = await r.client.get(path, headers=auth())
        assert resp.status_code == 400
        assert resp.headers["content-type"] == "application/problem+json"
        assert mentions in resp.json()["detail"]


async def test_unknown_paths_and_methods_answer_problem_json(start: ServeFactory) -> None:
    async with start() as r:
        missing = await r.client.get("/api/v1/nothing-here", headers=auth())
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        wrong = await r.client.post("/api/v1/orders/1001", headers=auth())
        assert wrong.status_code == 405 and wrong.json()["status"] == 405


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/orders/a%2Fb",
        "/api/v1/orders/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/tickets/T%2f1",
        "/api/v1/customers/jane%2F..%40example.com/orders",
    ],
)
async def test_an_encoded_slash_in_an_id_is_400(start: ServeFactory, path: str) -> None:
    """An id or e-mail can never hold '/': sent encoded, it is a malformed parameter (as documented)."""
    async with start() as r:
        resp = await r.client.get(path, headers=auth())
        assert resp.status_code == 400, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["code"] == "encoded_slash"


async def test_nothing_redirects_and_a_trailing_slash_is_an_unknown_path(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order()])
        for path in ("/api/v1/orders/1001/", "/api/v1/customers/jane@example.com/orders/", "/healthz/"):
            resp = await r.client.get(path, headers={**auth(), "host": "evil.example.com"})
            assert resp.status_code == 404 and "location" not in resp.headers, path
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["code"] == "not_found"
        # A literal traversal is just another unknown path.
        resp = await r.client.get("/api/v1/orders/../../etc/passwd", headers=auth())
        assert resp.status_code == 404


async def test_order_history_pages_newest_first_case_insensitively(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order(order_id=f"o{m}", created=T0 + minutes(m)) for m in (3, 1, 4, 5, 2)])
        r.load([order(order_id="someone-else", email="x@example.com")])
        ids: list[str] = []
        url = "/api/v1/customers/JANE@Example.com/orders?limit=2"
        pages = 0
        while url:
            body = (await r.client.get(url, headers=auth())).json()
            ids += [o["order_id"] for o in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            url = f"/api/v1/customers/jane@example.com/orders?limit=2&cursor={cursor}" if cursor else ""
        assert ids == ["o5", "o4", "o3", "o2", "o1"]
        assert pages == 3


async def test_history_pages_have_etags_that_follow_their_items(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order(order_id="o1"), order(order_id="o2", created=T0 + minutes(1))])
        url = "/api/v1/customers/jane@example.com/orders"
        first = await r.client.get(url, headers=auth())
        tag = first.headers["etag"]
        assert (await r.client.get(url, headers={**auth(), "If-None-Match": tag})).status_code == 304
        r.load([order(order_id="o1", status="shipped")])
        again = await r.client.get(url, headers={**auth(), "If-None-Match": tag})
        assert again.status_code == 200 and again.headers["etag"] != tag


async def test_tickets_are_looked_up_and_listed_open_first_then_newest(start: ServeFactory) -> None:
    async with start() as r:
        r.load(
            [
                ticket(ticket_id="closed-new", is_open=False, created=T0 + minutes(9)),
                ticket(ticket_id="open-old", created=T0 + minutes(1)),
                ticket(ticket_id="open-new", created=T0 + minutes(8)),
                ticket(ticket_id="closed-old", is_open=False, created=T0 + minutes(2)),
            ]
        )
        one = await r.client.get("/api/v1/tickets/open-new", headers=auth())
        assert one.status_code == 200 and one.json()["ticket_id"] == "open-new" and one.headers["etag"]
        page = (await r.client.get("/api/v1/customers/jane@example.com/tickets", headers=auth())).json()
        assert [t["ticket_id"] for t in page["items"]] == ["open-new", "open-old", "closed-new", "closed-old"]
        r.load([(Kind.TICKET, "acme:open-new", None)])
        assert (await r.client.get("/api/v1/tickets/open-new", headers=auth())).status_code == 404


async def test_repeated_lookups_are_served_from_the_cache(start: ServeFactory) -> None:
    async with start() as r:
        r.load([order()])
        for _ in range(3):
            assert (await r.client.get("/api/v1/orders/1001", headers=auth())).status_code == 200
        for _ in range(2):
            assert (await r.client.get("/api/v1/orders/none", headers=auth())).status_code == 404
        assert r.metric("shopbotly_order_reader_cache_requests_total", result="miss") == 2
        assert r.metric("shopbotly_order_reader_cache_requests_total", result="hit") == 3


async def test_openapi_documents_the_four_lookups_with_problem_errors(start: ServeFactory) -> None:
    async with start() as r:
        spec = (await r.client.get("/openapi.json")).json()
        assert set(spec["paths"]) == {
            "/api/v1/orders/{order_id}",
            "/api/v1/customers/{email}/orders",
            "/api/v1/tickets/{ticket_id}",
            "/api/v1/customers/{email}/tickets",
        }
        op = spec["paths"]["/api/v1/orders/{order_id}"]["get"]
        assert op["security"] == [{"ApiKey": []}]
        assert "422" not in op["responses"]
        assert list(op["responses"]["404"]["content"]) == ["application/problem+json"]


# --- read-through ---------------------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """The shop's order API, faked at the HTTP edge with httpx.MockTransport."""

    def __init__(self, handler: Handler) -> None:
        self.calls: list[httpx.Request] = []
        self._handler = handler
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        return self._handler(request)


def _readthrough_config(**extra: object) -> dict[str, object]:
    return {"url_template": "https://shop.test/api/orders/{order_id}", "timeout_s": 0.5, **extra}


async def test_read_through_sends_the_token_and_the_encoded_id(
    start: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_SHOP_TOKEN", "shop-token-1")
    upstream = Upstream(lambda req: httpx.Response(200, json={"order_id": "#1001", "status": "shipped"}))
    cfg = parse_config(config_data(_readthrough_config(token={"env": "ACME_SHOP_TOKEN"})))
    async with start(config=cfg, upstream=upstream.transport) as r:
        resp = await r.client.get("/api/v1/orders/%231001", headers=auth())
        assert resp.status_code == 200 and resp.json()["order_id"] == "#1001"
        assert upstream.calls[0].url.raw_path == b"/api/orders/%231001"
        assert upstream.calls[0].headers["authorization"] == "Bearer shop-token-1"


async def test_a_token_secret_that_is_not_set_is_an_upstream_failure(start: ServeFactory) -> None:
    upstream = Upstream(lambda req: httpx.Response(200, json={"order_id": "1"}))
    cfg = parse_config(config_data(_readthrough_config(token={"env": "SHOPBOTLY_TEST_UNSET_TOKEN"})))
    async with start(config=cfg, upstream=upstream.transport) as r:
        resp = await r.client.get("/api/v1/orders/1", headers=auth())
        assert resp.status_code == 503 and upstream.calls == []


async def test_read_through_found_is_served_and_counted_separately(start: ServeFactory) -> None:
    upstream = Upstream(
        lambda req: httpx.Response(200, json={"order_id": "U-1", "status": "shipped", "x": 1})
    )
    cfg = parse_config(config_data(_readthrough_config()))
    async with start(config=cfg, upstream=upstream.transport) as r:
        for _ in range(2):
            resp = await r.client.get("/api/v1/orders/U-1", headers=auth())
            assert resp.status_code == 200
            assert resp.json() == {
                "tenant": "acme",
                "order_id": "U-1",
                "status": "shipped",
                "lines": [],
                "tracking_numbers": [],
            }
        assert len(upstream.calls) == 1
        assert (
            r.metric("shopbotly_order_reader_lookups_total", kind="order", outcome="readthrough_found") == 2
        )
        assert r.metric("shopbotly_order_reader_readthrough_requests_total", outcome="found") == 1
        assert r.metric("shopbotly_order_reader_readthrough_requests_total", outcome="cached") == 1
        # The topic wins: once the order is in the table, the table answers.
        r.load([order(order_id="U-1", status="delivered")])
        resp = await r.client.get("/api/v1/orders/U-1", headers=auth())
        assert resp.json()["status"] == "delivered" and len(upstream.calls) == 1


async def test_read_through_unknown_is_404_and_negatively_cached(start: ServeFactory) -> None:
    upstream = Upstream(lambda req: httpx.Response(404))
    cfg = parse_config(config_data(_readthrough_config(negative_ttl_s=60)))
    async with start(config=cfg, upstream=upstream.transport) as r:
        unknown_locally = await r.client.get("/api/v1/orders/N-1", headers=auth("globex"))
        for _ in range(3):
            resp = await r.client.get("/api/v1/orders/N-1", headers=auth())
            assert resp.status_code == 404 and resp.content == unknown_locally.content
        assert len(upstream.calls) == 1  # globex has no order_api; acme asked upstream once
        assert r.metric("shopbotly_order_reader_readthrough_requests_total", outcome="negative_cached") == 2


@pytest.mark.parametrize(
    "failure",
    [
        lambda req: httpx.Response(500),
        lambda req: httpx.Response(200, content=b"<html>"),
        lambda req: httpx.Response(200, json={"order_id": "someone-else"}),
        lambda req: (_ for _ in ()).throw(httpx.ConnectTimeout("slow", request=req)),
    ],
    ids=["5xx", "not-json", "other-order", "timeout"],
)
async def test_upstream_failures_are_503_and_not_cached(start: ServeFactory, failure: Handler) -> None:
    upstream = Upstream(failure)
    cfg = parse_config(config_data(_readthrough_config()))
    async with start(config=cfg, upstream=upstream.transport) as r:
        for _ in range(2):
            resp = await r.client.get("/api/v1/orders/F-1", headers=auth())
            assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
            assert resp.headers["content-type"] == "application/problem+json"
        assert len(upstream.calls) == 2
        assert r.metric("shopbotly_order_reader_readthrough_requests_total", outcome="error") == 2
        assert (
            r.metric("shopbotly_order_reader_lookups_total", kind="order", outcome="readthrough_unavailable")
            == 2
        )


async def test_a_slow_upstream_is_cut_off_at_the_configured_timeout(start: ServeFactory) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json={"order_id": "S-1"})

    cfg = parse_config(config_data(_readthrough_config(timeout_s=0.2)))
    async with start(config=cfg, upstream=httpx.MockTransport(slow)) as r:
        async with asyncio.timeout(10):  # guards the test run only; the app's own timeout answers first
            resp = await r.client.get("/api/v1/orders/S-1", headers=auth())
        assert resp.status_code == 503
