"""The faust worker, built by `create_app` (no work at import): two agents in one consumer group.

- `shopbotly.mapper.map` over raw-events and crm-results (partitioned by customer): stage 1, the
  commands of stateless rules, and a copy of each event that changes an order or ticket on the
  state-patches topic, keyed by that order or ticket;
- `shopbotly.mapper.merge` over state-patches (partitioned by order/ticket): stage 2, the one merge of
  each order and ticket, its state and the commands built from it. Before its first batch of a partition
  it did not just process (a new assignment, or a gap: another replica had it), it waits until the state
  feed has caught up with the orders/tickets topics, so it merges onto everything the previous owner
  published.

How delivery is kept (faust-streaming 0.15, read from its source), for both agents:
- The agent takes batches from its `BatchInbox`, where the consumer puts each fetch of the agent's topics in
  one piece (`MapperConsumer.inbox`; faust's per-message path, conductor to stream, is not used: it cost a
  third of the worker's CPU). Only after `Pipeline.handle` has the broker's acknowledgement of every output
  of the batch does the agent report the batch finished to the consumer, in offset order, and take the next.
- What is committed is not faust's decision: `shopbotly.mapper.commits.MapperConsumer` commits, on faust's
  commit timer or every `broker_commit_every` acks, the offset after the last finished event of the current
  generation (faust's own bookkeeping can commit past unprocessed events after a rebalance and records refused
  commits as done: faust-streaming#606, #316).
- Nothing escapes the agent: `Pipeline.handle` turns bad input into dead letters and retries produce
  failures; an exception leaving an agent would have faust acknowledge the message.
- `stream_wait_empty=False`: on shutdown faust does not wait for unacknowledged messages (a batch stuck on
  an unreachable broker would hang it); `MapperApp.on_stop` waits for the batch in flight instead, for
  up to `SHOPBOTLY_SHUTDOWN_GRACE_S`. Whatever is not acknowledged by then is redelivered after restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import faust
from faust.types import TP, Message

from shopbotly.common.health import Health
from shopbotly.common.http import serve_probes
from shopbotly.common.kafka import make_admin
from shopbotly.common.logging import configure_logging, get_logger
from shopbotly.common.topics import Topic
from shopbotly.mapper import metrics
from shopbotly.mapper.commits import SCHEME, MapperConsumer
from shopbotly.mapper.domain import Mappings
from shopbotly.mapper.pipeline import BatchAbandoned, BatchProducer, Pipeline
from shopbotly.mapper.settings import Settings
from shopbotly.mapper.state import StateStore
from shopbotly.mapper.statefeed import StateFeed

__all__ = ["MapperApp", "MapperRuntime", "create_app"]

log = get_logger("shopbotly.mapper")
PRODUCE_BATCH_BYTES = 256 * 1024


class MapperRuntime:
    """What the worker owns besides faust: probes, the producer, the state feed and the pipeline."""

    def __init__(self, settings: Settings, mappings: Mappings) -> None:
        self.settings = settings
        self.mappings = mappings
        self.health = Health()
        self.store = StateStore()
        self.producer: BatchProducer | None = None
        self.feed: StateFeed | None = None
        self.pipeline: Pipeline | None = None  # stage 1
        self.merger: Pipeline | None = None  # stage 2
        self._probes: tuple[Any, asyncio.Task[None]] | None = None
        self._next_offset: dict[TP, int] = {}

    async def _check_topics(self) -> dict[str, int]:
        """Partitions per topic. Fails fast on missing registry topics: faust would wait for them forever,
        and must not create them."""
        admin = make_admin(self.settings.kafka, client_role="mapper-admin")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            needed = [
                self.settings.kafka.topic(t)
                for t in (
                    Topic.RAW_EVENTS,
                    Topic.CRM_RESULTS,
                    Topic.CRM_COMMANDS,
                    Topic.ORDERS,
                    Topic.TICKETS,
                    Topic.RAW_EVENTS_DLQ,
                    Topic.STATE_PATCHES,
                )
            ]
            missing = [t for t in needed if t not in existing]
            if missing:
                raise RuntimeError(
                    f"missing topics {missing}: create them with `shopbotly topics create` "
                    f"(SHOPBOTLY_KAFKA_TOPIC_PREFIX={self.settings.kafka.topic_prefix!r})"
                )
            described = await admin.describe_topics(needed)
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described}

    async def start(self) -> None:
        s = self.settings
        self.health.set_ready("worker", False, "starting")
        self.health.beat("pipeline", s.mapper_stuck_after_s)
        self._probes = await serve_probes(self.health, host=s.host, port=s.port, title="shopbotly-mapper")
        partitions = await self._check_topics()
        # linger 0: a batch's outputs are all appended before the sender runs, so they share requests
        # anyway; lingering would only delay the acknowledgement the batch waits for. Record batches of up
        # to 256 KiB per partition (aiokafka's default is 16 KiB): aiokafka holds one open batch per
        # partition and makes `send` wait for its request once it is full, so a 500-event batch's outputs
        # took several produce round trips; now they take one (6 partitions x 256 KiB < the 2 MiB request).
        self.producer = BatchProducer(
            s.kafka,
            client_role="mapper",
            resets=metrics.PRODUCER_REPLACED,
            linger_ms=0,
            max_batch_size=PRODUCE_BATCH_BYTES,
        )
        await self.producer.start()
        self.feed = StateFeed(s.kafka, self.store, log=log)
        self.health.set_ready("state", False, "loading orders and tickets")
        await self.feed.start(partitions)
        self.health.set_ready("state", True)
        self.pipeline, self.merger = (
            Pipeline(kafka=s.kafka, mappings=self.mappings, store=self.store, producer=self.producer, log=log)
            for _ in range(2)
        )
        self.pipeline.grace_s = self.merger.grace_s = s.shutdown_grace_s

    def started(self) -> None:
        self.health.set_ready("worker", True)
        log.info(
            "mapper.ready",
            port=self.settings.port,
            app_id=self.settings.app_id,
            tenants=len(self.mappings.tenants),
            rules=sum(len(t.rules) for t in self.mappings.tenants.values()),
        )

    async def drain(self) -> None:
        """Stop taking batches and give the ones in flight the grace period to finish."""
        self.health.draining = True
        pipelines = [p for p in (self.pipeline, self.merger) if p is not None]
        since = time.monotonic()
        for pipeline in pipelines:
            pipeline.stopping_since = since
        deadline = since + self.settings.shutdown_grace_s
        while (  # noqa: ASYNC110
            any(p.batch_started is not None for p in pipelines) and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self._probes is not None:
            server, task = self._probes
            server.should_exit = True
            await task

    async def process(self, stream: faust.StreamT[Any]) -> None:
        """Stage 1 agent (raw-events, crm-results)."""
        topics = (self.settings.kafka.topic(Topic.RAW_EVENTS), self.settings.kafka.topic(Topic.CRM_RESULTS))
        await self._consume(stream, topics, lambda: self.pipeline, owner=False)

    async def merge(self, stream: faust.StreamT[Any]) -> None:
        """Stage 2 agent (state-patches): the owner of each order's and ticket's merge."""
        topics = (self.settings.kafka.topic(Topic.STATE_PATCHES),)
        await self._consume(stream, topics, lambda: self.merger, owner=True)

    async def _take_over(self, messages: Sequence[Message]) -> None:
        """Before merging a partition this worker did not just process, catch up with the state topics.

        Offsets that continue where this worker left off mean nobody else merged in between (what another
        replica merged without committing is merged again here: merges are idempotent in order)."""
        first: dict[TP, int] = {}
        for message in messages:
            first.setdefault(message.tp, message.offset)
        if all(self._next_offset.get(tp) == offset for tp, offset in first.items()):
            return
        assert self.feed is not None
        attempt = 0
        while True:
            try:
                await self.feed.catch_up()
                return
            except Exception as exc:  # nothing escapes an agent; the batch waits (unacknowledged)
                attempt += 1
                log.warning("state.catch_up_failed", attempt=attempt, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))

    async def _consume(
        self,
        stream: faust.StreamT[Any],
        topics: Sequence[str],
        pipeline_of: Callable[[], Pipeline | None],
        *,
        owner: bool,
    ) -> None:
        """Map a batch, publish it, then report it finished: one batch at a time, in fetch order.

        The batches come from the consumer (`MapperConsumer.inbox`), a whole fetch at a time, not through
        the agent's faust stream: the stream only subscribes the agent's topics."""
        s = self.settings
        consumer = cast(MapperConsumer, stream.app.consumer)
        within_s = s.mapper_batch_within_ms / 1000
        inbox = consumer.inbox(topics, max_events=s.mapper_batch_max, within_s=within_s)
        while True:
            messages = consumer.taken(await inbox.take())
            pipeline = pipeline_of()
            if not messages or pipeline is None or pipeline.stopping_since is not None:
                continue  # stopping: leave them unfinished, they are redelivered after restart
            try:
                if owner:
                    await self._take_over(messages)
                await pipeline.handle(messages)
            except BatchAbandoned:
                continue
            for message in messages:
                self._next_offset[message.tp] = message.offset + 1
            consumer.finished(messages)
            self.health.beat("pipeline", s.mapper_stuck_after_s)

    async def tick(self, app: faust.App) -> None:
        """Every few seconds: liveness while idle, consumer lag, state size."""
        pipelines = (self.pipeline, self.merger)
        if all(p is not None and p.batch_started is None for p in pipelines):
            self.health.beat("pipeline", self.settings.mapper_stuck_after_s)
        try:
            assigned = list(app.consumer.assignment())
            if assigned:
                highwaters = await app.consumer.highwaters(*assigned)
                for tp in assigned:
                    position = self._next_offset.get(tp)
                    if position is None:
                        position = await app.consumer.position(tp) or 0
                    lag = max(0, highwaters.get(tp, position) - position)
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
        except Exception as exc:  # lag is informative; a failed lookup must not stop the timer
            log.debug("lag.unavailable", error=f"{type(exc).__name__}: {exc}")


class MapperApp(faust.App):
    """faust.App with the runtime's lifecycle hooked in: ready before consuming, drained before stopping."""

    runtime: MapperRuntime

    async def on_first_start(self) -> None:
        await super().on_first_start()
        # faust's Worker set up its own logging before starting the app; ShopBotly logs JSON.
        s = self.runtime.settings
        configure_logging("mapper", level=s.log_level, fmt=s.log_format)

    async def on_start(self) -> None:
        await super().on_start()
        await self.runtime.start()

    async def on_started(self) -> None:
        await super().on_started()
        self.runtime.started()

    async def on_stop(self) -> None:
        await self.runtime.drain()
        await super().on_stop()

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.runtime.stop()


