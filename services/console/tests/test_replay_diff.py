"""The replay diff page over a real broker: the CLI's `replay --dry-run --mapping` for one tenant's time
range, with the console's mapping or a pasted one; scoped to the operator's tenants; bad input refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.config import load_config
from shopbotly.common.events import CrmCommand, RawEvent, utcnow
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.mapper.domain import Mappings, map_event
from shopbotly.mapper.presets import sample_events
from shopbotly.mapper.state import StateStore
from shopbotly.testkit.console import console_settings, headers_of, serve_in_thread

from .test_pages import publish, signed_in

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).parents[2] / "mapper" / "tests" / "golden" / "shopbotly.yaml"
Records = list[tuple[Topic, bytes, bytes, list[tuple[str, bytes]]]]


def lead(n: int, tenant: str) -> dict[str, Any]:
    event: dict[str, Any] = sample_events("api")["lead.submitted"]
    event |= {"id": f"evt-lead-{tenant}-{n}", "tenant": tenant}
    event["data"] = {**event["data"], "email": f"lead{n}@example.com"}
    return event


def as_mapped(events: list[dict[str, Any]]) -> Records:
    """The raw events, and the commands the mapper made of them with the console's config."""
    mappings = Mappings.from_config(load_config(CONFIG))
    records: Records = []
    for event in events:
        value = orjson.dumps(event)
        records.append(
            (Topic.RAW_EVENTS, b"k", value, headers_of(event["id"], event["tenant"], RawEvent.SCHEMA))
        )
        for cmd in map_event(value, mappings, StateStore(), now=utcnow()).commands:
            headers = headers_of(event["id"], event["tenant"], CrmCommand.SCHEMA)
            records.append((Topic.CRM_COMMANDS, cmd.key(), cmd.to_json(), headers))
    return records


def local(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def test_a_tenants_range_is_compared_under_the_consoles_or_a_pasted_mapping(
    kafka_settings: KafkaSettings,
) -> None:
    demo = [lead(n, "demo") for n in range(3)]
    await publish(kafka_settings, as_mapped([*demo, lead(9, "acme")]))
    now = datetime.now(UTC)
    window = {
        "tenant": "demo",
        "since": local(now - timedelta(hours=1)),
        "until": local(now + timedelta(hours=1)),
    }
    with serve_in_thread(console_settings(kafka_settings, config=CONFIG)) as console:
        viewer = signed_in(console.url, "viewer")
        page = viewer.get("/replay-diff").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None

        def compare(client: httpx.Client, **form: str) -> httpx.Response:
            return client.post("/replay-diff", data={"csrf": csrf[1], **window, **form})

        same = compare(viewer).text
        assert 'id="diff-status">same<' in same and "compared 3 event(s): 0 with differences" in same
        without_api = CONFIG.read_text().replace(", api]", "]")
        assert without_api != CONFIG.read_text(), "the golden config's presets end with api"
        differs = compare(viewer, mapping=without_api).text
        assert 'id="diff-status">differs<' in differs and "compared 3 event(s): 3 with differences" in differs
        assert "pasted mapping" in differs and "lead0@example.com" in differs

        # Scope, CSRF and bad input: clear refusals, nothing read.
        other = signed_in(console.url, "acme-only")
        other_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', other.get("/replay-diff").text)
        assert other_csrf is not None
        refused = other.post("/replay-diff", data={"csrf": other_csrf[1], **window}).text
        assert "tenant &#39;demo&#39; is not one of yours" in refused and "diff-status" not in refused
        assert viewer.post("/replay-diff", data={"csrf": "forged", **window}).status_code == 403
        backwards = compare(viewer, since=window["until"], until=window["since"]).text
        assert "give a time range: from, then a later until (UTC)" in backwards
        assert "not a date and time" in compare(viewer, since="yesterday").text
        assert "longer than 7 days" in compare(viewer, since=local(now - timedelta(days=8))).text
        assert "invalid YAML" in compare(viewer, mapping="tenants: [").text
        too_big = compare(viewer, mapping="#" * (1 << 20))
        assert too_big.status_code == 413
