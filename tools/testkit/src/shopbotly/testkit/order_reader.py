"""Test support for the order-reader: tenants with API keys, record builders, an app running in-process.

Used by services/order-reader/tests and tools/bench; nothing here runs in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shopbotly.common.config import ApiKey, ShopbotlyConfig, parse_config
from shopbotly.common.events import Order, OrderLine, Ticket
from shopbotly.common.kafka import KafkaSettings
from shopbotly.order_reader.app import create_app
from shopbotly.order_reader.domain import Kind
from shopbotly.order_reader.materializer import RawRecord, decode_and_apply
from shopbotly.order_reader.runtime import Runtime
from shopbotly.order_reader.settings import Settings

KEYS = {
    "acme": "sbk_acme_test_key_0123456789abcdefghijklmnop",
    "globex": "sbk_globex_test_key_0123456789abcdefghijklm",
    "acme-orders-only": "sbk_acme_orders_only_0123456789abcdefghijk",
}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def config_data(order_api: dict[str, Any] | None = None) -> dict[str, Any]:
    acme: dict[str, Any] = {
        "api_keys": [
            {"id": "main", "sha256": ApiKey.hash_key(KEYS["acme"])},
            {"id": "orders", "sha256": ApiKey.hash_key(KEYS["acme-orders-only"]), "scopes": ["orders"]},
        ]
    }
    if order_api is not None:
        acme["order_api"] = order_api
    globex = {"api_keys": [{"id": "main", "sha256": ApiKey.hash_key(KEYS["globex"])}]}
    return {"version": 1, "tenants": {"acme": acme, "globex": globex}}


def auth(name: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def order(
    tenant: str = "acme",
    order_id: str = "1001",
    *,
    email: str | None = "jane@example.com",
    status: str = "open",
    created: datetime | None = T0,
    **fields: Any,
) -> Order:
    defaults: dict[str, Any] = {
        "total": "42.00",
        "currency": "EUR",
        "lines": [OrderLine(title="Mug", quantity=2, price="21.00")],
    }
    return Order(
        tenant=tenant,
        order_id=order_id,
        customer_email=email,
        status=status,
        created_at=created,
        **{**defaults, **fields},
    )


def ticket(
    tenant: str = "acme",
    ticket_id: str = "T-1",
    *,
    email: str | None = "jane@example.com",
    is_open: bool = True,
    created: datetime | None = T0,
    **fields: Any,
) -> Ticket:
    return Ticket(
        tenant=tenant,
        ticket_id=ticket_id,
        customer_email=email,
        status="open" if is_open else "closed",
        is_open=is_open,
        subject="Where is my order?",
        created_at=created,
        **fields,
    )


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


@dataclass
class Running:
    """One app instance in this process, with an HTTP client bound to it."""

    app: FastAPI
    client: httpx.AsyncClient
    registry: CollectorRegistry

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def load(self, models: Iterable[Order | Ticket | tuple[Kind, str, None]]) -> None:
        """Apply records as the consumer would (same decode and store path), without Kafka."""
        raw: list[RawRecord] = []
        for offset, item in enumerate(models, start=self._next_offset):
            if isinstance(item, tuple):
                kind, key, value = item[0], item[1].encode(), None
            elif isinstance(item, Order):
                kind, key, value = Kind.ORDER, f"{item.tenant}:{item.order_id}".encode(), item.to_json()
            else:
                kind, key, value = Kind.TICKET, f"{item.tenant}:{item.ticket_id}".encode(), item.to_json()
            raw.append((kind, f"local.{kind.value}", 0, offset, key, value))
        self._next_offset += len(raw)
        outcome = decode_and_apply(self.runtime.store, raw)
        for change in outcome.changes:
            self.runtime.lookups.invalidate(change.kind, change.tenant, change.id)

    _next_offset: int = 0


ServeFactory = Callable[..., AbstractAsyncContextManager[Running]]


@asynccontextmanager
async def serve(
    data_dir: Path,
    *,
    kafka: KafkaSettings | None = None,
    config: ShopbotlyConfig | None = None,
    upstream: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    """An app with its lifespan running and an HTTP client on it. Without `kafka` it does not consume."""
    settings = Settings(
        data_dir=data_dir,
        kafka=kafka or KafkaSettings(topic_prefix="local."),
        log_format="console",
        **overrides,
    )
    registry = CollectorRegistry()
    app = create_app(
        settings,
        config=config or parse_config(config_data()),
        registry=registry,
        consume=kafka is not None,
        upstream_transport=upstream,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://order-reader") as client:
            yield Running(app, client, registry)
