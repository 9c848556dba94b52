"""The console's pages over a real broker: sign-in and scopes, search, timeline, dead letters, redrive."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from shopbotly.common.events import CommandOutcome, CrmCommand, RawEvent
from shopbotly.common.kafka import KafkaSettings, make_producer
from shopbotly.common.topics import Topic
from shopbotly.testkit.console import (
    OPERATOR_KEYS,
    command,
    console_settings,
    dead_letter_headers_of,
    headers_of,
    raw_event,
    result,
    serve_in_thread,
)

pytestmark = pytest.mark.integration

HTML = {"Accept": "text/html"}


async def publish(
    kafka: KafkaSettings, records: list[tuple[Topic, bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = make_producer(kafka, client_role="test")
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(kafka.topic(topic), value, key=key, headers=headers)
    finally:
        await producer.stop()


def scenario(
    kafka: KafkaSettings,
) -> tuple[list[tuple[Topic, bytes, bytes, list[tuple[str, bytes]]]], CrmCommand]:
    """jane's lead reached the CRM; bob's was dead-lettered by crm-writer (a permanent error)."""
    jane, bob = raw_event("evt-jane", "jane@example.com"), raw_event("evt-bob", "bob@example.com")
    jane_cmd, bob_cmd = command(jane), command(bob)
    commands = kafka.topic(Topic.CRM_COMMANDS)

    def ev(e: RawEvent) -> tuple[Topic, bytes, bytes, list[tuple[str, bytes]]]:
        return (
            Topic.RAW_EVENTS,
            f"demo:{e.subject}".encode(),
            e.to_json(),
            headers_of(e.id, e.tenant, e.SCHEMA),
        )

    def cmd(c: CrmCommand) -> tuple[Topic, bytes, bytes, list[tuple[str, bytes]]]:
        return (
            Topic.CRM_COMMANDS,
            c.key(),
            c.to_json(),
            headers_of(c.causation_event_id, c.tenant, c.SCHEMA),
        )

    dead = result(bob_cmd, CommandOutcome.DEAD_LETTERED, error_class="permanent", error_message="422")
    return [
        ev(jane),
        ev(bob),
        cmd(jane_cmd),
        cmd(bob_cmd),
        (
            Topic.CRM_RESULTS,
            jane_cmd.key(),
            result(jane_cmd, CommandOutcome.APPLIED, crm_ids={"contact": "501"}).to_json(),
            [],
        ),
        (Topic.CRM_RESULTS, bob_cmd.key(), dead.to_json(), []),
        (Topic.CRM_COMMANDS_DLQ, bob_cmd.key(), bob_cmd.to_json(), dead_letter_headers_of(bob_cmd, commands)),
    ], bob_cmd


def signed_in(url: str, who: str) -> httpx.Client:
    client = httpx.Client(base_url=url, headers=HTML, follow_redirects=False, timeout=30)
    answer = client.post("/login", data={"key": OPERATOR_KEYS[who], "next": "/events"})
    assert answer.status_code == 303, answer.text
    return client


def counted(name: str, **labels: str) -> float:
    """A console metric's value in this process (its instruments are on the default registry)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def eventually(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


