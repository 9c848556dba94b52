"""The Stripe checkout sample and the documented Sync Lead body, mapped by the mapper's presets and written by
the HubSpot connector to a fresh portal (nobody ran `connections setup`): the contact gets its name and phone,
nothing is dead-lettered, and what the portal lacks is named in the result."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.config import parse_config
from shopbotly.common.events import CrmCommand
from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_writer.connectors.hubspot import HubSpotConnector
from shopbotly.crm_writer.domain import Write
from shopbotly.mapper.domain import Mappings, map_event
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.state import StateStore

pytestmark = pytest.mark.component

BASE = "https://crm.test"
DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "ingest.md"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CONFIG = {
    "tenants": {
        "demo": {
            "sources": {"stripe": {"kind": "stripe", "secrets": [{"env": "SB_TEST_SECRET"}]}},
            "connections": {
                "hubspot": {
                    "kind": "hubspot",
                    "base_url": BASE,
                    "auth": {"kind": "bearer", "token": {"env": "SB_TEST_HS_TOKEN"}},
                    "rate_limit": {"requests": 1000, "per_seconds": 1},
                }
            },
            "mapping": {"default_connection": "hubspot", "presets": ["stripe", "api"]},
        }
    }
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_HS_TOKEN", "emulator-hubspot-token")
    monkeypatch.setenv("SB_TEST_SECRET", "whsec_test")


@pytest.fixture
async def fresh() -> AsyncIterator[tuple[httpx.AsyncBaseTransport, httpx.AsyncClient]]:
    app = create_app(EmulatorSettings(hubspot_custom_properties=[], hubspot_unique_properties={}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as admin:
            yield transport, admin


def documented_lead() -> dict[str, Any]:
    section = DOC.read_text().split("## The Sync Lead API", 1)[1]
    body: dict[str, Any] = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    return body


def commands(event: dict[str, Any]) -> list[CrmCommand]:
    cfg = parse_config(CONFIG)
    outcome = map_event(orjson.dumps(event), Mappings.from_config(cfg), StateStore(), now=NOW)
    assert not outcome.errors, outcome.errors
    return list(outcome.commands)


async def apply_all(
    make_runtime: Any, transport: httpx.AsyncBaseTransport, cmds: list[CrmCommand]
) -> list[Any]:
    cfg = parse_config(CONFIG).tenants["demo"].connections["hubspot"]
    hs = HubSpotConnector(make_runtime(cfg, transport))
    results = []
    try:
        for cmd in cmds:
            write = Write(hs.kind_of(cmd.op), cmd.tenant, cmd.connection, cmd.identity)
            write.absorb(cmd, 0)
            results.append(await hs.apply(write, partition=0))
    finally:
        await hs.aclose()
    return results


async def test_a_stripe_checkout_on_a_fresh_portal_keeps_name_and_phone(
    make_runtime: Any, fresh: Any
) -> None:
    transport, admin = fresh
    event = {
        **sample_events("stripe")["checkout.session.completed"],
        "tenant": "demo",
        "sourcename": "stripe",
    }
    results = await apply_all(
        make_runtime, transport, [c for c in commands(event) if c.op.value == "upsert_contact"]
    )
    record = next(iter((await admin.get("/_emulator/state")).json()["records"]["hubspot"].values()))
    props = record["properties"]
    assert props["firstname"] and props["lastname"] and props["phone"].startswith("+")
    assert results[0]["dropped_properties"] == "shopbotly_stripe_customer_id"


async def test_the_documented_sync_lead_example_on_a_fresh_portal_keeps_name_and_phone(
    make_runtime: Any, fresh: Any
) -> None:
    transport, admin = fresh
    sample = sample_events("api")["lead.submitted"]
    event = {
        **sample,
        "tenant": "demo",
        "sourcename": "api",
        "subject": "jane@example.com",
        "data": documented_lead(),
    }
    cmds = commands(event)
    results = await apply_all(make_runtime, transport, cmds)
    props = (await admin.get("/_emulator/state")).json()["records"]["hubspot"]["jane@example.com"][
        "properties"
    ]
    assert props["firstname"] == "Jane" and props["lastname"] == "Doe" and props["phone"] == "+49301234567"
    assert props["lifecyclestage"] == "lead"
    dropped = {name for r in results for name in r.get("dropped_properties", "").split(",") if name}
    assert {"plan", "seats", "shopbotly_consent", "shopbotly_tags"} <= dropped
