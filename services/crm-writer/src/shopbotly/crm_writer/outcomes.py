"""What a command came to, published before its offset counts as finished: an `applied` result and its ledger
entry, a `duplicate` result (the ledger knew it), or a dead letter and its `dead_lettered` result.

Every publish waits for the broker's acknowledgement and is retried until it gets one (the offset waits:
nothing is committed before its outcome is durable).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from shopbotly.common.dlq import DeadLetter, publish_dead_letter
from shopbotly.common.errors import PermanentError, ShopbotlyError
from shopbotly.common.events import (
    ATTEMPTS_HEADER,
    CommandOutcome,
    CommandResult,
    CrmCommand,
    Headers,
    LedgerEntry,
    message_headers,
    utcnow,
)
from shopbotly.common.kafka import ResilientProducer
from shopbotly.common.logging import bound, get_logger
from shopbotly.crm_writer import metrics
from shopbotly.crm_writer.delivery import Delivery
from shopbotly.crm_writer.domain import Envelope, Write
from shopbotly.crm_writer.lanes import lane_of
from shopbotly.crm_writer.ledger import Ledger

__all__ = ["SERVICE", "Outcomes"]

log = get_logger(__name__)
SERVICE = "crm-writer"


class Outcomes:
    def __init__(
        self, producer: ResilientProducer, ledger: Ledger, *, results_topic: str, dlq_topic: str
    ) -> None:
        self._producer = producer
        self._ledger = ledger
        self.results_topic = results_topic
        self.dlq_topic = dlq_topic

    def _result(
        self, env: Envelope, cmd: CrmCommand, result: CommandResult, delivery: Delivery | None = None
    ) -> Callable[[], Awaitable[object]]:
        """The send of a command's result, keyed like the command; the tries of its write in a header."""
        headers = self._headers(cmd, CommandResult.SCHEMA)
        if delivery is not None and delivery.log.entries:
            headers.append((ATTEMPTS_HEADER, delivery.log.to_header()))
        return self._send(self.results_topic, result.to_json(), env.key or cmd.key(), headers)

    def _headers(self, cmd: CrmCommand, schema: str) -> Headers:
        return message_headers(
            event_id=cmd.causation_event_id, tenant=cmd.tenant, trace_id=cmd.trace_id, schema=schema
        )

    async def publish(self, sends: list[Callable[[], Awaitable[object]]]) -> None:
        """Publish and wait for every acknowledgement; a failed publish is retried (the offset waits)."""
        delay = 0.2
        pending = sends
        while pending:
            outcomes = await asyncio.gather(*(send() for send in pending), return_exceptions=True)
            failed = [s for s, o in zip(pending, outcomes, strict=True) if isinstance(o, BaseException)]
            for o in outcomes:
                if isinstance(o, asyncio.CancelledError):
                    raise o
            if failed:
                errors = {type(o).__name__ for o in outcomes if isinstance(o, BaseException)}
                log.warning("publish failed, retrying", failed=len(failed), errors=sorted(errors))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            pending = failed

    def _send(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers
    ) -> Callable[[], Awaitable[object]]:
        producer = self._producer
        return lambda: producer.send_and_wait(topic, value, key=key, headers=headers)

    async def applied(self, write: Write, members: list[Envelope], delivery: Delivery) -> None:
        ledger = self._ledger
        ids = [c.command_id for c in write.commands]
        now = utcnow()
        sends: list[Callable[[], Awaitable[object]]] = []
        for env, cmd in zip(members, write.commands, strict=True):
            entry = LedgerEntry(
                command_id=cmd.command_id,
                tenant=cmd.tenant,
                connection=cmd.connection,
                crm_ids=delivery.crm_ids,
            )
            headers = self._headers(cmd, LedgerEntry.SCHEMA)
            sends.append(functools.partial(ledger.record, entry, headers=headers))
            result = CommandResult(
                command_id=cmd.command_id,
                tenant=cmd.tenant,
                connection=cmd.connection,
                identity=cmd.identity,
                op=cmd.op,
                outcome=CommandOutcome.APPLIED,
                crm_ids=delivery.crm_ids,
                attempts=delivery.tries,
                coalesced_with=[i for i in ids if i != cmd.command_id],
            )
            sends.append(self._result(env, cmd, result, delivery))
            metrics.COMMANDS.labels(f"{cmd.tenant}:{cmd.connection}", cmd.op.value, "applied").inc()
            if cmd.received_at is not None:
                metrics.E2E_LATENCY.labels(f"{cmd.tenant}:{cmd.connection}").observe(
                    max(0.0, (now - cmd.received_at).total_seconds())
                )
        await self.publish(sends)

    async def duplicate(self, env: Envelope, cmd: CrmCommand, crm_ids: dict[str, str]) -> None:
        result = CommandResult(
            command_id=cmd.command_id,
            tenant=cmd.tenant,
            connection=cmd.connection,
            identity=cmd.identity,
            op=cmd.op,
            outcome=CommandOutcome.DUPLICATE,
            crm_ids=crm_ids,
            attempts=0,
        )
        metrics.COMMANDS.labels(f"{cmd.tenant}:{cmd.connection}", cmd.op.value, "duplicate").inc()
        await self.publish([self._result(env, cmd, result)])

    async def dead_letter(
        self,
        env: Envelope,
        cmd: CrmCommand | None,
        error: ShopbotlyError | None,
        *,
        tries: int,
        delivery: Delivery | None = None,
    ) -> None:
        producer = self._producer
        err = error or PermanentError("unknown failure")
        letter = DeadLetter(
            error_class=err.error_class,
            error_message=err.message,
            attempts=tries,
            origin_topic=env.topic,
            origin_partition=env.partition,
            origin_offset=env.offset,
            origin_service=SERVICE,
            first_at=delivery.first_at if delivery else None,
            last_at=delivery.last_at if delivery else None,
        )
        sends: list[Callable[[], Awaitable[object]]] = [
            lambda: publish_dead_letter(
                producer,
                self.dlq_topic,
                key=env.key,
                value=env.value,
                headers=env.headers,
                timestamp_ms=env.timestamp_ms,
                letter=letter,
            )
        ]
        label = lane_of(env)
        if cmd is not None:
            result = CommandResult(
                command_id=cmd.command_id,
                tenant=cmd.tenant,
                connection=cmd.connection,
                identity=cmd.identity,
                op=cmd.op,
                outcome=CommandOutcome.DEAD_LETTERED,
                attempts=tries,
                error_class=err.error_class.value,
                error_message=err.message[:2000],
            )
            sends.append(self._result(env, cmd, result, delivery))
            metrics.COMMANDS.labels(label, cmd.op.value, "dead_lettered").inc()
        metrics.DEAD_LETTERED.labels(label, err.error_class.value).inc()
        with bound(
            event_id=cmd.causation_event_id if cmd else None,
            tenant=cmd.tenant if cmd else None,
            trace_id=cmd.trace_id if cmd else None,
            command_id=cmd.command_id if cmd else None,
        ):
            log.warning(
                "command dead-lettered",
                error_class=err.error_class.value,
                error=err.message,
                attempts=tries,
                partition=env.partition,
                offset=env.offset,
            )
        await self.publish(sends)
