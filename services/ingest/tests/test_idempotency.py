"""Idempotency-Key records without a broker: the binding rule over a sequence of records (unit), and the
lead path of Intake over an in-memory log that plays the topic (component): claims, read-back, races."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.structs import RecordMetadata
from prometheus_client import REGISTRY
from pydantic import ValidationError

from shopbotly.common.events import RawEvent
from shopbotly.common.health import Health
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic, registry
from shopbotly.ingest.domain import Rejection
from shopbotly.ingest.idempotency import (
    READY,
    IdempotencyIndex,
    IdempotencyRecord,
    LeadIdempotency,
    record_key,
)
from shopbotly.ingest.intake import Intake
from shopbotly.ingest.publisher import PublishFailed
from shopbotly.ingest.schemas import Lead, lead_event_id, lead_fingerprint
from shopbotly.ingest.settings import Settings

FP_A = "a" * 64
FP_B = "b" * 64
HOUR_MS = 3_600_000


def rec(fp: str, at_ms: int, *, stored: bool = False) -> IdempotencyRecord:
    return IdempotencyRecord(fingerprint=fp, event_id=f"lead_{fp[:8]}", first_seen_ms=at_ms, stored=stored)


# --- the binding rule (unit) -----------------------------------------------------------------------------


def test_the_first_record_of_a_key_binds_it_and_another_body_changes_nothing() -> None:
    index = IdempotencyIndex(ttl_ms=24 * HOUR_MS, max_entries=10)
    index.apply(b"acme:k", rec(FP_A, 1_000), now_ms=1_000)
    index.apply(b"acme:k", rec(FP_B, 1_001), now_ms=1_001)  # the loser of a race
    binding = index.get(b"acme:k", 2_000)
    assert binding is not None and (binding.fingerprint, binding.stored) == (FP_A, False)
    # The loser's stored-note cannot exist, but if it did, it would not mark the winner stored.
    index.apply(b"acme:k", rec(FP_B, 1_001, stored=True), now_ms=2_000)
    assert index.get(b"acme:k", 2_000).stored is False  # type: ignore[union-attr]
    index.apply(b"acme:k", rec(FP_A, 1_000, stored=True), now_ms=2_000)
    assert index.get(b"acme:k", 2_000).stored is True  # type: ignore[union-attr]
    assert index.get(b"other:k", 2_000) is None


def test_a_binding_ends_with_its_window_and_the_key_can_bind_another_body() -> None:
    index = IdempotencyIndex(ttl_ms=HOUR_MS, max_entries=10)
    index.apply(b"acme:k", rec(FP_A, 0, stored=True), now_ms=0)
    assert index.get(b"acme:k", HOUR_MS - 1) is not None
    assert index.get(b"acme:k", HOUR_MS) is None
    index.apply(b"acme:k", rec(FP_B, HOUR_MS + 5), now_ms=HOUR_MS + 5)
    assert index.get(b"acme:k", HOUR_MS + 5).fingerprint == FP_B  # type: ignore[union-attr]


def test_records_older_than_the_window_bind_nothing_when_read_again() -> None:
    """A replica that starts later reads the same records; one outside the window is ignored, so a loser's
    claim inside it binds (both answers lose nothing: its body would get a new event id)."""
    index = IdempotencyIndex(ttl_ms=HOUR_MS, max_entries=10)
    now = 3 * HOUR_MS
    index.apply(b"acme:k", rec(FP_A, now - HOUR_MS - 1, stored=True), now_ms=now)
    assert index.get(b"acme:k", now) is None
    index.apply(b"acme:k", rec(FP_B, now - 10), now_ms=now)
    assert index.get(b"acme:k", now).fingerprint == FP_B  # type: ignore[union-attr]


def test_the_bound_drops_the_oldest_bindings_and_counts_them() -> None:
    index = IdempotencyIndex(ttl_ms=HOUR_MS, max_entries=2)
    for i, key in enumerate((b"t:1", b"t:2", b"t:3")):
        index.apply(key, rec(FP_A, i), now_ms=i)
    assert len(index) == 2 and index.evicted == 1
    assert index.get(b"t:1", 3) is None and index.get(b"t:3", 3) is not None


def test_expired_bindings_leave_memory_as_new_ones_arrive() -> None:
    index = IdempotencyIndex(ttl_ms=HOUR_MS, max_entries=100)
    for i in range(10):
        index.apply(f"t:{i}".encode(), rec(FP_A, i), now_ms=i)
    index.apply(b"t:late", rec(FP_A, 2 * HOUR_MS), now_ms=2 * HOUR_MS)
    assert len(index) == 1 and index.evicted == 0


def test_records_are_strict() -> None:
    with pytest.raises(ValidationError, match="fingerprint"):
        IdempotencyRecord.model_validate_json(b'{"fingerprint": "x", "event_id": "e", "first_seen_ms": 1}')
    with pytest.raises(ValidationError, match="extra"):
        IdempotencyRecord.model_validate_json(
            b'{"fingerprint": "' + FP_A.encode() + b'", "event_id": "e", "first_seen_ms": 1, "extra": 1}'
        )
    assert record_key("acme", "form:42") == b"acme:form:42"


# --- the lead path over an in-memory log (component) ----------------------------------------------------


@dataclass
class _Record:
    partition: int
    offset: int
    key: bytes
    value: bytes


class Log:
    """The lead-idempotency topic as one partition in memory, delivered to every follower on `deliver()`;
    `before_ack` lets a test put another replica's record first."""

    def __init__(self) -> None:
        self.records: list[_Record] = []
        self.followers: list[LeadIdempotency] = []
        self.auto_deliver = True
        self.before_ack: list[tuple[bytes, bytes]] = []
        self.fail: PublishFailed | None = None

    def _append(self, key: bytes, value: bytes) -> RecordMetadata:
        record = _Record(0, len(self.records), key, value)
        self.records.append(record)
        return RecordMetadata("t", 0, None, record.offset, -1, 0, -1)  # type: ignore[arg-type]

    def deliver(self) -> None:
        for follower in self.followers:
            seen = follower._read.get(0, 0)
            fresh = [r for r in self.records if r.offset >= seen]
            if fresh:
                follower._on_batch("t", fresh)

    async def send_record(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> RecordMetadata:
        if self.fail is not None:
            raise self.fail
        for other_key, other_value in self.before_ack:
            self._append(other_key, other_value)
        self.before_ack.clear()
        meta = self._append(key, value)
        if self.auto_deliver:
            asyncio.get_running_loop().call_soon(self.deliver)
        return meta

    async def hand_over(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(await self.send_record(topic, key, value, headers))
        return future


class Events:
    """The raw-events side: every event acknowledged, kept for the assertions."""

    available = True

    def __init__(self) -> None:
        self.published: list[RawEvent] = []

    async def publish(self, events: list[RawEvent]) -> list[BaseException | None]:
        self.published.extend(events)
        return [None for _ in events]


def _replica(log: Log, events: Events, *, wait_s: float = 2.0) -> tuple[Intake, Health]:
    settings = Settings(kafka=KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="mem."))
    health = Health()
    store = LeadIdempotency(settings.kafka, log, health, ttl_s=86_400, max_entries=1000, wait_s=wait_s)
    store.follower.caught_up.set()  # the in-memory log is read as it is written
    log.followers.append(store)
    return Intake({}, events, settings, idempotency=store), health


async def _lead(intake: Intake, body: dict[str, Any], key: str | None = "form-1") -> tuple[int, str, bool]:
    status, answer, replayed = await intake.lead(
        "acme", Lead.model_validate(body), idempotency_key=key, trace_id="t", received_at=datetime.now(UTC)
    )
    return status, answer.event_id, replayed


JANE = {"email": "jane@example.com", "first_name": "Jane"}
JANET = {"email": "jane@example.com", "first_name": "Janet"}


def fp(body: dict[str, Any]) -> str:
    return lead_fingerprint(Lead.model_validate(body).event_data())


async def test_a_key_is_honoured_by_every_replica_that_reads_the_log() -> None:
    log, events = Log(), Events()
    a, _ = _replica(log, events)
    b, _ = _replica(log, events)
    first = await _lead(a, JANE)
    assert first == (202, lead_event_id("acme", "form-1", fp(JANE)), False)
    log.deliver()  # B has read A's stored-note (until it has, it would publish again under the same id)
    assert await _lead(b, JANE) == (202, first[1], True)
    with pytest.raises(Rejection) as conflict:
        await _lead(b, JANET)
    assert (conflict.value.status, conflict.value.code) == (422, "idempotency_conflict")
    assert [e.id for e in events.published] == [first[1]]
    # What is on the topic: one claim and one stored-note, both for Jane's body.
    values = [IdempotencyRecord.model_validate_json(r.value) for r in log.records]
    assert [(v.fingerprint, v.stored) for v in values] == [(fp(JANE), False), (fp(JANE), True)]


async def test_the_claim_written_first_wins_a_race_and_the_loser_publishes_nothing() -> None:
    """B's claim is acknowledged, but A's claim for the same key (other body) landed just before it: when B
    has read its own record back it sees A's first, answers 422 and publishes nothing."""
    log, events = Log(), Events()
    _replica(log, events)
    b, _ = _replica(log, events)
    a_claim = rec(fp(JANET), int(time.time() * 1000), stored=False)
    log.before_ack.append((record_key("acme", "form-1"), a_claim.model_dump_json().encode()))
    with pytest.raises(Rejection) as conflict:
        await _lead(b, JANE)
    assert (conflict.value.status, conflict.value.code) == (422, "idempotency_conflict")
    assert events.published == []


async def test_a_claim_not_read_back_in_time_is_503_and_nothing_is_published() -> None:
    log, events = Log(), Events()
    log.auto_deliver = False
    a, _ = _replica(log, events, wait_s=0.2)
    with pytest.raises(Rejection) as unavailable:
        await _lead(a, JANE)
    assert unavailable.value.status == 503 and "Retry-After" in unavailable.value.headers
    assert events.published == []
    # The key stays bound to the body: its retry publishes it, another body is refused.
    log.auto_deliver = True
    log.deliver()
    assert (await _lead(a, JANE))[:2] == (202, lead_event_id("acme", "form-1", fp(JANE)))
    with pytest.raises(Rejection):
        await _lead(a, JANET)


async def test_an_unacknowledged_claim_is_503() -> None:
    log, events = Log(), Events()
    log.fail = PublishFailed("timeout", "no acknowledgement")
    a, _ = _replica(log, events)
    with pytest.raises(Rejection) as unavailable:
        await _lead(a, JANE)
    assert unavailable.value.status == 503 and events.published == []


async def test_concurrent_requests_with_one_key_in_one_replica_publish_once() -> None:
    log, events = Log(), Events()
    a, _ = _replica(log, events)
    answers = await asyncio.gather(*(_lead(a, JANE) for _ in range(5)))
    assert {(s, e) for s, e, _ in answers} == {(202, answers[0][1])}
    assert sorted(r for _, _, r in answers) == [False, True, True, True, True]
    assert len(events.published) == 1


async def test_leads_without_a_key_need_no_record_and_keyed_ones_wait_for_the_records() -> None:
    log, events = Log(), Events()
    a, health = _replica(log, events)
    a.idempotency.follower.caught_up.clear()  # as at start, before the window has been read
    status, _, _ = await _lead(a, JANE, key=None)
    assert status == 202 and log.records == []
    with pytest.raises(Rejection) as unavailable:
        await _lead(a, JANE)
    assert unavailable.value.status == 503 and len(events.published) == 1
    assert health.ready()[1][READY] == "reading Idempotency-Key records"


async def test_an_unreadable_record_binds_nothing_and_is_counted() -> None:
    log, events = Log(), Events()
    a, _ = _replica(log, events)
    log.before_ack.append((record_key("acme", "form-1"), b"not json"))
    status, event_id, replayed = await _lead(a, JANE)
    assert (status, event_id, replayed) == (202, lead_event_id("acme", "form-1", fp(JANE)), False)
    assert a.idempotency.index.get(record_key("acme", "form-1"), int(time.time() * 1000)) is not None
    invalid = REGISTRY.get_sample_value("shopbotly_ingest_idempotency_invalid_records_total")
    assert invalid is not None and invalid >= 1


def test_the_topic_keeps_every_record_of_the_longest_window() -> None:
    """The first record of a key decides: compaction (which keeps the last) would rewrite history, and a
    retention shorter than the window would forget bindings still promised."""
    spec = registry()[Topic.LEAD_IDEMPOTENCY]
    assert spec.configs["cleanup.policy"] == "delete"
    longest_ttl_s = max(m.le for m in Settings.model_fields["idempotency_ttl_s"].metadata if hasattr(m, "le"))
    assert int(spec.configs["retention.ms"]) >= longest_ttl_s * 1000
