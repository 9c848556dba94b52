"""An event's timeline shows each CRM try of its commands, as crm-writer logged it in `crm.attempts`."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import orjson
import pytest

from shopbotly.common.events import ATTEMPTS_HEADER, CommandOutcome, CrmCommand, RawEvent
from shopbotly.common.kafka import KafkaSettings
from shopbotly.console.app import create_app
from shopbotly.console.materializer import topic_roles
from shopbotly.console.readmodel import Record
from shopbotly.testkit.console import OPERATOR_KEYS, command, console_settings, headers_of, raw_event, result

pytestmark = pytest.mark.component

CONFIG = Path(__file__).parents[2] / "mapper" / "tests" / "golden" / "shopbotly.yaml"

TRIES = {
    "tries": [
        {"n": 1, "at": "2026-12-07T10:00:00.000+00:00", "ms": 12.5, "outcome": "throttled", "status": 429,
         "answer": "You have reached your ten_secondly_rolling limit."},
        {"n": 2, "at": "2026-12-07T10:00:01.000+00:00", "ms": 30.1, "outcome": "retryable", "status": 502,
         "answer": "502: bad gateway"},
        {"n": 2000, "at": "2026-12-07T10:09:00.000+00:00", "ms": 41.0, "outcome": "applied"},
    ],
    "omitted": 1997,
}  # fmt: skip


async def timeline(result_headers: list[tuple[str, bytes]], source: str = "api") -> str:
    kafka = KafkaSettings()
    roles = {role: topic for topic, role in topic_roles(kafka).items()}
    app = create_app(console_settings(kafka, config=CONFIG), consume=False)
    event = raw_event("e1", "jane@example.com").model_copy(update={"sourcename": source})
    cmd = command(event)
    applied = result(cmd, CommandOutcome.APPLIED, crm_ids={"contact": "101"}, attempts=2000)
    app.state.model.apply(
        [
            Record(
                roles["raw_events"],
                0,
                0,
                1,
                b"k",
                event.to_json(),
                tuple(headers_of("e1", "demo", RawEvent.SCHEMA)),
            ),
            Record(
                roles["commands"],
                0,
                0,
                1,
                b"k",
                cmd.to_json(),
                tuple(headers_of("e1", "demo", CrmCommand.SCHEMA)),
            ),
            Record(roles["results"], 0, 0, 1, b"k", applied.to_json(), tuple(result_headers)),
        ],
        now_ms=1,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://c", headers={"Accept": "text/html"}
    ) as c:
        assert (await c.post("/login", data={"key": OPERATOR_KEYS["viewer"]})).status_code == 303
        page = await c.get("/events/view", params={"tenant": "demo", "id": "e1"})
        assert page.status_code == 200
        return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text)))


async def test_each_try_shows_its_time_latency_outcome_status_and_the_crms_answer() -> None:
    text = await timeline([*headers_of("e1", "demo", "r"), (ATTEMPTS_HEADER, orjson.dumps(TRIES))])
    assert "#1 2026-12-07T10:00:00.000+00:00 12.5 ms throttled 429 You have reached your ten_secondly" in text
    assert "#2 2026-12-07T10:00:01.000+00:00 30.1 ms retryable 502 502: bad gateway" in text
    assert "… 1997 tries not kept …" in text
    assert "#2000 2026-12-07T10:09:00.000+00:00 41.0 ms applied" in text


@pytest.mark.parametrize("header", [b"not json", b'{"tries": "x"}', b"[1, 2]"])
async def test_a_missing_or_unreadable_attempt_log_leaves_the_result_without_tries(header: bytes) -> None:
    text = await timeline([(ATTEMPTS_HEADER, header)])
    assert "applied after 2000 attempt(s)" in text and "Latency" not in text


@pytest.mark.parametrize(
    ("source", "verified"),
    [
        ("api", "Verified by the tenant's API key (Sync Lead API)"),
        ("shopify", "Verified by shopify: X-Shopify-Hmac-Sha256: base64 HMAC-SHA256 of the body"),
        ("stripe", "Verified by stripe: Stripe-Signature v1: HMAC-SHA256 of timestamp and body"),
        ("gone", None),  # a source the config no longer names: no claim at all
    ],
)
async def test_the_timeline_says_how_the_delivery_was_verified_and_which_rules_matched(
    source: str, verified: str | None
) -> None:
    text = await timeline([], source=source)
    if verified is None:
        assert "Verified by" not in text
    else:
        assert verified in text
    assert "Rules matched r0 (the rules its commands came from;" in text
