"""Test helpers for ingest and for suites that drive it (e2e, bench): a demo config, signed requests,
a running app in-process, and a reader of the raw-events topic. Not used by the service itself."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from shopbotly.common.config import ApiKey, ShopbotlyConfig, parse_config
from shopbotly.common.events import decode_headers
from shopbotly.common.kafka import KafkaSettings, make_consumer
from shopbotly.common.signatures import HmacScheme
from shopbotly.common.sources import sign_webhook
from shopbotly.common.topics import Topic
from shopbotly.ingest.app import create_app
from shopbotly.ingest.edge import IngestRuntime
from shopbotly.ingest.settings import Settings

__all__ = [
    "API_KEY",
    "BASE_URL",
    "GENERIC_SCHEME",
    "SALESFORCE_ORG_ID",
    "SALESFORCE_TOKEN",
    "SECRETS",
    "Received",
    "Running",
    "demo_config",
    "read_topic",
    "running_app",
    "set_secret_env",
    "signed_headers",
]

BASE_URL = "http://ingest.test"
API_KEY = "sbk_test_" + "k" * 40
READ_ONLY_KEY = "sbk_test_" + "r" * 40
OTHER_TENANT_KEY = "sbk_test_" + "o" * 40

# One current secret per kind (env var name -> value); `_OLD` ones are also active (rotation).
SECRETS: dict[str, str] = {
    "shopbotly": "whsec_" + base64.b64encode(b"bot-secret-0123456789abcdef").decode(),
    "standard_webhooks": "whsec_" + base64.b64encode(b"sw-secret-0123456789abcdef").decode(),
    "stripe": "whsec_stripe_test_secret",
    "shopify": "shpss_shopify_test_secret",
    "github": "github-test-secret",
    "slack": "slack-test-signing-secret",
    "intercom": "intercom-client-secret",
    "hubspot": "hubspot-client-secret-0000",
    "generic_hmac": "generic-test-secret",
}
OLD_SECRETS: dict[str, str] = {
    kind: (
        "whsec_" + base64.b64encode(b"old-" + kind.encode() + b"-0123456789").decode()
        if kind in ("shopbotly", "standard_webhooks")
        else f"old-{kind}-secret"
    )
    for kind in SECRETS
}
GENERIC_SCHEME = HmacScheme(
    header="X-Acme-Signature",
    prefix="sha256=",
    timestamp_header="X-Acme-Timestamp",
    signed_payload="{timestamp}.{body}",
)
HUBSPOT_PUBLIC_BASE = "https://hooks.example.com/ingest"
# Salesforce sources authenticate by org id; `salesforce` also wants the URL token (`?token=`).
SALESFORCE_ORG_ID = "00D000000000001EAA"
SALESFORCE_TOKEN = "sf-url-token-0123456789abcdef"  # noqa: S105 - a test value


def _env(kind: str, old: bool = False) -> str:
    return f"INGEST_TEST_{kind.upper()}{'_OLD' if old else ''}_SECRET"


def set_secret_env(environ: Any = os.environ) -> None:
    """Put every test secret where the demo config's references point."""
    for kind, value in SECRETS.items():
        environ[_env(kind)] = value
        environ[_env(kind, old=True)] = OLD_SECRETS[kind]
    environ[_env("salesforce")] = SALESFORCE_TOKEN


