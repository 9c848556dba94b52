"""A webhook sender that behaves like a real platform: signed deliveries, retried on 503 (honouring
Retry-After), on timeouts and on connection errors, one customer's events strictly one after another.
Chatbot events are signed with Standard Webhooks; Shopify events (an `Event` with a `shopify_topic`) with
Shopify's HMAC, to `shopify_url`.

It records every event id ingest answered 2xx for, so a test can check each of them is on raw-events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from shopbotly.cli.demo_cmd import sign_shopify, sign_standard_webhook

__all__ = ["Event", "Sender"]


@dataclass(frozen=True)
class Event:
    event_id: str
    body: dict[str, Any]
    shopify_topic: str | None = None  # a Shopify webhook (X-Shopify-Topic), else a chatbot event


@dataclass
class Sender:
    """Sends `lanes` (each an ordered list of events of one customer) to `url` at about `rate` events/s."""

    url: str
    secret: str
    lanes: list[list[Event]]
    rate: float = 70.0
    concurrency: int = 16
    max_retry_after_s: float = 2.0
    shopify_url: str | None = None
    shopify_secret: str | None = None
    accepted: dict[str, int] = field(default_factory=dict)  # event id -> the 2xx status
    answers: Counter[str] = field(default_factory=Counter)  # status or error class -> count
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # 4xx: event id, status, body
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def total(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    @property
    def progress(self) -> float:
        return len(self.accepted) / self.total

    async def _deliver(self, client: httpx.AsyncClient, event: Event) -> None:
        body = json.dumps(event.body).encode()
        while True:
            url, headers = self._signed(event, body)
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.answers[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            self.answers[str(response.status_code)] += 1
            if 200 <= response.status_code < 300:
                self.accepted[event.event_id] = response.status_code
                return
            if response.status_code in (429, 502, 503, 504):
                retry_after = float(response.headers.get("retry-after", "1"))
                await asyncio.sleep(min(retry_after, self.max_retry_after_s))
                continue
            self.refused.append((event.event_id, response.status_code, response.text[:300]))
            return

    def _signed(self, event: Event, body: bytes) -> tuple[str, dict[str, str]]:
        if event.shopify_topic is None:
            # Signed afresh on every attempt, as Standard Webhooks senders do (the timestamp moves on).
            return self.url, sign_standard_webhook(self.secret, body, msg_id=event.event_id)
        if self.shopify_url is None or self.shopify_secret is None:
            raise ValueError(f"{event.event_id} is a Shopify event: the sender needs shopify_url and _secret")
        headers = sign_shopify(self.shopify_secret, body, event.shopify_topic, webhook_id=event.event_id)
        return self.shopify_url, headers

    async def run(self) -> None:
        ready: deque[deque[Event]] = deque(deque(lane) for lane in self.lanes if lane)
        interval = 1.0 / self.rate
        next_slot = time.monotonic()
        slots = asyncio.Lock()
        wake = asyncio.Event()
        in_flight = 0

        async def pace() -> None:
            nonlocal next_slot
            async with slots:
                now = time.monotonic()
                next_slot = max(next_slot + interval, now)
                delay = next_slot - now
            if delay > 0:
                await asyncio.sleep(delay)

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal in_flight
            while True:
                if not ready:
                    if in_flight == 0:
                        wake.set()
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                lane = ready.popleft()
                in_flight += 1
                try:
                    await pace()
                    await self._deliver(client, lane.popleft())
                finally:
                    in_flight -= 1
                if lane:  # the customer's next event only after this one was accepted
                    ready.append(lane)
                wake.set()

        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            await asyncio.gather(*(worker(client) for _ in range(self.concurrency)))

    def start(self) -> None:
        def main() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:  # reported by the test through `error`
                self.error = exc
            finally:
                self.done.set()

        self._thread = threading.Thread(target=main, name="webhook-sender", daemon=True)
        self._thread.start()
