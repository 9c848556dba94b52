"""The Kafka edge of the mapper: a batch of consumed messages in, acknowledged produces out.

One class for both stages (docs/architecture.md, "One owner per order and ticket"), told apart by the
topic a message comes from:
- raw-events and crm-results (stage 1, partitioned by customer): commands of the rules that touch no
  state, and a copy of the event on the state-patches topic per order or ticket it changes;
- state-patches (stage 2, partitioned by order/ticket, so each has one owner): the merge, the merged
  Order/Ticket and the commands built from merged state.

`handle()` returns only when every output of the batch is acknowledged by the broker; only then does the
agent acknowledge the batch's messages to faust, so a committed offset never runs ahead of its effects
(at-least-once). Stage 1 publishes its patches only after its other outputs are acknowledged, so what the
owner builds from an event is never on crm-commands ahead of the event's own stage-1 commands. It never
raises for a message: bad input is dead-lettered, a produce failure is retried. It raises only when the
worker is stopping (`BatchAbandoned`, the messages stay unacknowledged and are redelivered) or is
cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter

from shopbotly.common.dlq import DeadLetter, dead_letter_headers
from shopbotly.common.errors import ErrorClass
from shopbotly.common.events import (
    CommandResult,
    CrmCommand,
    Headers,
    Order,
    Ticket,
    decode_headers,
    message_headers,
    utcnow,
)
from shopbotly.common.ids import order_key, ticket_key
from shopbotly.common.kafka import KafkaSettings, ResilientProducer
from shopbotly.common.logging import bound
from shopbotly.common.topics import Topic
from shopbotly.mapper import metrics
from shopbotly.mapper.domain import (
    Mappings,
    Outcome,
    Status,
    merge_event,
    route_event,
    seeded_ticket_id,
    ticket_from_result,
)
from shopbotly.mapper.patches import PatchOrigin, patch_headers, read_patch
from shopbotly.mapper.state import StateKind, StateStore

__all__ = ["BatchAbandoned", "BatchProducer", "Incoming", "Pipeline"]

SERVICE = "mapper"
# Errors that concern one record and will not go away by retrying it.
# Errors of our own code, never of the broker: they propagate (the agent fails loudly and the worker restarts)
# instead of being retried as a failed send for ever.
_BUGS = (AttributeError, TypeError, NameError)
_PERMANENT_PRODUCE_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)


class BatchProducer(ResilientProducer):
    """`ResilientProducer` plus record batches: a failed `send_batch` condemns the producer as a failed `send`
    does (it is replaced before the next send, see ResilientProducer)."""

    def watch(self, producer: AIOKafkaProducer, future: asyncio.Future[RecordMetadata]) -> None:
        future.add_done_callback(lambda f: self._delivered(producer, f))


class _BatchRefused(Exception):
    """The broker refused a record batch of several records for good: which record is at fault is unknown."""


class BatchAbandoned(Exception):
    """The worker is stopping while the batch could not be published: leave it unacknowledged."""


class Incoming(Protocol):
    """What the pipeline needs of a consumed message (faust's Message has these attributes)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...
    @property
    def timestamp(self) -> float: ...


@dataclass
class _Output:
    index: int  # position of the causing message in the batch
    logical: Topic
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None = None
    state: tuple[StateKind, str] | None = None
    settled: bool = False  # its state write was settled with the store (once, whatever happens after)


@functools.lru_cache(maxsize=65_536)
def _key_hash(key: bytes) -> int:
    """Kafka's default partitioner: murmur2 of the key, made positive (keys repeat: one per customer)."""
    return int(murmur2(key)) & 0x7FFFFFFF


def _timestamp_ms(message: Incoming) -> int | None:
    # faust gives seconds as a float: round, or 1 ms can be lost to the float's representation.
    return round(message.timestamp * 1000) if message.timestamp else None


def _headers_list(headers: Any) -> Headers:
    if headers is None:
        return []
    if isinstance(headers, dict):
        return [(str(k), bytes(v or b"")) for k, v in headers.items()]
    return [(str(k), bytes(v or b"")) for k, v in headers]


class Pipeline:
    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        mappings: Mappings,
        store: StateStore,
        producer: BatchProducer,
        log: Any,
        clock: Callable[[], datetime] = utcnow,
        backoff_cap_s: float = 5.0,
    ) -> None:
        self.mappings = mappings
        self.store = store
        self.producer = producer
        self._log = log
        self._clock = clock
        self._backoff_cap_s = backoff_cap_s
        self._topics = {logical: kafka.topic(logical) for logical in Topic}
        self.raw_topic = self._topics[Topic.RAW_EVENTS]
        self.results_topic = self._topics[Topic.CRM_RESULTS]
        self.patches_topic = self._topics[Topic.STATE_PATCHES]
        self.stopping_since: float | None = None
        self.grace_s = 20.0
        self.batch_started: float | None = None
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}
        self._tally: dict[tuple[Counter, tuple[str, ...]], int] = {}
        self._observe_mapping = metrics.MAPPING_SECONDS.observe

    # --- mapping: messages to outputs --------------------------------------------------------------------

    def _count(self, counter: Counter, *labels: str) -> None:
        """counter.labels(*labels).inc(), added up in the batch and applied once by `_flush_counts` (a
        per-event hot path: a labelled child's `inc` takes a lock)."""
        key = (counter, labels)
        self._tally[key] = self._tally.get(key, 0) + 1

    def _flush_counts(self) -> None:
        for key, n in self._tally.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = key[0].labels(*key[1])
            child.inc(n)
        self._tally.clear()

    def _dead_letter(self, index: int, message: Incoming, reason: str, error_class: ErrorClass) -> _Output:
        """The carbon copy of the source record: for a state patch, of the raw event it copies."""
        origin = PatchOrigin(message.topic, message.partition, message.offset, message.key)
        headers = _headers_list(message.headers)
        if message.topic == self.patches_topic:
            try:
                patch = read_patch(headers)
                origin, headers = patch.origin, patch.headers
            except ValueError:
                pass  # an unreadable patch is never dead-lettered (_merge_patch); keep it as it is
        letter = DeadLetter(
            error_class=error_class,
            error_message=reason,
            attempts=1,
            origin_topic=origin.topic,
            origin_partition=origin.partition,
            origin_offset=origin.offset,
            origin_service=SERVICE,
        )
        return _Output(
            index,
            Topic.RAW_EVENTS_DLQ,
            self._topics[Topic.RAW_EVENTS_DLQ],
            origin.key,
            message.value,
            dead_letter_headers(headers, letter),
            timestamp_ms=_timestamp_ms(message),
        )

    def _patch(
        self, index: int, message: Incoming, kind: StateKind, key: str, rules: Sequence[str]
    ) -> _Output:
        """A copy of `message` for the owner of the order or ticket `key` (stage 2)."""
        self._count(metrics.PATCHES, kind.value, "routed")
        origin = PatchOrigin(message.topic, message.partition, message.offset, message.key)
        return _Output(
            index,
            Topic.STATE_PATCHES,
            self.patches_topic,
            key.encode(),
            message.value,
            patch_headers(_headers_list(message.headers), kind=kind, rules=rules, origin=origin),
            timestamp_ms=_timestamp_ms(message),
        )

    def _route_raw(self, index: int, message: Incoming, now: datetime) -> list[_Output]:
        """Stage 1 of a raw event."""
        started = time.perf_counter()
        try:
            outcome = route_event(message.value, self.mappings, now=now)
        except Exception as exc:  # a bug, not bad input: keep the event (DLQ) and the worker alive
            self._log.exception("event.mapping_crashed", partition=message.partition, offset=message.offset)
            outcome = Outcome.rejected(f"internal error: {type(exc).__name__}: {exc}")
        self._observe_mapping(time.perf_counter() - started)
        event = outcome.event
        tenant = event.tenant if event is not None and event.tenant in self.mappings.tenants else "unknown"
        self._count(metrics.EVENTS, tenant, outcome.status.value)
        for rule in outcome.rule_hits:
            self._count(metrics.RULE_HITS, tenant, rule)
        outputs = self._outputs(index, message, outcome)
        outputs += [self._patch(index, message, r.kind, r.key, r.rules) for r in outcome.routes]
        return outputs

    def _merge_patch(self, index: int, message: Incoming, now: datetime) -> list[_Output]:
        """Stage 2: merge a routed raw event or crm-result into the state this worker owns."""
        try:
            patch = read_patch(_headers_list(message.headers))
        except ValueError as exc:
            # Only stage 1 writes this topic (its ACL says so): the record stays there (7 days) to inspect.
            self._count(metrics.PATCHES, "unknown", "invalid")
            self._log.error(
                "state_patch.invalid", reason=str(exc), partition=message.partition, offset=message.offset
            )
            return []
        if patch.origin.topic == self.results_topic:
            return self._seed_ticket(index, message)
        try:
            outcome = merge_event(message.value, self.mappings, patch.rules, self.store, now=now)
        except Exception as exc:  # a bug, not bad input: keep the event (DLQ) and the worker alive
            self._log.exception("event.merge_crashed", partition=message.partition, offset=message.offset)
            outcome = Outcome.rejected(f"internal error: {type(exc).__name__}: {exc}")
        self._count(
            metrics.PATCHES,
            patch.kind.value,
            "dead_lettered" if outcome.status == Status.DEAD_LETTERED else "merged",
        )
        return self._outputs(index, message, outcome)

    def _outputs(self, index: int, message: Incoming, outcome: Outcome) -> list[_Output]:
        """Commands, merged state and the dead letter of one event's outcome (either stage)."""
        event = outcome.event
        outputs: list[_Output] = []
        if event is not None:
            trace = event.traceid
            for command in outcome.commands:
                self._count(metrics.COMMANDS, command.op.value)
                outputs.append(
                    _Output(
                        index,
                        Topic.CRM_COMMANDS,
                        self._topics[Topic.CRM_COMMANDS],
                        command.key(),
                        command.to_json(),
                        message_headers(
                            event_id=event.id, tenant=event.tenant, trace_id=trace, schema=CrmCommand.SCHEMA
                        ),
                    )
                )
            for order in outcome.orders:
                key = order_key(order.tenant, order.order_id)
                self.store.put_order(key.decode(), order)
                outputs.append(
                    _Output(
                        index,
                        Topic.ORDERS,
                        self._topics[Topic.ORDERS],
                        key,
                        order.to_json(),
                        message_headers(
                            event_id=event.id, tenant=event.tenant, trace_id=trace, schema=Order.SCHEMA
                        ),
                        state=(StateKind.ORDER, key.decode()),
                    )
                )
            for ticket in outcome.tickets:
                outputs.append(self._ticket_output(index, ticket, event.id, trace))
        if outcome.status == Status.DEAD_LETTERED:
            # Bound only here: binding context variables for every mapped event is a measurable cost.
            with bound(
                event_id=event.id if event else None,
                tenant=event.tenant if event else None,
                trace_id=event.traceid if event else None,
            ):
                self._log.warning(
                    "event.dead_lettered",
                    reason=outcome.reason,
                    partition=message.partition,
                    offset=message.offset,
                    published=len(outputs),
                )
            outputs.append(self._dead_letter(index, message, outcome.reason, outcome.error_class))
        return outputs

    def _ticket_output(self, index: int, ticket: Ticket, event_id: str, trace_id: str | None) -> _Output:
        key = ticket_key(ticket.tenant, ticket.ticket_id)
        self.store.put_ticket(key.decode(), ticket)
        return _Output(
            index,
            Topic.TICKETS,
            self._topics[Topic.TICKETS],
            key,
            ticket.to_json(),
            message_headers(event_id=event_id, tenant=ticket.tenant, trace_id=trace_id, schema=Ticket.SCHEMA),
            state=(StateKind.TICKET, key.decode()),
        )

    def _read_result(self, message: Incoming) -> CommandResult | None:
        try:
            return CommandResult.from_json(message.value or b"")
        except ValueError:
            # crm-results is crm-writer's output, kept 30 days: the record stays there for inspection.
            metrics.RESULTS.labels("invalid").inc()
            self._log.error("crm_result.invalid", partition=message.partition, offset=message.offset)
            return None

    def _route_result(self, index: int, message: Incoming) -> list[_Output]:
        """crm-results, stage 1: a created ticket goes to the ticket's owner, which seeds its state."""
        result = self._read_result(message)
        if result is None:
            return []
        ticket_id = seeded_ticket_id(result)
        if ticket_id is None:
            metrics.RESULTS.labels("ignored").inc()
            return []
        key = ticket_key(result.tenant, ticket_id).decode()
        return [self._patch(index, message, StateKind.TICKET, key, ())]

    def _seed_ticket(self, index: int, message: Incoming) -> list[_Output]:
        """crm-results, stage 2: the created ticket's id and customer e-mail seed the ticket's state."""
        result = self._read_result(message)
        if result is None:
            return []
        headers = decode_headers(_headers_list(message.headers))
        event_id = headers.get("event_id") or result.command_id
        try:
            ticket = ticket_from_result(result, self.store, event_id=event_id)
        except Exception:
            self._log.exception("crm_result.crashed", partition=message.partition, offset=message.offset)
            metrics.RESULTS.labels("invalid").inc()
            return []
        if ticket is None:
            metrics.RESULTS.labels("ignored").inc()
            return []
        metrics.RESULTS.labels("ticket_seeded").inc()
        with bound(event_id=event_id, tenant=result.tenant, trace_id=headers.get("trace_id") or None):
            self._log.info("ticket.seeded", ticket_id=ticket.ticket_id)
        return [self._ticket_output(index, ticket, event_id, headers.get("trace_id") or None)]

    def map_batch(self, messages: Sequence[Incoming]) -> list[_Output]:
        now = self._clock()
        outputs: list[_Output] = []
        for index, message in enumerate(messages):
            if message.topic == self.patches_topic:
                outputs += self._merge_patch(index, message, now)
            elif message.topic == self.results_topic:
                outputs += self._route_result(index, message)
            else:
                outputs += self._route_raw(index, message, now)
        return outputs

    # --- publishing ------------------------------------------------------------------------------------

    async def _backoff(self, attempt: int) -> None:
        if self.stopping_since is not None and time.monotonic() - self.stopping_since > self.grace_s:
            raise BatchAbandoned("stopping, and the batch could not be published")
        # Full jitter: replicas that failed together do not retry together.
        await asyncio.sleep(random.uniform(0, min(self._backoff_cap_s, 0.2 * 2 ** min(attempt, 16))))

    def _settle(self, output: _Output, offset: int | None) -> None:
        if output.state is not None and not output.settled:
            output.settled = True
            self.store.settle(output.state[0], output.state[1], offset)

    async def _send_batched(self, pending: list[_Output]) -> list[Any]:
        """Each output's offset, or its failure (None: not sent), producing one record batch per partition.

        aiokafka's `send` costs more per record than the mapping of an event (partitioner, metadata checks, a
        future each); a `BatchBuilder` per partition and one `send_batch` take the whole batch's outputs in
        a few calls. Outputs go to the partition Kafka's default partitioner would pick (murmur2 of the key),
        in their order, so per-key order is unchanged."""
        try:
            producer = await self.producer.healthy()
            counts = {t: len(await producer.partitions_for(t)) for t in {o.topic for o in pending}}
        except _BUGS:
            raise  # not the broker's answer: retrying would hold the partition for ever
        except Exception as exc:  # broker unreachable, metadata timeout: nothing was sent
            return [exc, *(None for _ in pending[1:])]
        builders: dict[tuple[str, int], list[Any]] = {}  # (topic, partition) -> its BatchBuilders, in order
        placed: list[tuple[Any, int]] = []  # per output: its builder and its index in that builder
        for output in pending:
            n = counts[output.topic]
            partition = _key_hash(output.key) % n if output.key is not None else random.randrange(n)
            chain = builders.setdefault((output.topic, partition), [])
            if not chain:
                chain.append(producer.create_batch())
            builder = chain[-1]
            index = builder.record_count()
            if (
                builder.append(
                    timestamp=output.timestamp_ms, key=output.key, value=output.value, headers=output.headers
                )
                is None
            ):  # full: the next one (a record alone always fits; the broker judges its size)
                builder = producer.create_batch()
                chain.append(builder)
                index = 0
                builder.append(
                    timestamp=output.timestamp_ms, key=output.key, value=output.value, headers=output.headers
                )
            placed.append((builder, index))
        submitted: dict[int, Any] = {}  # id(builder) -> its delivery future, or the failure to submit it
        for (topic, partition), chain in builders.items():
            for builder in chain:
                try:
                    future = await producer.send_batch(builder, topic, partition=partition)
                except _BUGS:
                    raise
                except Exception as exc:
                    submitted[id(builder)] = exc
                    continue
                self.producer.watch(producer, future)
                submitted[id(builder)] = future
        futures = [f for f in submitted.values() if isinstance(f, asyncio.Future)]
        delivered = dict(
            zip(map(id, futures), await asyncio.gather(*futures, return_exceptions=True), strict=True)
        )
        results: list[Any] = []
        for builder, index in placed:
            outcome = submitted[id(builder)]
            if isinstance(outcome, asyncio.Future):
                outcome = delivered[id(outcome)]
            if isinstance(outcome, _PERMANENT_PRODUCE_ERRORS) and builder.record_count() > 1:
                outcome = _BatchRefused(str(outcome))
            results.append(outcome if isinstance(outcome, BaseException) else outcome.offset + index)
        return results

    async def _send_each(self, pending: list[_Output]) -> list[Any]:
        """Each output's offset, or its failure (None: not sent), one `send` per record: after a batch the
        broker refused for good, so only the record at fault is dead-lettered, not its neighbours."""
        sent: list[Any] = []
        for output in pending:
            try:
                future = await self.producer.send(
                    output.topic,
                    output.value,
                    key=output.key,
                    headers=output.headers,
                    timestamp_ms=output.timestamp_ms,
                )
            except _PERMANENT_PRODUCE_ERRORS as exc:
                sent.append(exc)
                continue
            except _BUGS:
                raise
            except Exception as exc:  # broker unreachable, metadata timeout: the rest waits too
                sent.append(exc)
                sent += [None] * (len(pending) - len(sent))
                break
            sent.append(future)
        futures = [f for f in sent if isinstance(f, asyncio.Future)]
        done = iter(await asyncio.gather(*futures, return_exceptions=True))
        results: list[Any] = []
        for item in sent:
            if isinstance(item, asyncio.Future):
                item = next(done)
                item = item if isinstance(item, BaseException) else item.offset
            results.append(item)
        return results

    async def publish(self, outputs: list[_Output], messages: Sequence[Incoming]) -> None:
        """Produce every output and wait for the broker's acknowledgements.

        A transient failure resends everything from the first failed output on, in the original order, so
        the last record per key is still the latest state (repeats are harmless: commands carry their id).
        A record the broker will never take (too large) dead-letters its event instead: a batch refused for
        good is sent again one record at a time to find it.
        """
        pending = outputs
        attempt = 0
        one_by_one = False  # after a refused batch: to find the record at fault
        started = time.perf_counter()
        while pending:
            results = await (self._send_each(pending) if one_by_one else self._send_batched(pending))
            outcomes = list(zip(pending, results, strict=True))
            retry_from: int | None = None
            rejected: dict[int, str] = {}
            refused = False
            for position, (output, result) in enumerate(outcomes):
                if isinstance(result, _PERMANENT_PRODUCE_ERRORS) and output.logical != Topic.RAW_EVENTS_DLQ:
                    rejected.setdefault(output.index, f"cannot publish to {output.logical.value}: {result}")
                elif isinstance(result, BaseException) or result is None:
                    refused = refused or isinstance(result, _BatchRefused)
                    retry_from = position if retry_from is None else retry_from
            next_round: list[_Output] = []
            for position, (output, result) in enumerate(outcomes):
                if output.index in rejected:
                    if isinstance(result, int):
                        self._count(metrics.PRODUCED, output.logical.value)
                    self._settle(output, None)
                    continue
                if retry_from is not None and position >= retry_from:
                    next_round.append(output)
                    continue
                self._count(metrics.PRODUCED, output.logical.value)
                self._settle(output, result)
            for index, reason in rejected.items():
                message = messages[index]
                self._log.error(
                    "event.dead_lettered", reason=reason, partition=message.partition, offset=message.offset
                )
                next_round.append(self._dead_letter(index, message, reason, ErrorClass.PERMANENT))
            pending = next_round
            one_by_one = refused
            if pending and retry_from is not None and not refused:
                attempt += 1
                metrics.PRODUCE_RETRIES.inc()
                failed = outcomes[retry_from][1]
                self._log.warning(
                    "publish.retry",
                    attempt=attempt,
                    pending=len(pending),
                    error=f"{type(failed).__name__}: {failed}" if failed is not None else "not sent",
                )
                await self._backoff(attempt)
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def handle(self, messages: Sequence[Incoming]) -> None:
        """Map and publish a batch; returns when all of it is acknowledged by the broker."""
        self.batch_started = time.monotonic()
        metrics.BATCH_SIZE.observe(len(messages))
        attempt = 0
        try:
            while True:
                outputs: list[_Output] = []
                try:
                    outputs = self.map_batch(messages)
                    patches = [o for o in outputs if o.logical == Topic.STATE_PATCHES]
                    await self.publish([o for o in outputs if o.logical != Topic.STATE_PATCHES], messages)
                    if patches:
                        await self.publish(patches, messages)
                    return
                except (BatchAbandoned, asyncio.CancelledError):
                    for output in outputs:
                        self._settle(output, None)
                    raise
                except Exception:
                    # Not bad input nor a produce failure (those are handled above): a bug. The batch
                    # stays unacknowledged and is tried again - never skipped, never acknowledged past -
                    # and /healthz turns red if it never passes.
                    for output in outputs:
                        self._settle(output, None)
                    attempt += 1
                    self._log.exception("batch.failed", attempt=attempt, size=len(messages))
                    await self._backoff(attempt)
        finally:
            self._flush_counts()
            self.batch_started = None