async def test_pages_over_the_topics(kafka_settings: KafkaSettings) -> None:
    records, bob_cmd = scenario(kafka_settings)
    await publish(kafka_settings, records)
    with serve_in_thread(console_settings(kafka_settings)) as console:
        anonymous = httpx.Client(base_url=console.url, headers=HTML, timeout=30)
        answer = anonymous.get("/events?email=jane")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
        # No tenant's key (nor anything else) opens it; the problem format for programs, a page for people.
        refused_before = counted("shopbotly_console_sign_ins_total", outcome="refused")
        assert anonymous.post("/login", data={"key": "sbk_demo_tenant_key"}).status_code == 401
        assert counted("shopbotly_console_sign_ins_total", outcome="refused") == refused_before + 1
        assert (
            httpx.get(f"{console.url}/events/view?tenant=demo&id=x", follow_redirects=False).status_code
            == 303
        )

        eventually(lambda: len(console.model.dead_letters) == 1 and len(console.model.events) == 2)
        viewer = signed_in(console.url, "viewer")
        page = viewer.get("/events", params={"email": "JANE@example"}).text
        assert "jane@example.com" in page and "bob@example.com" not in page
        timeline = viewer.get("/events/view", params={"tenant": "demo", "id": "evt-jane"}).text
        assert (
            "upsert_contact" in timeline and "contact 501" in timeline and 'id="outcome">applied' in timeline
        )
        failed = viewer.get("/events", params={"outcome": "failed"}).text
        assert "bob@example.com" in failed and "jane@example.com" not in failed
        letters = viewer.get("/dead-letters").text
        assert "422 Unprocessable" in letters and "Redrive selected" not in letters
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', letters)
        assert csrf is not None
        place = next(iter(console.model.dead_letters))
        sel = "|".join(map(str, place))
        refused = viewer.post("/dead-letters/redrive", data={"csrf": csrf[1], "sel": sel, "confirm": "yes"})
        assert refused.status_code == 403 and "read access only" in refused.text

        # An operator scoped to another tenant sees nothing of this one.
        assert "jane@example.com" not in signed_in(console.url, "acme-only").get("/events").text

        admin = signed_in(console.url, "admin")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', admin.get("/dead-letters").text)
        assert csrf is not None
        assert admin.post("/dead-letters/redrive", data={"csrf": "forged", "sel": sel}).status_code == 403
        confirm = admin.post("/dead-letters/redrive", data={"csrf": csrf[1], "sel": sel})
        assert confirm.status_code == 200 and "Yes, redrive" in confirm.text
        redriven_before = counted("shopbotly_console_redrives_total", decision="redriven")
        done = admin.post("/dead-letters/redrive", data={"csrf": csrf[1], "sel": sel, "confirm": "yes"})
        assert "Redriven 1," in done.text, done.text
        assert counted("shopbotly_console_redrives_total", decision="redriven") == redriven_before + 1
        assert counted("shopbotly_console_read_model_entries", kind="dead_letters") >= 1
        eventually(lambda: console.model.letter_state(console.model.dead_letters[place]) == "redriven")
        again = admin.post("/dead-letters/redrive", data={"csrf": csrf[1], "sel": sel, "confirm": "yes"})
        assert "Redriven 0, skipped as applied 0, skipped as already redriven 1" in again.text

        # crm-writer applies the redriven command: the event is applied and the dead letter says so.
        applied = result(bob_cmd, CommandOutcome.APPLIED, crm_ids={"contact": "502"})
        await publish(kafka_settings, [(Topic.CRM_RESULTS, bob_cmd.key(), applied.to_json(), [])])
        await asyncio.sleep(0)
        eventually(lambda: 'id="outcome">applied' in admin.get("/events/view?tenant=demo&id=evt-bob").text)
        assert ">applied</span>" in admin.get("/dead-letters").text


async def test_every_open_dead_letter_matching_the_filters_is_redriven_after_one_confirmation(
    kafka_settings: KafkaSettings,
) -> None:
    """More than a page (200 rows): the filter chooses, not ticked rows; the confirmation fixes the set."""
    commands, dlq = kafka_settings.topic(Topic.CRM_COMMANDS), kafka_settings.topic(Topic.CRM_COMMANDS_DLQ)

    def letter(n: int) -> tuple[Topic, bytes, bytes, list[tuple[str, bytes]]]:
        cmd = command(raw_event(f"evt-{n}", f"c{n}@example.com"))
        return (Topic.CRM_COMMANDS_DLQ, cmd.key(), cmd.to_json(), dead_letter_headers_of(cmd, commands))

    await publish(kafka_settings, [letter(n) for n in range(230)])
    with serve_in_thread(console_settings(kafka_settings)) as console:
        eventually(lambda: len(console.model.dead_letters) == 230)
        admin = signed_in(console.url, "admin")
        page = admin.get("/dead-letters", params={"topic": dlq}).text
        assert "200 dead letter(s)" in page
        assert "Redrive all 230 open dead letter(s) matching the filters" in page
        assert "Redrive all" not in signed_in(console.url, "viewer").get("/dead-letters").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        form = {"csrf": csrf[1], "filtered": "yes", "topic": dlq, "tenant": "", "error_class": ""}
        confirm = admin.post("/dead-letters/redrive", data=form)
        assert "Redrive 230 dead letter(s)?" in confirm.text and "and 130 more" in confirm.text
        until = re.search(r'name="until_ms" value="(\d+)"', confirm.text)
        assert until is not None

        await asyncio.sleep(0.05)
        await publish(kafka_settings, [letter(999)])  # arrives after the confirmation page: not in its set
        eventually(lambda: len(console.model.dead_letters) == 231)
        done = admin.post("/dead-letters/redrive", data={**form, "confirm": "yes", "until_ms": until[1]})
        assert "Redriven 230," in done.text, done.text
        eventually(
            lambda: (
                sum(console.model.letter_state(d) == "redriven" for d in console.model.dead_letters.values())
                == 230
            )
        )
        assert "Redrive all 1 open dead letter(s)" in admin.get("/dead-letters", params={"topic": dlq}).text
        # Nothing left to match: a clear refusal, not an empty redrive.
        none = admin.post("/dead-letters/redrive", data={**form, "topic": "no-such-topic"})
        assert none.status_code == 422 and "a filter that matches some" in none.text
