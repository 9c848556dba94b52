"""The mapping playground runs the mapper's own code (`shopbotly map`) on a pasted or picked raw event."""

from __future__ import annotations

import html
from pathlib import Path

import httpx
import orjson
import pytest

from shopbotly.common.kafka import KafkaSettings
from shopbotly.console.app import create_app
from shopbotly.console.materializer import topic_roles
from shopbotly.console.readmodel import Record
from shopbotly.mapper.presets import sample_events
from shopbotly.testkit.console import OPERATOR_KEYS, console_settings

pytestmark = pytest.mark.component

CONFIG = Path(__file__).parents[2] / "mapper" / "tests" / "golden" / "shopbotly.yaml"


async def run_as(who: str, event: dict[str, object], mapping: str = "") -> tuple[str, str]:
    """(the playground prefilled from the event's timeline, the page after mapping it)"""
    kafka = KafkaSettings()
    app = create_app(console_settings(kafka, config=CONFIG), consume=False)
    raw_topic = next(t for t, role in topic_roles(kafka).items() if role == "raw_events")
    app.state.model.apply([Record(raw_topic, 0, 0, 1, b"k", orjson.dumps(event))], now_ms=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://c", headers={"Accept": "text/html"}
    ) as c:
        assert (await c.post("/login", data={"key": OPERATOR_KEYS[who]})).status_code == 303
        picked = (await c.get("/playground", params={"tenant": "demo", "id": str(event["id"])})).text
        form = {"event": orjson.dumps(event).decode(), "mapping": mapping}
        ran = (await c.post("/playground", data=form)).text
        return picked, ran


async def test_an_event_from_its_timeline_maps_to_the_commands_the_mapper_would_make() -> None:
    event = sample_events("shopify")["orders.create"]
    picked, ran = await run_as("viewer", event)
    assert f"&#34;id&#34;: &#34;{event['id']}&#34;" in picked or f'"id": "{event["id"]}"' in html.unescape(
        picked
    )
    assert 'id="map-status">mapped<' in ran
    assert "<b>upsert_contact</b> → hubspot" in ran and "<b>attach_order</b> → hubspot" in ran


async def test_a_dead_letter_shows_why_and_other_tenants_are_refused() -> None:
    event = sample_events("api")["lead.submitted"]
    event["data"]["email"] = "not-an-address"  # type: ignore[index]
    _, ran = await run_as("viewer", event)
    assert 'id="map-status">dead_lettered<' in ran and "not a valid e-mail address" in ran
    _, refused = await run_as("acme-only", event)
    assert "tenant &#39;demo&#39; is not one of yours" in refused


async def test_a_pasted_mapping_is_tried_instead_of_the_consoles_own() -> None:
    event = sample_events("shopify")["orders.create"]
    # The same tenant without the shopify preset: the order makes no command.
    other = CONFIG.read_text().replace(
        "presets: [shopbotly, shopify, stripe,", "presets: [shopbotly, stripe,"
    )
    _, ran = await run_as("viewer", event, mapping=other)
    assert 'id="mapping-used">pasted mapping<' in ran
    assert "<b>attach_order</b>" not in ran and "<h3>0 command(s)</h3>" in ran
    _, own = await run_as("viewer", event)
    assert f'id="mapping-used">{CONFIG}<' in own and "<b>attach_order</b> → hubspot" in own


@pytest.mark.parametrize(
    ("pasted", "shown"),
    [
        ("tenants: [unclosed", "pasted mapping: line 1, column 19: invalid YAML"),
        ("- a list", "pasted mapping: (top level): expected a mapping with `tenants`, got list"),
        ("version: 1\ntenants: {demo: {mapping: {presets: [nope]}}}", "pasted mapping: tenants.demo"),
    ],
)
async def test_a_pasted_mapping_that_does_not_load_says_why(pasted: str, shown: str) -> None:
    _, ran = await run_as("viewer", sample_events("api")["lead.submitted"], mapping=pasted)
    assert "the mapping cannot be loaded: " + shown in html.unescape(ran), html.unescape(ran)