def demo_config(**source_overrides: Mapping[str, Any]) -> ShopbotlyConfig:
    """Tenant `acme` with one source per kind (named after the kind) and tenant `other` with a
    shopbotly source; `hubspot_proxy` is a HubSpot source behind a proxy (signature_base_url)."""
    sources: dict[str, Any] = {}
    for kind in SECRETS:
        sources[kind] = {"kind": kind, "secrets": [{"env": _env(kind)}, {"env": _env(kind, old=True)}]}
    sources["generic_hmac"]["generic"] = {
        "header": GENERIC_SCHEME.header,
        "prefix": GENERIC_SCHEME.prefix,
        "timestamp_header": GENERIC_SCHEME.timestamp_header,
        "signed_payload": GENERIC_SCHEME.signed_payload,
    }
    sources["hubspot_proxy"] = {
        "kind": "hubspot",
        "secrets": [{"env": _env("hubspot")}],
        "signature_base_url": HUBSPOT_PUBLIC_BASE,
    }
    sources["small"] = {"kind": "shopbotly", "secrets": [{"env": _env("shopbotly")}], "max_body_bytes": 2048}
    sources["salesforce"] = {
        "kind": "salesforce",
        "organization_ids": [SALESFORCE_ORG_ID],
        "secrets": [{"env": _env("salesforce")}],
    }
    sources["salesforce_org_only"] = {"kind": "salesforce", "organization_ids": [SALESFORCE_ORG_ID[:15]]}
    for name, override in source_overrides.items():
        sources[name] = {**sources.get(name, {}), **override}
    return parse_config(
        {
            "tenants": {
                "acme": {
                    "api_keys": [
                        {"id": "main", "sha256": ApiKey.hash_key(API_KEY)},
                        {"id": "reader", "sha256": ApiKey.hash_key(READ_ONLY_KEY), "scopes": ["orders"]},
                    ],
                    "sources": sources,
                },
                "other": {
                    "api_keys": [{"id": "main", "sha256": ApiKey.hash_key(OTHER_TENANT_KEY)}],
                    "sources": {"bot": {"kind": "shopbotly", "secrets": [{"env": _env("shopbotly")}]}},
                },
            }
        },
        origin="<test config>",
    )


def signed_headers(
    kind: str,
    body: bytes,
    *,
    msg_id: str = "msg_1",
    url: str = "",
    now: float | None = None,
    secret: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers of a delivery of `kind` signed with the test secret, JSON content type included."""
    headers = sign_webhook(
        kind,
        secret or SECRETS[kind],
        body,
        now=time.time() if now is None else now,
        msg_id=msg_id,
        url=url,
        options=GENERIC_SCHEME if kind == "generic_hmac" else None,
    )
    return {"content-type": "application/json", **headers, **(extra or {})}


@dataclass
class Running:
    app: FastAPI
    runtime: IngestRuntime
    client: httpx.AsyncClient


@asynccontextmanager
async def running_app(
    settings: Settings, config: ShopbotlyConfig | None = None, *, lifespan: bool = True, ready: bool = True
) -> AsyncIterator[Running]:
    """The app in-process behind an httpx client; with `lifespan`, the producer and the follower of the
    Idempotency-Key records run (and are ready when `ready`). Without it nothing connects to Kafka: the
    publish path answers 503."""
    app = create_app(settings, config or demo_config())
    runtime: IngestRuntime = app.state.runtime
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        if not lifespan:
            yield Running(app, runtime, client)
            return
        async with app.router.lifespan_context(app):
            if ready and not await runtime.publisher.wait_ready(30):
                raise RuntimeError("the producer did not get broker metadata within 30 s")
            if ready and not await runtime.intake.idempotency.wait_ready(30):
                raise RuntimeError("the Idempotency-Key records were not read within 30 s")
            yield Running(app, runtime, client)


@dataclass(frozen=True)
class Received:
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    partition: int


async def read_topic(
    kafka: KafkaSettings, *, expected: int, topic: Topic = Topic.RAW_EVENTS, timeout_s: float = 15.0
) -> list[Received]:
    """Every record of the topic from the start, once at least `expected` arrived (or the timeout ran out;
    then what is there, so the caller's assertion says what was missing)."""
    consumer = make_consumer(kafka, kafka.topic(topic), group_id=None, client_role="test-reader")
    await consumer.start()
    records: list[Received] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(
                    Received(r.key, r.value, decode_headers(r.headers), r.partition) for r in batch
                )
        # Anything more that was already written (a test that expects "nothing new" needs to see it).
        batches = await consumer.getmany(timeout_ms=300)
        for batch in batches.values():
            records.extend(Received(r.key, r.value, decode_headers(r.headers), r.partition) for r in batch)
    finally:
        await consumer.stop()
    return records
