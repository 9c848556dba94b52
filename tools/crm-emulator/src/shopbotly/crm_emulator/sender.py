"""The background sender both emulated CRMs push with: a queue, one task that batches it, one task per
delivery (each retried on its own, as HubSpot and Salesforce do), and the bookkeeping the admin API shows."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from typing import Any, Generic, Literal, TypeVar

import httpx

from shopbotly.crm_emulator.domain import retry_delay_s

__all__ = ["BackgroundSender", "Outcome"]

# What became of one attempt: accepted, tried again later, or the last one.
Outcome = Literal["ok", "retry", "gave_up"]

Item = TypeVar("Item")
Attempt = TypeVar("Attempt")


class BackgroundSender(Generic[Item, Attempt]):
    """Subclasses implement `_batch_window_s` and `_dispatch` (take from `_pending`, `_spawn` deliveries)."""

    name = "crm-emulator-sender"

    def __init__(
        self,
        stats: dict[str, int],
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._clock = clock
        self._transport = transport
        self._pending: deque[Item] = deque()
        self._client: httpx.AsyncClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self.attempts: deque[Attempt] = deque(maxlen=2000)
        self.stats = stats

    def _batch_window_s(self) -> float:
        raise NotImplementedError

    def _dispatch(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Both CRMs group what happens close together into one request.
            if window := self._batch_window_s():
                await asyncio.sleep(window)
            self._dispatch()

    def _view(self, config: dict[str, Any], queued: str, in_flight: str) -> dict[str, Any]:
        """What the admin API shows: the config (secrets masked by the caller), queue, stats, attempts."""
        return {
            "config": config,
            queued: len(self._pending),
            in_flight: len(self._deliveries),
            "stats": dict(self.stats),
            "attempts": [asdict(a) for a in self.attempts],  # type: ignore[call-overload]
        }

    def _on_start(self) -> None:
        """Per-start state beside the client (a concurrency limit)."""

    def _ensure_started(self) -> None:
        # Started by the app's lifespan; also lazily, for apps driven without one (ASGITransport).
        if self._runner is not None and not self._runner.done():
            return
        self._wakeup = asyncio.Event()
        self._on_start()
        self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        self._runner = asyncio.create_task(self._run(), name=self.name)

    def _enqueue(self, items: list[Item]) -> None:
        self._pending.extend(items)
        self._ensure_started()
        assert self._wakeup is not None
        self._wakeup.set()

    def _spawn(self, delivery: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(delivery)
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def start(self) -> None:
        self._ensure_started()

    async def aclose(self) -> None:
        tasks = [t for t in (self._runner, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def clear(self) -> None:
        """Forget what is queued and the attempt log (the admin reset); deliveries in flight finish."""
        self._pending.clear()
        self.attempts.clear()
        for key in self.stats:
            self.stats[key] = 0

    @property
    def idle(self) -> bool:
        return not self._pending and not self._deliveries

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued was delivered or given up on; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.idle:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[int | None, bytes, str | None]:
        """Status, body and error of one POST; status None when it timed out or could not connect."""
        assert self._client is not None
        try:
            response = await self._client.post(url, content=body, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException:
            return None, b"", "timeout"
        except httpx.HTTPError as exc:
            return None, b"", f"{type(exc).__name__}: {exc}"
        return response.status_code, response.content, None

    async def _until_accepted(
        self,
        attempt_once: Callable[[int], Awaitable[tuple[int | None, str | None, bool]]],
        *,
        may_retry: Callable[[int], bool],
        pace_ms: Callable[[], tuple[int, int]],
        record: Callable[[int, int | None, str | None, Outcome], None],
    ) -> bool:
        """Attempt a delivery until it is accepted or `may_retry(attempt)` says no, waiting the growing
        delays `pace_ms()` gives (initial, cap) in between; True when it was accepted."""
        attempt = 0
        while True:
            status, error, accepted = await attempt_once(attempt)
            again = not accepted and may_retry(attempt)
            record(attempt, status, error, "ok" if accepted else "retry" if again else "gave_up")
            if not again:
                return accepted
            initial_ms, max_ms = pace_ms()
            await asyncio.sleep(retry_delay_s(attempt, initial_ms, max_ms))
            attempt += 1
