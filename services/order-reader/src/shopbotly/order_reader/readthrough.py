"""Read-through on a miss: ask the tenant's upstream order API (httpx), with a timeout and negative caching.

Answers are cached in memory only, never written to the store: the orders topic stays the one source
of the table, and a record arriving there replaces whatever read-through found.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from pydantic import ValidationError

from shopbotly.common.cache import BoundedCache
from shopbotly.common.config import OrderApiConfig
from shopbotly.common.events import Order
from shopbotly.common.logging import get_logger
from shopbotly.order_reader.domain import Answer, readthrough_tag
from shopbotly.order_reader.metrics import Metrics

__all__ = ["ReadThrough", "UpstreamUnavailable"]

_log = get_logger(__name__)
_ORDER_FIELDS = frozenset(Order.model_fields)


class UpstreamUnavailable(Exception):
    """The upstream order API did not give a usable answer (timeout, error status, invalid body)."""


class ReadThrough:
    def __init__(
        self,
        client: httpx.AsyncClient,
        metrics: Metrics,
        *,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        # Each tenant's order API sets its own TTLs, given with each put (the default 0 keeps nothing).
        self._found: BoundedCache[tuple[str, str], Answer] = BoundedCache(capacity, ttl_s=0.0, clock=clock)
        self._unknown: BoundedCache[tuple[str, str], bool] = BoundedCache(capacity, ttl_s=0.0, clock=clock)

    def invalidate(self, tenant: str, order_id: str) -> None:
        self._found.pop((tenant, order_id))
        self._unknown.pop((tenant, order_id))

    def clear(self) -> None:
        self._found.clear()
        self._unknown.clear()

    async def fetch(self, tenant: str, api: OrderApiConfig, order_id: str) -> Answer | None:
        """The order from upstream, None when upstream does not know it; UpstreamUnavailable otherwise."""
        key = (tenant, order_id)
        cached = self._found.get(key)
        if cached is not None:
            self._metrics.readthrough.labels("cached").inc()
            return cached
        if self._unknown.get(key):
            self._metrics.readthrough.labels("negative_cached").inc()
            return None
        started = time.perf_counter()
        try:
            answer = await self._call(tenant, api, order_id)
        except UpstreamUnavailable as exc:
            self._metrics.readthrough.labels("error").inc()
            _log.warning("upstream order API failed", tenant=tenant, error=str(exc))
            raise
        finally:
            self._metrics.readthrough_seconds.observe(time.perf_counter() - started)
        if answer is None:
            self._metrics.readthrough.labels("not_found").inc()
            self._unknown.put(key, True, ttl_s=api.negative_ttl_s)
        else:
            self._metrics.readthrough.labels("found").inc()
            self._found.put(key, answer, ttl_s=api.cache_ttl_s)
        return answer

    async def _call(self, tenant: str, api: OrderApiConfig, order_id: str) -> Answer | None:
        url = api.url_template.replace("{order_id}", quote(order_id, safe=""))
        headers = {"Accept": "application/json"}
        if api.token is not None:
            try:
                headers["Authorization"] = f"Bearer {api.token.resolve()}"
            except LookupError as exc:  # the message names the reference, never the value
                raise UpstreamUnavailable(str(exc)) from None
        try:
            # httpx's timeout bounds each phase (connect, read, ...); the deadline bounds the whole call.
            async with asyncio.timeout(api.timeout_s):
                response = await self._client.get(url, headers=headers, timeout=api.timeout_s)
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamUnavailable(f"no answer within {api.timeout_s}s") from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}") from None
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise UpstreamUnavailable(f"status {response.status_code}")
        return _answer_from(tenant, order_id, response.content)


def _answer_from(tenant: str, order_id: str, content: bytes) -> Answer:
    try:
        data: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("body is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable("body is not a JSON object")
    # The tenant is ours to set (the upstream is per tenant); fields we do not model are dropped.
    data = {k: v for k, v in data.items() if k in _ORDER_FIELDS}
    data["tenant"] = tenant
    try:
        order = Order.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UpstreamUnavailable(f"body is not an order: {where}: {first['msg']}") from None
    if order.order_id != order_id:
        raise UpstreamUnavailable("body is a different order than the one asked for")
    body = order.to_json()
    return Answer(body, readthrough_tag(body))
