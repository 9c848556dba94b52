"""The crm-commands consumer: key-ordered and parallel, committed at the low watermark of finished work.

Records of a partition are queued in one lane per connection (lanes.py), per key
(tenant:connection:identity) within it. Up to `max_in_flight_per_partition` identities of each lane are
written at once; one identity's commands are taken together, checked against the ledger, coalesced and
written strictly in order. A connection in an outage (open circuit) or throttled holds back only its own
lane: the others keep flowing, and a full lane leaves its further records in Kafka, uncommitted, to be
fetched again when it has room. An offset is finished when its outcome (applied, duplicate or
dead-lettered) is published and acknowledged; the committed offset is the lowest unfinished one.

This module is the consumer and the partitions' lifecycle; which route a command takes is routing.py, the
attempts of one write delivery.py, and publishing what a command came to outcomes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.protocol.group import JoinGroupRequest

from shopbotly.common.config import ShopbotlyConfig
from shopbotly.common.errors import (
    PermanentError,
)
from shopbotly.common.events import (
    CrmCommand,
)
from shopbotly.common.health import Health
from shopbotly.common.kafka import ResilientProducer, make_consumer
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.crm_writer import metrics
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.clients import HttpClients
from shopbotly.crm_writer.delivery import Deliverer
from shopbotly.crm_writer.domain import Envelope, coalesce, parse_record
from shopbotly.crm_writer.lanes import PartitionLanes
from shopbotly.crm_writer.ledger import Ledger
from shopbotly.crm_writer.ordering import OffsetTracker
from shopbotly.crm_writer.outcomes import Outcomes
from shopbotly.crm_writer.ratelimit import partition_share
from shopbotly.crm_writer.routing import Router
from shopbotly.crm_writer.runtime import BreakerSettings, ConnectionRuntime
from shopbotly.crm_writer.settings import COMMIT_BOUND_S, Settings

__all__ = ["Writer"]

log = get_logger(__name__)
UNKNOWN_MEMBER_ID: str = JoinGroupRequest.UNKNOWN_MEMBER_ID


# A command whose write fails this many times with an error that is not a CRM's answer (a bug, a broken
# connection definition) is dead-lettered: it never holds its partition for ever.
MAX_UNEXPECTED_FAILURES = 3
# Strikes are kept per (partition, offset) by the replica, not by the partition's lanes, so a replica fenced
# and given the partition back (a slow or starved process) keeps counting instead of starting over; bounded.
MAX_STRIKE_ENTRIES = 10_000


@dataclass
class _Partition:
    tp: TopicPartition
    lanes: PartitionLanes
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # While dropped records are fetched again: the first offset past the refetch.
    refetch_end: int | None = None
    committed: int | None = None
    closing: bool = False
    paused: bool = False
    # False until the ledger has caught up after the assignment: records queue, nothing is written yet.
    ready: bool = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._writer._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._writer._on_assigned(set(assigned))


class Writer:
    """One crm-writer replica. `await run()` consumes until `stop()` (graceful) or cancellation (abrupt)."""

    def __init__(
        self,
        settings: Settings,
        config: ShopbotlyConfig,
        *,
        health: Health | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.health = health or Health()
        self._transport = transport
        kafka = settings.kafka
        self.commands_topic = kafka.topic(Topic.CRM_COMMANDS)
        self.results_topic = kafka.topic(Topic.CRM_RESULTS)
        self.dlq_topic = kafka.topic(Topic.CRM_COMMANDS_DLQ)
        breaker = BreakerSettings(
            failure_threshold=settings.circuit_failure_threshold,
            open_s=settings.circuit_open_s,
            max_open_s=settings.circuit_max_open_s,
            throttle_outage_after=settings.throttle_outage_after,
        )
        self._router = Router(config, breaker=breaker, on_circuit_change=self._circuit_changed)
        self._deliverer = Deliverer(
            retry_base_s=settings.retry_base_s,
            retry_cap_s=settings.retry_cap_s,
            throttle_outage_after=settings.throttle_outage_after,
            rng=rng,
        )
        self._outcomes: Outcomes | None = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        # Unexpected (non-CRM) failures per record, for MAX_UNEXPECTED_FAILURES (oldest dropped first).
        self._strikes: dict[tuple[TopicPartition, int], int] = {}
        self._held_labels: set[str] = set()  # connections with a held gauge reported
        # No partitions, no share, until the first assignment: a route built before it must not take a whole
        # limit next to the replicas that own the partitions.
        self._share = 0.0
        self._router.set_share(0.0)
        self._owned: set[int] = set()
        self._total_partitions = 0
        self._stopping = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        # The periodic commit runs beside the consume loop: a slow coordinator never holds back fetching.
        self._periodic_commit: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._producer: ResilientProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._ledger: Ledger | None = None
        self._clients: HttpClients | None = None
        self.started = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: finish in-flight writes (within the grace period), commit, leave."""
        self._stopping.set()

    async def run(self) -> None:
        graceful = False
        try:
            await self._start()
            await self._consume()
            graceful = True
        finally:
            await self._close(graceful=graceful)

    async def _start(self) -> None:
        s = self.settings
        self._clients = HttpClients(
            transport=self._transport,
            limits=httpx.Limits(
                max_connections=s.http_max_connections, max_keepalive_connections=s.http_max_connections
            ),
        )
        self._router.clients = self._clients
        self._producer = producer = _make_producer(s)
        await producer.start()
        self._ledger = Ledger(s.kafka, producer, recent=s.ledger_recent_ids)
        self._outcomes = Outcomes(
            producer, self._ledger, results_topic=self.results_topic, dlq_topic=self.dlq_topic
        )
        await self._ledger.start(timeout_s=s.ledger_restore_timeout_s)
        self.health.set_ready("ledger", True, f"{len(self._ledger)} applied command ids")
        consumer = make_consumer(
            s.kafka,
            group_id=s.consumer_group,
            client_role="crm-writer",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
            # Longer than a drain can take (settings.py): a draining replica always rejoins in time, so no
            # partition is handed to another replica while this one still writes it.
            rebalance_timeout_ms=s.effective_rebalance_timeout_ms,
        )
        consumer.subscribe([self.commands_topic], listener=_Listener(self))
        self._consumer = consumer  # before start(): the rebalance callbacks may run inside it
        await consumer.start()
        self.health.set_ready("kafka", True)
        self.started.set()
        log.info("crm-writer consuming", topic=self.commands_topic, group=s.consumer_group)

    async def _close(self, *, graceful: bool) -> None:
        self.health.draining = True
        if self._periodic_commit is not None:
            # The drain commits what finished (under the same lock); a periodic commit cut short commits none.
            self._periodic_commit.cancel()
            await asyncio.gather(self._periodic_commit, return_exceptions=True)
        consumer = self._consumer
        if consumer is not None:
            if graceful:
                try:
                    async with asyncio.timeout(self.settings.shutdown_grace_s):
                        await self._drain(set(self._partitions), commit=True)
                except TimeoutError:
                    log.warning("shutdown grace period over; abandoning in-flight writes")
            await self._drain(set(self._partitions), commit=False, grace_s=0)
            await consumer.stop()
        await self._router.aclose()
        if self._ledger is not None:
            await self._ledger.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._clients is not None:
            await self._clients.aclose()

    # -- consumption ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        s = self.settings
        loop = asyncio.get_running_loop()
        last_commit = loop.time()
        while not self._stopping.is_set():
            if self._fatal is None and self._ledger is not None and self._ledger.failure is not None:
                self._fatal = self._ledger.failure
            if self._fatal is not None:
                raise RuntimeError("crm-writer cannot continue") from self._fatal
            batch = await consumer.getmany(timeout_ms=s.poll_timeout_ms, max_records=s.max_poll_records)
            for tp, records in batch.items():
                self._accept(tp, records)
            self._apply_pauses()
            self._refetch_dropped()
            if loop.time() - last_commit >= s.commit_interval_s:
                self._commit_in_background()
                self._report_gauges()
                last_commit = loop.time()
            self.health.beat("consume", max_age_s=max(60.0, s.poll_timeout_ms / 1000 * 10))

    def _commit_in_background(self) -> None:
        """Commit the finished offsets without waiting for the answer: awaited here, a commit (one round trip
        to the group coordinator, longer under load) held every record fetched meanwhile back by as long,
        once per `commit_interval_s`. One commit at a time; a commit still running skips this turn."""
        if self._periodic_commit is not None and not self._periodic_commit.done():
            return
        task = asyncio.create_task(self._commit(None), name="commit")
        task.add_done_callback(self._committed)
        self._periodic_commit = task

    def _committed(self, task: asyncio.Task[None]) -> None:
        # `_commit` absorbs the commit errors Kafka may answer; anything else stops the writer, as it did
        # when the loop awaited the commit itself.
        if not task.cancelled() and (exc := task.exception()) is not None and self._fatal is None:
            self._fatal = exc

    def _accept(self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        part = self._partitions.get(tp)
        if part is None or part.closing:
            # Not (or no longer) ours to work on. Rewind so that, should the partition stay with this
            # consumer, these records are fetched again rather than skipped.
            if records and self._consumer is not None:
                with contextlib.suppress(IllegalStateError, AssertionError):
                    self._consumer.seek(tp, records[0].offset)
            return
        now_ms = int(time.time() * 1000)
        for r in records:
            if not part.tracker.is_new(r.offset):
                # Already taken, or fetched again for a lane that had to drop it when it was full.
                if part.lanes.is_dropped(r.offset):
                    part.lanes.readmit(_envelope(r))
                if part.refetch_end is not None and r.offset >= part.refetch_end - 1:
                    part.refetch_end = None
                continue
            part.refetch_end = None
            part.tracker.add(r.offset)
            part.lanes.admit(_envelope(r), now_ms=now_ms)
        self._dispatch(part)

    def _out(self) -> Outcomes:
        assert self._outcomes is not None, "outcomes are published only after start"
        return self._outcomes

    def _dispatch(self, part: _Partition) -> None:
        while part.ready and not part.closing and (taken := part.lanes.take(self._router.held)) is not None:
            label, key, envs = taken
            task = asyncio.create_task(
                self._work(part, label, key, envs), name=f"write-{part.tp.partition}-{label}"
            )
            part.tasks.add(task)

    def _finish(self, part: _Partition, env: Envelope) -> None:
        part.tracker.finish(env.offset)
        part.lanes.finished(env)
        self._strikes.pop((part.tp, env.offset), None)

    async def _work(self, part: _Partition, label: str, key: bytes, envs: list[Envelope]) -> None:
        requeue: list[Envelope] | None = None
        finished: set[int] = set()
        try:
            # Whatever was left for later goes back first, in offset order: the identity's order holds.
            requeue = sorted(await self._process(part, envs, finished), key=lambda e: e.offset)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or a failure that is not a CRM's answer: nothing is lost (unfinished offsets stay
            # uncommitted); the identity's first unfinished command is tried again after a pause, and
            # dead-lettered with the reason once it failed MAX_UNEXPECTED_FAILURES times.
            requeue = [e for e in envs if e.offset not in finished]
            requeue = await self._unexpected(part, requeue, exc)
        finally:
            task = asyncio.current_task()
            if task is not None:
                part.tasks.discard(task)
            if not part.closing:
                part.lanes.done(label, key, requeue=requeue)
                self._dispatch(part)

    async def _unexpected(self, part: _Partition, envs: list[Envelope], exc: Exception) -> list[Envelope]:
        if not envs:
            return envs
        first = envs[0]
        strikes = self._strikes.pop((part.tp, first.offset), 0) + 1
        self._strikes[(part.tp, first.offset)] = strikes  # newest last
        if len(self._strikes) > MAX_STRIKE_ENTRIES:
            del self._strikes[next(iter(self._strikes))]
        log.error(
            "unexpected error writing a command",
            partition=part.tp.partition,
            offset=first.offset,
            failures=strikes,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=strikes == 1,
        )
        if strikes < MAX_UNEXPECTED_FAILURES:
            await asyncio.sleep(min(self.settings.retry_cap_s, self.settings.retry_base_s * 2**strikes))
            return envs
        error = PermanentError(
            f"crm-writer failed on this command {strikes} times with an error that is not the CRM's "
            f"answer: {type(exc).__name__}: {exc}"[:2000]
        )
        await self._out().dead_letter(first, first.command, error, tries=strikes)
        self._finish(part, first)
        return envs[1:]

    async def _process(self, part: _Partition, envs: list[Envelope], finished: set[int]) -> list[Envelope]:
        ledger = self._ledger
        assert ledger is not None

        def finish(env: Envelope) -> None:
            self._finish(part, env)
            finished.add(env.offset)

        pending: list[Envelope] = []
        later: list[Envelope] = []
        seen: set[str] = set()
        for env in envs:
            cmd = env.command
            if cmd is None:
                await self._out().dead_letter(
                    env, None, PermanentError(env.error or "invalid record"), tries=0
                )
                finish(env)
                continue
            if cmd.command_id in seen:
                later.append(env)  # the same command twice in one take: judge the repeat after the first
                continue
            prior = await ledger.get(cmd.command_id)
            if prior is not None:
                await self._out().duplicate(env, cmd, prior)
                finish(env)
                continue
            seen.add(cmd.command_id)
            pending.append(env)
        if not pending:
            return later
        first = pending[0].command
        assert first is not None
        # One key is one tenant:connection; records without a key share the empty key and may mix
        # connections: take the leading run of one connection now, the rest on the next turn, in order.
        for i, env in enumerate(pending):
            cmd = env.command
            assert cmd is not None
            if (cmd.tenant, cmd.connection) != (first.tenant, first.connection):
                later = [*pending[i:], *later]
                pending = pending[:i]
                break
        try:
            route = self._router.route(first)
        except PermanentError as exc:
            for env in pending:
                await self._out().dead_letter(env, env.command, exc, tries=0)
                finish(env)
            return later
        routable: list[tuple[int, CrmCommand]] = []
        for i, env in enumerate(pending):
            assert env.command is not None
            try:
                route.connector.kind_of(env.command.op)
            except PermanentError as exc:
                await self._out().dead_letter(env, env.command, exc, tries=0)
                finish(env)
                continue
            routable.append((i, env.command))
        writes = coalesce(
            routable,
            route.connector.kind_of,
            max_merge=min(self.settings.max_coalesce, route.connector.max_merge),
            group_of=route.connector.group_of,
        )
        for n, write in enumerate(writes):
            if part.closing:
                # Draining a revoked partition: end on a write boundary. What is not sent stays unfinished
                # (uncommitted) for the next owner; going on until the grace cancels a request in flight
                # is what makes the next owner send it again.
                return [pending[h] for w in writes[n:] for h in w.handles] + later
            members = [pending[h] for h in write.handles]
            delivery = await self._deliverer.deliver(route, write, partition=part.tp.partition)
            if delivery.ok:
                await self._out().applied(write, members, delivery)
            elif isinstance(delivery.error, PermanentError) and len(write.commands) > 1:
                # The CRM refused the merged write: apply its commands one by one, so only the one it
                # refuses is dead-lettered and the others still take effect, in order.
                for i, env in enumerate(members):
                    single = write.single(i)
                    one = await self._deliverer.deliver(route, single, partition=part.tp.partition)
                    if one.ok:
                        await self._out().applied(single, [env], one)
                    else:
                        await self._out().dead_letter(
                            env, env.command, one.error, tries=one.tries, delivery=one
                        )
            else:
                for env in members:
                    await self._out().dead_letter(
                        env, env.command, delivery.error, tries=delivery.tries, delivery=delivery
                    )
            for env in members:
                finish(env)
        return later

    # -- delivery ---------------------------------------------------------------------------------

    def _circuit_changed(self, runtime: ConnectionRuntime) -> None:
        # A circuit that closed lets its lanes take more identities again.
        for part in self._partitions.values():
            self._dispatch(part)

    # -- partitions: pause, commit, rebalance -----------------------------------------------------

    def _apply_pauses(self) -> None:
        """Pause fetching of a partition whose lanes together hold too much (a memory bound over all
        lanes; one full lane drops its records to fetch them again instead, see lanes.py)."""
        consumer = self._consumer
        if consumer is None:
            return
        limit = self.settings.max_buffered_per_partition
        pause: list[TopicPartition] = []
        resume: list[TopicPartition] = []
        for tp, part in self._partitions.items():
            blocked = part.lanes.queued >= limit
            if blocked and not part.paused:
                pause.append(tp)
                part.paused = True
            elif not blocked and part.paused:
                resume.append(tp)
                part.paused = False
        try:
            if pause:
                consumer.pause(*pause)
                log.info("fetching paused", partitions=sorted(tp.partition for tp in pause))
            if resume:
                consumer.resume(*resume)
                log.info("fetching resumed", partitions=sorted(tp.partition for tp in resume))
        except IllegalStateError:
            pass  # a rebalance took the partition meanwhile
        metrics.PAUSED_PARTITIONS.set(sum(1 for p in self._partitions.values() if p.paused))

    def _refetch_dropped(self) -> None:
        """Fetch again, from Kafka, the records a full lane had to drop, once that lane has room."""
        consumer = self._consumer
        if consumer is None:
            return
        for tp, part in self._partitions.items():
            if part.refetch_end is not None or not part.ready or part.closing:
                continue
            start = part.lanes.refetch_from(self._router.held)
            end = part.tracker.next_offset
            if start is None or end is None:
                continue
            try:
                consumer.seek(tp, start)
            except (IllegalStateError, AssertionError):
                continue  # a rebalance took the partition meanwhile
            part.refetch_end = end
            metrics.REFETCHES.inc()
            log.info("fetching dropped commands again", partition=tp.partition, offset=start, until=end)

    @property
    def share(self) -> float:
        """This replica's share of every connection's rate limit (its fraction of the partitions)."""
        return self._share

    @property
    def owned_partitions(self) -> set[int]:
        return set(self._owned)

    def circuit_state(self, connection: str) -> CircuitState | None:
        """The circuit of `tenant:connection`, or None before its first command."""
        route = self._router.get(connection)
        return route.runtime.circuit_state if route is not None else None

    def paused_partitions(self) -> set[int]:
        return {tp.partition for tp, p in self._partitions.items() if p.paused}

    def connection_status(self) -> list[dict[str, object]]:
        """Each connection this replica has seen: circuit, held commands and the oldest's age, rate and
        quota left, 429s and the last failure."""
        held = self.held()
        out: list[dict[str, object]] = []
        for label in sorted(set(self._router) | set(held)):
            count, oldest = held.get(label, (0, None))
            row: dict[str, object] = {
                "connection": label,
                "held": count,
                "oldest_held_age_s": round(oldest, 1) if oldest is not None else None,
            }
            route = self._router.get(label)
            if route is not None:
                rt = route.runtime
                quota = rt.quota
                row |= {
                    "circuit": rt.circuit_state.name.lower(),
                    "circuit_reason": rt.breaker.reason or None,
                    "requests_per_s": round(rt.limit.requests_per_second, 3),
                    "window_remaining": quota.remaining if quota else None,
                    "daily_remaining": quota.daily_remaining if quota else None,
                    "throttled": rt.throttled,
                    "last_error": rt.last_error[1] if rt.last_error else None,
                    "last_error_at": rt.last_error[0] if rt.last_error else None,
                }
            out.append(row)
        return out

    def held(self) -> dict[str, tuple[int, float | None]]:
        """Per connection (`tenant:connection`): commands not finished yet in this replica and the age in
        seconds of the oldest (its record timestamp), throttled and outage work alike."""
        totals: dict[str, tuple[int, float | None]] = {}
        now_ms = time.time() * 1000
        for part in self._partitions.values():
            for label, st in part.lanes.stats().items():
                held, oldest = totals.get(label, (0, None))
                if st.oldest_ms is not None:
                    age = max(0.0, (now_ms - st.oldest_ms) / 1000)
                    oldest = age if oldest is None else max(oldest, age)
                totals[label] = (held + st.held, oldest)
        return totals

    async def _commit(self, tps: set[TopicPartition] | None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets: dict[TopicPartition, int] = {}
            for tp, part in self._partitions.items():
                if tps is not None and tp not in tps:
                    continue
                c = part.tracker.committable()
                if c is not None and (part.committed is None or c > part.committed):
                    offsets[tp] = c
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                log.warning(
                    "commit failed; the next owner may repeat some commands", error=type(exc).__name__
                )
                return
            for tp, offset in offsets.items():
                owned = self._partitions.get(tp)
                if owned is not None:
                    owned.committed = offset

    def _report_gauges(self) -> None:
        consumer = self._consumer
        held = self.held()
        for label in self._held_labels - held.keys():
            metrics.HELD.labels(label).set(0)
            metrics.HELD_AGE.labels(label).set(0)
        for label, (count, age) in held.items():
            metrics.HELD.labels(label).set(count)
            metrics.HELD_AGE.labels(label).set(age or 0.0)
        self._held_labels = set(held)
        for tp, part in self._partitions.items():
            p = str(tp.partition)
            metrics.QUEUE_DEPTH.labels(p).set(part.lanes.queued)
            metrics.IN_FLIGHT.labels(p).set(part.lanes.active)
            high = consumer.highwater(tp) if consumer is not None else None
            if high is not None:
                done = part.tracker.committable()
                metrics.CONSUMER_LAG.labels(tp.topic, p).set(
                    max(0, high - (done if done is not None else high))
                )

    async def _drain(self, tps: set[TopicPartition], *, commit: bool, grace_s: float | None = None) -> None:
        """Stop taking work for `tps`, let in-flight writes finish (bounded), cancel the rest, commit."""
        parts = [self._partitions[tp] for tp in tps if tp in self._partitions]
        for part in parts:
            part.closing = True
        tasks = [t for part in parts for t in part.tasks]
        grace = self.settings.revoke_grace_s if grace_s is None else grace_s
        abandoned: set[asyncio.Task[None]] = set()
        if tasks:
            if grace > 0:
                _, abandoned = await asyncio.wait(tasks, timeout=grace)
            else:
                abandoned = set(tasks)
            for t in abandoned:
                t.cancel()
            await asyncio.gather(*abandoned, return_exceptions=True)
        if commit:
            try:
                async with asyncio.timeout(COMMIT_BOUND_S):
                    await self._commit({p.tp for p in parts})
            except TimeoutError:
                log.warning("commit on release timed out; the next owner may repeat some commands")
        for part in parts:
            self._partitions.pop(part.tp, None)
            metrics.QUEUE_DEPTH.labels(str(part.tp.partition)).set(0)
            metrics.IN_FLIGHT.labels(str(part.tp.partition)).set(0)
        if parts:
            log.info(
                "partitions released",
                partitions=sorted(p.tp.partition for p in parts),
                finished=len(tasks) - len(abandoned),
                abandoned=len(abandoned),
            )

    def _fenced(self) -> bool:
        """True when the group has already thrown this member out (its session or rebalance deadline
        passed): its partitions may be another replica's by now, so there is nothing left to finish."""
        coordinator = getattr(self._consumer, "_coordinator", None)  # aiokafka keeps the member id there
        return coordinator is not None and getattr(coordinator, "member_id", None) == UNKNOWN_MEMBER_ID

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        mine = {tp for tp in revoked if tp.topic == self.commands_topic}
        if mine and self._fenced():
            # Writing on would be a second writer on those partitions (and a second rate-limit share):
            # abandon at once and commit nothing (the group refuses it); the new owner repeats the rest.
            log.warning("fenced out of the group; abandoning in-flight writes", partitions=len(mine))
            metrics.FENCED.inc()
            await self._drain(mine, commit=False, grace_s=0)
        else:
            await self._drain(mine, commit=True)
        self._release({tp.partition for tp in mine})

    def _release(self, partitions: set[int]) -> None:
        """Ownership ends: what this replica cached of those partitions' identities is no longer true once
        another replica may write them, and their share of the rate limit is no longer this replica's."""
        if not partitions:
            return
        self._router.forget_partitions(partitions)
        self._owned -= partitions
        self._set_share(len(self._owned), self._partition_count(len(self._owned)))
        metrics.ASSIGNED_PARTITIONS.set(len(self._owned))

    def _partition_count(self, at_least: int) -> int:
        """The topic's partition count: from the consumer's metadata, else as last known."""
        consumer = self._consumer
        known = consumer.partitions_for_topic(self.commands_topic) if consumer is not None else None
        if known:
            self._total_partitions = len(known)
        self._total_partitions = max(self._total_partitions, at_least)
        return self._total_partitions

    def _set_share(self, owned: int, total: int) -> None:
        self._share = partition_share(owned, total) if owned else 0.0
        self._router.set_share(self._share)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        ledger = self._ledger
        assert ledger is not None
        mine = {tp for tp in assigned if tp.topic == self.commands_topic}
        # State first, synchronously: the fetcher may hand out records of these partitions while this
        # callback still waits for the ledger, and they must be queued, not lost.
        fresh: list[_Partition] = []
        for tp in mine:
            if tp not in self._partitions:
                part = _Partition(
                    tp,
                    PartitionLanes(
                        max_active=self.settings.max_in_flight_per_partition,
                        max_take=self.settings.max_coalesce,
                        max_queued=self.settings.max_buffered_per_connection,
                    ),
                )
                self._partitions[tp] = part
                fresh.append(part)
        total = self._partition_count(len(mine))
        self._set_share(len(mine), total)
        # `_owned` lost every revoked partition in `_on_revoked`, so a partition that went away and came
        # back counts as gained, and state cached before the gap is dropped (normally already on revoke).
        gained = {tp.partition for tp in mine} - self._owned
        if gained:
            self._router.forget_partitions(gained)
        self._owned = {tp.partition for tp in mine}
        try:
            # Whatever the previous owner of these partitions applied must be known before writing.
            await ledger.caught_up(timeout_s=self.settings.ledger_restore_timeout_s)
        except Exception as exc:  # surfaced by the consume loop, which stops the writer
            self._fatal = exc
            return
        for part in fresh:
            part.ready = True
            self._dispatch(part)
        metrics.ASSIGNED_PARTITIONS.set(len(mine))
        metrics.ASSIGNMENTS.inc()
        self.health.set_ready("partitions", True, f"{len(mine)} of {total} partitions")
        log.info("partitions assigned", partitions=sorted(self._owned), share=round(self._share, 3))


def _envelope(r: ConsumerRecord[bytes, bytes]) -> Envelope:
    return parse_record(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        headers=r.headers,
        timestamp_ms=r.timestamp,
    )


def _make_producer(settings: Settings) -> ResilientProducer:
    return ResilientProducer(settings.kafka, client_role="crm-writer", resets=metrics.PRODUCER_REPLACED)
