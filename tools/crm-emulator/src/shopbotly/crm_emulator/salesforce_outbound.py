"""Salesforce Outbound Messages: record changes sent as SOAP `notifications`, like an org's flow does.

Like Salesforce ("Understanding Notifications", SOAP API guide): notifications are queued and sent by a
background sender, up to 100 a message; a message counts as delivered only when the listener answers 200
with `<Ack>true</Ack>`, and is re-sent otherwise with growing delays (Salesforce caps them at two hours and
drops a message after 24 hours) and independently of other messages, so a listener sees repeats and
out-of-order deliveries. A notification's id stays the same across re-sends. Each message carries the
record's current fields (`fields` per sObject type), never the change.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from shopbotly.common.logging import get_logger
from shopbotly.common.sources.salesforce import Notification, outbound_message
from shopbotly.crm_emulator import metrics
from shopbotly.crm_emulator.domain import salesforce_id
from shopbotly.crm_emulator.sender import BackgroundSender, Outcome
from shopbotly.crm_emulator.settings import OutboundMessageSettings
from shopbotly.crm_emulator.store import Store

__all__ = ["OutboundAttempt", "OutboundMessenger", "acknowledged"]

log = get_logger(__name__)

_ACK = re.compile(rb"<(?:\w+:)?Ack>\s*true\s*</(?:\w+:)?Ack>")
# Notification ids are reserved from the store this many at a time (shared with HubSpot's event ids).
_ID_BLOCK = 1000


def acknowledged(status: int | None, body: bytes) -> bool:
    """Salesforce's test of a delivery: HTTP 200 and a notificationsResponse with Ack true."""
    return status == 200 and _ACK.search(body) is not None


@dataclass(frozen=True)
class OutboundAttempt:
    message_id: int
    attempt_number: int
    notification_ids: list[str]
    status: int | None
    error: str | None
    at_ms: int
    outcome: Literal["acknowledged", "retry", "dropped"]


class OutboundMessenger(BackgroundSender[Notification, OutboundAttempt]):
    name = "crm-emulator-outbound-messages"

    def __init__(
        self,
        config: OutboundMessageSettings,
        organization_id: str,
        store: Store,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            {"notifications": 0, "messages_acknowledged": 0, "messages_dropped": 0}, clock, transport
        )
        self.config = config
        self.organization_id = organization_id
        self._store = store
        self._ids = range(0)
        self._message_ids = itertools.count(1)

    def configure(self, config: OutboundMessageSettings) -> None:
        self.config = config

    def notify(self, sobject_type: str, record: Mapping[str, Any]) -> str | None:
        """Queue a notification of the record's current fields (those the message is set up with);
        its id, or None when no outbound message is set up for this sObject type."""
        wanted = self.config.fields.get(sobject_type)
        if self.config.url is None or wanted is None:
            return None
        note = Notification(self._next_id(), sobject_type, {f: record.get(f) for f in ("Id", *wanted)})
        self.stats["notifications"] += 1
        metrics.WEBHOOK_EVENTS.labels("emitted").inc()
        self._enqueue([note])
        return note.id

    def _next_id(self) -> str:
        if not self._ids:
            self._ids = self._store.reserve_event_ids(_ID_BLOCK, floor=int(self._clock() * 1000))
        number, self._ids = self._ids[0], self._ids[1:]
        return salesforce_id("04l", number)

    def view(self) -> dict[str, Any]:
        config = self.config.model_dump()
        if config.get("url"):
            config["url"] = re.sub(r"([?&]token=)[^&]*", r"\1***", config["url"])
        return {
            **self._view(config, "pending_notifications", "messages_in_flight"),
            "organization_id": self.organization_id,
        }

    # --- sending ---------------------------------------------------------------------------------

    def _batch_window_s(self) -> float:
        return self.config.batch_window_ms / 1000

    def _dispatch(self) -> None:
        # One message per sObject type (each is its own outbound message action), up to 100 each.
        by_type: dict[str, list[Notification]] = {}
        while self._pending:
            note = self._pending.popleft()
            by_type.setdefault(note.sobject_type, []).append(note)
        for notes in by_type.values():
            for start in range(0, len(notes), self.config.max_batch_size):
                batch = notes[start : start + self.config.max_batch_size]
                self._spawn(self._deliver(next(self._message_ids), batch))

    async def _deliver(self, message_id: int, notes: list[Notification]) -> None:
        first_at = self._clock()
        ids = [n.id for n in notes]
        names: dict[Outcome, Literal["acknowledged", "retry", "dropped"]] = {
            "ok": "acknowledged",
            "retry": "retry",
            "gave_up": "dropped",
        }

        async def attempt_once(attempt: int) -> tuple[int | None, str | None, bool]:
            status, error = await self._attempt(self.config, notes)
            return status, error, error is None and status == 200

        def may_retry(attempt: int) -> bool:
            config = self.config
            return self._clock() - first_at < config.max_age_s and attempt + 1 < config.max_attempts

        def record(attempt: int, status: int | None, error: str | None, outcome: Outcome) -> None:
            at_ms = int(self._clock() * 1000)
            self.attempts.append(
                OutboundAttempt(message_id, attempt, ids, status, error, at_ms, names[outcome])
            )
            metrics.WEBHOOK_ATTEMPTS.labels(names[outcome]).inc()
            if outcome == "gave_up":
                log.warning(
                    "outbound_message_dropped", message_id=message_id, attempts=attempt + 1, status=status
                )

        acknowledged_ = await self._until_accepted(
            attempt_once,
            may_retry=may_retry,
            pace_ms=lambda: (self.config.retry_initial_ms, self.config.retry_max_ms),
            record=record,
        )
        self.stats["messages_acknowledged" if acknowledged_ else "messages_dropped"] += 1

    async def _attempt(
        self, config: OutboundMessageSettings, notes: list[Notification]
    ) -> tuple[int | None, str | None]:
        assert self._client is not None
        if config.url is None:
            return None, "no endpoint URL configured"
        body = outbound_message(
            organization_id=self.organization_id,
            action_id=config.action_id,
            notifications=notes,
            enterprise_url=f"{config.instance_url}/services/Soap/c/62.0/{self.organization_id[:15]}",
            partner_url=f"{config.instance_url}/services/Soap/u/62.0/{self.organization_id[:15]}",
        )
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""', "User-Agent": "Axis/1.4"}
        status, answer, error = await self._post(config.url, body, headers, config.timeout_ms / 1000)
        if error is None and not acknowledged(status, answer):
            error = "no <Ack>true</Ack> in the answer"
        return status, error