def create_app(settings: Settings, mappings: Mappings) -> MapperApp:
    """The worker's faust app: consumer group `settings.app_id`, no web server of faust's own, no topic
    creation (the registry topics come from `shopbotly topics create`)."""
    options = settings.kafka.faust_options()
    options.pop("producer_linger_ms", None)  # deprecated in faust; the seconds variant says the same
    app = MapperApp(
        settings.app_id,
        **options,
        # The consumer commits what the agent finished, not what faust counts as acknowledged (commits.py).
        broker_consumer=options["broker"].replace("kafka://", f"{SCHEME}://"),
        producer_linger=settings.kafka.linger_ms / 1000,
        datadir=str(settings.data_dir),
        web_enabled=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # Commit acknowledged offsets every second (faust's default is 2.8 s): fewer repeats after a crash.
        broker_commit_interval=1.0,
        # faust's default session timeout is 60 s: a crashed worker's partitions would wait that long for
        # a replacement. 10 s, as for every ShopBotly consumer (shopbotly.common.kafka.make_consumer).
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    runtime = MapperRuntime(settings, mappings)
    app.runtime = runtime
    source = app.topic(
        settings.kafka.topic(Topic.RAW_EVENTS),
        settings.kafka.topic(Topic.CRM_RESULTS),
        key_serializer="raw",
        value_serializer="raw",
    )
    app.agent(source, name="shopbotly.mapper.map", concurrency=1)(runtime.process)
    patches = app.topic(
        settings.kafka.topic(Topic.STATE_PATCHES), key_serializer="raw", value_serializer="raw"
    )
    app.agent(patches, name="shopbotly.mapper.merge", concurrency=1)(runtime.merge)
    app.timer(5.0)(runtime.tick)
    return app
