"""The attempts of one write on one route, until it is applied or its outcome is final.

Attempts are spent only on the write's own failures while the connection's circuit is closed: a throttled
answer (the limiter holds the whole connection back), an outage (the circuit is open, or a refused
connection opened it) and failures during an outage spend none, so a destination that is down never
dead-letters what waits for it. Permanent and auth errors end at once; retryable ones back off with full
jitter up to the connection's `max_attempts`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from shopbotly.common.errors import (
    AuthError,
    ErrorClass,
    OutageError,
    PermanentError,
    RetryableError,
    ShopbotlyError,
)
from shopbotly.common.events import utcnow
from shopbotly.common.logging import bound, get_logger
from shopbotly.crm_writer import metrics
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.domain import Write
from shopbotly.crm_writer.retry import RetryPolicy
from shopbotly.crm_writer.routing import Route
from shopbotly.crm_writer.verdict import ThrottledError

__all__ = ["AttemptLog", "Deliverer", "Delivery"]

log = get_logger(__name__)


@dataclass
class AttemptLog:
    """The tries of one write: when, how long, what came of it, and the CRM's answer. Bounded: the first
    `keep_first` and the latest ones are kept (a long outage or 429 storm would otherwise grow it), and
    `omitted` counts those dropped in between."""

    limit: int = 20
    keep_first: int = 3
    answer_chars: int = 300
    entries: list[dict[str, object]] = field(default_factory=list)
    omitted: int = 0

    def add(
        self, n: int, at: datetime, seconds: float, outcome: str, *, status: int | None, answer: str | None
    ) -> None:
        if len(self.entries) >= self.limit:
            del self.entries[self.keep_first]
            self.omitted += 1
        entry: dict[str, object] = {
            "n": n,
            "at": at.isoformat(timespec="milliseconds"),
            "ms": round(seconds * 1000, 1),
            "outcome": outcome,
        }
        if status is not None:
            entry["status"] = status
        if answer:
            entry["answer"] = answer[: self.answer_chars]
        self.entries.append(entry)

    def to_header(self) -> bytes:
        """The value of the result's ATTEMPTS_HEADER."""
        return orjson.dumps({"tries": self.entries, "omitted": self.omitted})


@dataclass
class Delivery:
    ok: bool
    crm_ids: dict[str, str]
    tries: int
    first_at: datetime
    last_at: datetime
    error: ShopbotlyError | None = None
    log: AttemptLog = field(default_factory=AttemptLog)


class Deliverer:
    def __init__(
        self,
        *,
        retry_base_s: float,
        retry_cap_s: float,
        throttle_outage_after: int,
        rng: random.Random | None = None,
    ) -> None:
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.throttle_outage_after = throttle_outage_after
        self._rng = rng or random.Random()

    async def deliver(self, route: Route, write: Write, *, partition: int) -> Delivery:
        runtime = route.runtime
        cfg = runtime.config
        policy = RetryPolicy(
            max_attempts=cfg.max_attempts,
            base_s=self.retry_base_s,
            cap_s=self.retry_cap_s,
            max_retry_after_s=cfg.max_retry_after_s,
        )
        first_at = utcnow()
        attempts = AttemptLog()
        tries = 0
        counted = 0
        throttled = 0
        cmd = write.commands[-1]
        with bound(
            event_id=cmd.causation_event_id,
            tenant=cmd.tenant,
            trace_id=cmd.trace_id,
            command_id=cmd.command_id,
            connection=runtime.name,
            op=write.op.value,
            merged=len(write.commands),
        ):
            at, started = first_at, time.perf_counter()

            def note(outcome: str, exc: ShopbotlyError | None = None) -> None:
                """Log the try in progress (started at `at`)."""
                attempts.add(
                    tries,
                    at,
                    time.perf_counter() - started,
                    outcome,
                    status=exc.status if exc else None,
                    answer=exc.message if exc else None,
                )

            while True:
                tries += 1
                at, started = utcnow(), time.perf_counter()
                try:
                    crm_ids = await route.connector.apply(write, partition=partition)
                    note("applied")
                    return Delivery(True, crm_ids, tries, first_at, utcnow(), log=attempts)
                except ThrottledError as exc:
                    note("throttled", exc)
                    # The limiter holds the whole connection back; this write did nothing wrong, so no
                    # attempt is spent. A short jittered nap keeps a per-record 429 from spinning, and
                    # throttling without end is an outage (the circuit takes over, nothing is dropped).
                    metrics.RETRIES.labels(runtime.name, "throttled").inc()
                    throttled += 1
                    if throttled % self.throttle_outage_after == 0:
                        runtime.trip(f"throttled {throttled} times in a row", exc.retry_after)
                    await asyncio.sleep(self._rng.uniform(0.0, min(exc.retry_after or 0.5, 0.5)))
                except OutageError as exc:
                    note(ErrorClass.OUTAGE.value, exc)
                    # The circuit is open: the next try waits for it (and for its probe) in permit().
                    metrics.RETRIES.labels(runtime.name, ErrorClass.OUTAGE.value).inc()
                    if runtime.circuit_state is CircuitState.CLOSED:
                        runtime.trip(exc.message, exc.retry_after)  # reported per record, not per request
                except (AuthError, PermanentError) as exc:
                    note(exc.error_class.value, exc)
                    return Delivery(False, {}, tries, first_at, utcnow(), exc, log=attempts)
                except RetryableError as exc:
                    if runtime.circuit_state is not CircuitState.CLOSED:
                        # Part of an outage, not this write's failure: wait for the circuit, no attempt spent.
                        note(ErrorClass.OUTAGE.value, exc)
                        metrics.RETRIES.labels(runtime.name, ErrorClass.OUTAGE.value).inc()
                        continue
                    note(ErrorClass.RETRYABLE.value, exc)
                    counted += 1
                    if policy.exhausted(counted):
                        return Delivery(False, {}, tries, first_at, utcnow(), exc, log=attempts)
                    metrics.RETRIES.labels(runtime.name, ErrorClass.RETRYABLE.value).inc()
                    delay = policy.delay(counted, exc.retry_after, self._rng)
                    log.info(
                        "write failed, retrying", error=exc.message, attempt=counted, delay_s=round(delay, 2)
                    )
                    await asyncio.sleep(delay)
