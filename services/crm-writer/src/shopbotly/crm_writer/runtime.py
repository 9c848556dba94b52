"""A connection at run time: every HTTP request to a CRM or bot passes its circuit and rate limit here.

`ConnectionRuntime.call()` waits for the circuit (open → wait; half-open → one probe), takes a rate token
(FIFO), sends with auth (a 401 refreshes the token once and sends again), classifies the answer with the
connector's classifier, and feeds the verdict back: quota headers and 429s to the limiter, failures and
outage signals to the breaker. `BatchQueue` gathers records of many identities into one batch request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx

from shopbotly.common.config import ConnectionConfig
from shopbotly.common.errors import RetryableError
from shopbotly.common.logging import get_logger
from shopbotly.crm_writer import metrics
from shopbotly.crm_writer.circuit import CircuitBreaker, CircuitState
from shopbotly.crm_writer.clients import certificate_error
from shopbotly.crm_writer.ratelimit import AdaptiveRateLimit
from shopbotly.crm_writer.tokens import TokenManager
from shopbotly.crm_writer.verdict import Quota, Verdict, VerdictKind

__all__ = ["BatchQueue", "BreakerSettings", "ConnectionRuntime", "Permit"]

log = get_logger(__name__)

I = TypeVar("I")  # noqa: E741 - the conventional name for a batch item type
R = TypeVar("R")

Classifier = Callable[[httpx.Response], Verdict]


@dataclass
class Permit:
    """Leave to send one request: past the circuit (as its probe when `probe`) and holding a rate token."""

    probe: bool
    used: bool = False


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    open_s: float = 5.0
    max_open_s: float = 300.0
    throttle_outage_after: int = 50


class ConnectionRuntime:
    """Circuit breaker, rate limit, credentials and HTTP client of one `tenant:connection`."""

    def __init__(
        self,
        name: str,
        config: ConnectionConfig,
        client: httpx.AsyncClient,
        *,
        breaker: BreakerSettings,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_circuit_change: Callable[[ConnectionRuntime], None] | None = None,
        reload_trust: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.client = client
        # Reads the connection's CA bundle again (clients.py); True when there was one to read.
        self._reload_trust = reload_trust or (lambda: False)
        self._clock = clock
        rl = config.rate_limit
        self.limit = AdaptiveRateLimit(
            requests=rl.requests,
            per_seconds=rl.per_seconds,
            burst=rl.effective_burst(),
            now=clock(),
            share=share,
        )
        self.breaker = CircuitBreaker(
            failure_threshold=breaker.failure_threshold, open_s=breaker.open_s, max_open_s=breaker.max_open_s
        )
        self._throttle_outage_after = breaker.throttle_outage_after
        self._consecutive_throttles = 0
        self.tokens = TokenManager(config.auth, client)
        self._limit_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._on_circuit_change = on_circuit_change
        self._reported_state = CircuitState.CLOSED
        # What `GET /connections` reports: the CRM's last quota headers, 429s, the last failure.
        self.quota: Quota | None = None
        self.throttled = 0
        self.last_error: tuple[float, str] | None = None  # (unix time, message)
        metrics.CIRCUIT_STATE.labels(name).set(CircuitState.CLOSED)
        metrics.RATE_LIMIT_RATE.labels(name).set(self.limit.requests_per_second)

    # -- circuit and limit ------------------------------------------------------------------------

    @property
    def circuit_state(self) -> CircuitState:
        return self.breaker.state

    def set_share(self, share: float) -> None:
        self.limit.set_share(share, self._clock())
        metrics.RATE_LIMIT_RATE.labels(self.name).set(self.limit.requests_per_second)

    async def permit(self) -> Permit:
        while True:
            decision = self.breaker.allow(self._clock())
            self._changed_state()  # allow() may have moved OPEN → HALF_OPEN
            if not decision.go:
                await self._wait_for_change(decision.wait_s)
                continue
            try:
                async with self._limit_lock:
                    # Short naps: a rebalance may change this replica's share meanwhile.
                    while (wait := self.limit.reserve(self._clock())) > 0:  # noqa: ASYNC110 - time, not an event
                        await asyncio.sleep(min(wait, 0.5))
            except BaseException:
                self.breaker.abandon(probe=decision.probe)
                raise
            if not decision.probe and self.breaker.state is not CircuitState.CLOSED:
                # The circuit opened while this caller waited for a token: give it back and wait.
                self.limit.refund(self._clock())
                continue
            return Permit(probe=decision.probe)

    def trip(self, reason: str, retry_after: float | None = None) -> None:
        """An outage reported inside an answer (per record): open the circuit as for a whole request."""
        self.breaker.trip(self._clock(), open_for_s=retry_after, reason=reason)
        if self._changed_state():
            log.warning("circuit opened", connection=self.name, reason=reason)

    def abandon(self, permit: Permit) -> None:
        """A permit that will not be used (nothing left to send, or cancelled before sending)."""
        if permit.used:
            return
        permit.used = True
        self.limit.refund(self._clock())
        self.breaker.abandon(probe=permit.probe)

    async def _wait_for_change(self, max_wait_s: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.01, max_wait_s))

    def _changed_state(self) -> bool:
        state = self.breaker.state
        if state is not self._reported_state:
            self._reported_state = state
            metrics.CIRCUIT_STATE.labels(self.name).set(state)
            # Wake everyone waiting for the circuit; a fresh event serves the next wait.
            self._changed.set()
            self._changed = asyncio.Event()
            if self._on_circuit_change is not None:
                self._on_circuit_change(self)
            return True
        return False

    def settle(self, permit: Permit, verdict: Verdict) -> None:
        """Feed an answer (or a failure to get one) back into the limiter and the circuit."""
        permit.used = True
        now = self._clock()
        quota = verdict.quota
        if not verdict.ok:
            self.last_error = (time.time(), verdict.message or f"HTTP {verdict.status}")
        if quota is not None:
            self.quota = quota
            self.limit.observe(
                now, max_requests=quota.max_requests, interval_s=quota.interval_s, remaining=quota.remaining
            )
            if quota.remaining is not None:
                metrics.RATE_LIMIT_REMAINING.labels(self.name, "window").set(quota.remaining)
            if quota.daily_remaining is not None:
                metrics.RATE_LIMIT_REMAINING.labels(self.name, "daily").set(quota.daily_remaining)
            metrics.RATE_LIMIT_RATE.labels(self.name).set(self.limit.requests_per_second)
        kind = verdict.kind
        if kind is VerdictKind.THROTTLED:
            self.throttled += 1
            self._consecutive_throttles += 1
            metrics.THROTTLED.labels(self.name, verdict.policy or "unknown").inc()
            wait = verdict.retry_after if verdict.retry_after is not None else 1.0
            self.limit.throttled(now, min(wait, self.config.max_retry_after_s))
            if self._consecutive_throttles >= self._throttle_outage_after:
                self.breaker.trip(
                    now, reason=f"{self._consecutive_throttles} throttled answers in a row", open_for_s=None
                )
                self._consecutive_throttles = 0
            elif permit.probe:
                self.breaker.failure(now, probe=True, reason="probe throttled")
        elif kind is VerdictKind.OUTAGE:
            self.breaker.trip(now, open_for_s=verdict.retry_after, reason=verdict.message)
        elif kind is VerdictKind.RETRY:
            self.breaker.failure(now, probe=permit.probe, reason=verdict.message)
        else:
            self._consecutive_throttles = 0
            self.breaker.success(probe=permit.probe)
        if self._changed_state() and self.breaker.state is CircuitState.OPEN:
            log.warning(
                "circuit opened",
                connection=self.name,
                reason=self.breaker.reason,
                open_for_s=round(self.breaker.open_until - now, 1),
            )
        elif self.breaker.state is CircuitState.CLOSED and permit.probe:
            log.info("circuit closed", connection=self.name)

    # -- requests ---------------------------------------------------------------------------------

    async def exchange(
        self,
        request: httpx.Request,
        *,
        op: str,
        classify: Classifier,
        permit: Permit,
        records: int = 1,
    ) -> tuple[httpx.Response | None, Verdict]:
        """Send one request under `permit` and settle its verdict. Transport failures become RETRY."""
        started = self._clock()
        response: httpx.Response | None = None
        try:
            response = await self.client.send(request)
            await response.aread()
        except httpx.ConnectError as exc:
            if (tls := certificate_error(exc)) is not None:
                # The server is not the one configured, or its CA is not trusted: no retry fixes that and
                # waiting does not either (an outage would hold the partition for ever). An auth failure:
                # the CA bundle is read again once (`call`), then the write is dead-lettered.
                status = "tls"
                verdict = Verdict(VerdictKind.AUTH, 0, _tls_message(tls, request, self.config))
            else:
                # Nothing listens, or the host cannot be reached: the destination is down, not this request
                # wrong. An outage at once (the circuit opens, the lane holds, no attempt is spent), so a
                # down endpoint never exhausts a command's attempts into the dead-letter queue.
                status = "error"
                verdict = Verdict(
                    VerdictKind.OUTAGE,
                    0,
                    f"cannot connect ({type(exc).__name__}) for {request.method} {request.url.path}",
                )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            status = "timeout" if isinstance(exc, httpx.TimeoutException) else "error"
            verdict = Verdict(
                VerdictKind.RETRY, 0, f"{type(exc).__name__} on {request.method} {request.url.path}"
            )
        except BaseException:
            self.abandon(permit)
            raise
        else:
            status = str(response.status_code)
            verdict = classify(response)
        metrics.REQUESTS.labels(self.name, op, status).inc()
        metrics.REQUEST_DURATION.labels(self.name, op).observe(self._clock() - started)
        if records > 1 or op.startswith("batch"):
            metrics.BATCH_RECORDS.labels(self.name, op).observe(records)
        self.settle(permit, verdict)
        return response, verdict

    async def call(
        self,
        build: Callable[[dict[str, str]], httpx.Request],
        *,
        op: str,
        classify: Classifier,
        permit: Permit | None = None,
        records: int = 1,
    ) -> tuple[httpx.Response | None, Verdict]:
        """One authenticated request; a 401 refreshes the credentials once and sends again."""
        permit = permit if permit is not None else await self.permit()
        try:
            headers = await self.tokens.headers()
        except RetryableError as exc:
            # The identity provider is down: as much an outage of this connection as the CRM being down.
            self.settle(permit, Verdict(VerdictKind.RETRY, exc.status or 0, exc.message))
            raise
        except BaseException:
            self.abandon(permit)
            raise
        sent_token = self.tokens.current_value()
        response, verdict = await self._build_and_send(build, headers, op, classify, permit, records)
        # No answer and an auth verdict: the server's certificate was refused (`exchange`).
        if verdict.kind is VerdictKind.AUTH and response is None:
            if self._reload_trust():  # a new token would not help; a CA rotated on disk may
                permit = await self.permit()
                response, verdict = await self._build_and_send(build, headers, op, classify, permit, records)
        elif verdict.kind is VerdictKind.AUTH and self.tokens.refreshes:
            self.tokens.invalidate(sent_token)
            permit = await self.permit()
            try:
                headers = await self.tokens.headers()
            except BaseException:
                self.abandon(permit)
                raise
            response, verdict = await self._build_and_send(build, headers, op, classify, permit, records)
        return response, verdict

    async def _build_and_send(
        self,
        build: Callable[[dict[str, str]], httpx.Request],
        headers: dict[str, str],
        op: str,
        classify: Classifier,
        permit: Permit,
        records: int,
    ) -> tuple[httpx.Response | None, Verdict]:
        try:
            request = build(headers)
        except BaseException:
            self.abandon(permit)
            raise
        return await self.exchange(request, op=op, classify=classify, permit=permit, records=records)


class BatchQueue(Generic[I, R]):
    """Gathers items submitted by many identities' workers into batch requests.

    The sender takes a permit (circuit + rate token) before it drains the queue, so while it waits for
    the limit, items pile up and the next request carries as many as fit: under load batches fill, and
    when idle a lone item goes out at once. `send` returns one result or exception per item, in order.
    """

    def __init__(
        self,
        runtime: ConnectionRuntime,
        *,
        max_batch: int,
        max_concurrent: int,
        send: Callable[[Permit, list[I]], Awaitable[Sequence[R | BaseException]]],
    ) -> None:
        self._runtime = runtime
        self._max_batch = max_batch
        self._send = send
        self._queue: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"batch-{self._runtime.name}")
        return await future

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            try:
                permit = await self._runtime.permit()
            except BaseException:
                self._slots.release()
                raise
            batch: list[tuple[I, asyncio.Future[R]]] = []
            while self._queue and len(batch) < self._max_batch:
                item, future = self._queue.popleft()
                if not future.done():  # its worker was cancelled (revoke, shutdown): skip it
                    batch.append((item, future))
            if not batch:
                self._runtime.abandon(permit)
                self._slots.release()
                continue
            task = asyncio.create_task(self._deliver(permit, batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, permit: Permit, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await self._send(permit, [item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch sender returned {len(results)} results for {len(batch)} items")
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        finally:
            self._runtime.abandon(permit)  # no-op when the permit was used
            self._slots.release()

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while self._queue:
            _, future = self._queue.popleft()
            future.cancel()


def _tls_message(exc: ssl.SSLError, request: httpx.Request, config: ConnectionConfig) -> str:
    reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    trusted = f"the CA bundle {config.tls.ca_bundle}" if config.tls.ca_bundle else "the system's CAs"
    return (
        f"TLS: the certificate of {request.url.host} is not trusted ({reason}) for {request.method} "
        f"{request.url.path}; trusted: {trusted}. Set tls.ca_bundle to the CA that signed it, or fix the "
        "server's certificate (docs/operations.md, certificate errors)"
    )
