"""Dead letters: carbon copies of the original message plus error headers (DESIGN.md, Topics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaProducer

from shopbotly.common.errors import ErrorClass
from shopbotly.common.events import Headers, utcnow
from shopbotly.common.kafka import ResilientProducer

__all__ = ["ERROR_HEADERS", "DeadLetter", "dead_letter_headers", "publish_dead_letter", "strip_error_headers"]

ERROR_HEADERS = (
    "error.class",
    "error.message",
    "error.attempts",
    "error.first_at",
    "error.last_at",
    "origin.topic",
    "origin.partition",
    "origin.offset",
    "origin.service",
)
_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class DeadLetter:
    """Why and where from: everything an operator needs to judge and redrive the message."""

    error_class: ErrorClass
    error_message: str
    attempts: int
    origin_topic: str
    origin_partition: int
    origin_offset: int
    origin_service: str
    first_at: datetime | None = None
    last_at: datetime | None = None


def strip_error_headers(headers: Sequence[tuple[str, bytes]] | None) -> Headers:
    """The original headers without any earlier error headers (a redriven message that fails again)."""
    return [(k, v) for k, v in (headers or ()) if k not in ERROR_HEADERS]


def dead_letter_headers(original: Sequence[tuple[str, bytes]] | None, letter: DeadLetter) -> Headers:
    now = utcnow()
    first = letter.first_at or now
    last = letter.last_at or now
    return [
        *strip_error_headers(original),
        ("error.class", letter.error_class.value.encode()),
        ("error.message", letter.error_message[:_MAX_MESSAGE].encode("utf-8", "replace")),
        ("error.attempts", str(letter.attempts).encode()),
        ("error.first_at", first.isoformat().encode()),
        ("error.last_at", last.isoformat().encode()),
        ("origin.topic", letter.origin_topic.encode()),
        ("origin.partition", str(letter.origin_partition).encode()),
        ("origin.offset", str(letter.origin_offset).encode()),
        ("origin.service", letter.origin_service.encode()),
    ]


async def publish_dead_letter(
    producer: AIOKafkaProducer | ResilientProducer,
    dlq_topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    timestamp_ms: int | None,
    letter: DeadLetter,
) -> None:
    """Publish the carbon copy and wait for the broker's acknowledgement (the caller commits after)."""
    await producer.send_and_wait(
        dlq_topic,
        value=value,
        key=key,
        headers=dead_letter_headers(headers, letter),
        timestamp_ms=timestamp_ms,
    )
