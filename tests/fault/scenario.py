"""What the whole-stack fault tests share: a run on a private broker with a timeline of what was done when,
waiting for the webhook stream to reach a point, and the chatbot's lead events with the contact they make."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shopbotly.common.topics import Topic
from tests.fault.sender import Sender
from tests.stack import Message, PrivateKafka, Stack, StackSecrets, poll, read_topic

__all__ = ["FaultRun", "lead_contact", "lead_qualified", "wait_progress"]


@dataclass
class FaultRun:
    """A stack on a broker of its own, and the timeline (seconds since start, what) its failures show."""

    stack: Stack
    kafka: PrivateKafka
    prefix: str
    secrets: StackSecrets
    timeline: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)  # the same instant, wall clock

    def note(self, what: str) -> None:
        self.timeline.append((round(time.monotonic() - self.started, 1), what))

    def since_start(self, wall_clock: float) -> float:
        """A wall-clock time (e.g. a delivery's) as seconds on the timeline."""
        return round(wall_clock - self.started_at, 1)

    def logs(self) -> str:
        return (
            f"timeline (s, what): {self.timeline}\n\n{self.stack.logs()}"
            f"\n\n--- kafka ({self.kafka.log_path}) ---\n{self.kafka.tail()}"
        )

    def topic_name(self, logical: Topic) -> str:
        return f"{self.prefix}{logical.value}"

    def topic(self, logical: Topic) -> list[Message]:
        return read_topic(self.kafka.bootstrap, self.topic_name(logical), timeout=120)


def wait_progress(senders: Sequence[Sender], fraction: float, run: FaultRun, timeout: float = 240) -> None:
    """Until the senders together had `fraction` of their events accepted; fails if they finished before
    (a fault injected then would not be mid-stream)."""

    def progress() -> float:
        return sum(len(s.accepted) for s in senders) / sum(s.total for s in senders)

    def finished() -> bool:
        return all(s.done.is_set() for s in senders)

    poll(
        lambda: progress() >= fraction or finished(),
        timeout=timeout,
        what=f"the stream at {fraction:.0%}",
        interval=0.1,
        context=lambda: (
            f"stream at {progress():.1%}, answers so far {[dict(s.answers) for s in senders]}\n{run.logs()}"
        ),
    )
    assert not finished(), f"the stream ended before {fraction:.0%}: the fault would not be mid-stream"
    run.note(f"stream at {progress():.0%}")


def lead_qualified(
    email: str, *, first_name: str, last_name: str, conversation_id: str, score: float, tags: list[str]
) -> dict[str, Any]:
    """The chatbot's `lead.qualified` event (shopbotly preset: upsert_lead + add_tags)."""
    return {
        "type": "lead.qualified",
        "timestamp": "2026-11-24T10:00:00Z",
        "data": {
            "conversation_id": conversation_id,
            "customer": {"email": email, "first_name": first_name, "last_name": last_name},
            "intent_score": score,
            "tags": tags,
        },
    }


def lead_contact(
    email: str, *, first_name: str, last_name: str, conversation_id: str, score: float
) -> dict[str, str]:
    """The HubSpot contact properties a `lead.qualified` event leaves when it is the customer's last."""
    return {
        "email": email,
        "firstname": first_name,
        "lastname": last_name,
        "shopbotly_conversation_id": conversation_id,
        "lifecyclestage": "lead",
        "shopbotly_intent_score": str(score),
    }
