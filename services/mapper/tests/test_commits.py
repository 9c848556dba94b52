"""The mapper's commit bookkeeping (shopbotly.mapper.commits) against the two faust-streaming defects it
replaces: a refused commit recorded as done, and a commit past an offset nobody processed after a
rebalance. Each scenario runs on faust's stock consumer too, which shows the defect (if a faust release
fixes it, that test fails and says the subclass may go).

The consumers are the real classes from a real faust.App; only the Kafka call (`_commit`, the driver's
edge) and the assignment it reads are replaced, with what aiokafka answers during a rebalance.
"""

from __future__ import annotations

from pathlib import Path
from unittest.mock import AsyncMock

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers.aiokafka import Consumer as StockConsumer
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage

from shopbotly.mapper.app import create_app
from shopbotly.mapper.commits import SCHEME, MapperConsumer, MapperTransport, Watermarks
from shopbotly.mapper.domain import Mappings
from shopbotly.mapper.settings import Settings

TOPIC = "raw"
TP0, TP1 = TP(TOPIC, 0), TP(TOPIC, 1)


def message(tp: TP, offset: int, generation: int) -> Message:
    """A fetched message as the conductor hands it to the agent's stream (one reference)."""
    fetched = ConsumerMessage(
        TOPIC, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp, generation_id=generation
    )
    fetched.incref()
    return fetched


def messages(tp: TP, offsets: range, generation: int) -> list[Message]:
    return [message(tp, o, generation) for o in offsets]


def make_app(name: str, *, ours: bool) -> faust.App:
    consumer_url = f"{SCHEME}://127.0.0.1:1" if ours else "kafka://127.0.0.1:1"
    app = faust.App(name, broker="kafka://127.0.0.1:1", broker_consumer=consumer_url, value_serializer="raw")
    app.topics._acking_topics.add(TOPIC)  # what the conductor records once the agent's topic is subscribed
    return app


@pytest.fixture
async def ours() -> MapperConsumer:
    # Made in the test's event loop: faust's services bind their events to the loop they are made in.
    consumer = make_app("commits-ours", ours=True).consumer
    assert isinstance(consumer, MapperConsumer)
    return consumer


@pytest.fixture
def stock() -> StockConsumer:
    consumer = make_app("commits-stock", ours=False).consumer
    assert type(consumer) is StockConsumer
    return consumer


def kafka(consumer: StockConsumer, *, assignment: set[TP], accepts: bool) -> AsyncMock:
    """Replace the Kafka edge: the assignment aiokafka reports and the commit's answer (faust's driver
    answers False for 'already rebalanced')."""
    consumer.assignment = lambda: set(assignment)  # type: ignore[method-assign]
    commit = AsyncMock(return_value=accepts)
    consumer._commit = commit  # type: ignore[method-assign]
    return commit


# --- the pure watermark ----------------------------------------------------------------------------------


def test_watermark_is_the_offset_after_the_last_finished_message_of_the_generation() -> None:
    marks = Watermarks()
    marks.assign({TP0, TP1}, generation=7)
    assert marks.committable() == {}
    for offset in range(40, 45):
        assert marks.finished(TP0, offset, 7)
    assert marks.committable() == {TP0: 45}
    assert not marks.finished(TP0, 41, 7)  # a repeat does not move it back
    assert not marks.finished(TP1, 3, 6)  # an earlier generation never counts
    assert marks.committable() == {TP0: 45}
    marks.committed({TP0: 45}, 7)
    assert marks.committable() == {}


def test_after_revoke_and_assign_only_the_new_generation_counts() -> None:
    marks = Watermarks()
    marks.assign({TP0}, generation=1)
    marks.finished(TP0, 99, 1)
    marks.revoke()
    assert marks.committable() == {}
    assert not marks.finished(TP0, 100, 1)  # the batch in flight finishing during the rebalance
    marks.assign({TP0}, generation=2)
    assert not marks.finished(TP0, 130, 1)  # ... or after it: its partition is fetched again
    assert marks.committable() == {}
    marks.finished(TP0, 100, 2)
    assert marks.committable() == {TP0: 101}
    marks.committed({TP0: 101}, 1)  # a commit decided under generation 1 says nothing about generation 2
    assert marks.committable() == {TP0: 101}


# --- a refused commit --------------------------------------------------------------------------------------


async def test_a_refused_commit_is_not_recorded_as_done_and_is_sent_again(ours: MapperConsumer) -> None:
    await ours.on_partitions_assigned({TP0}, generation_id=1)
    ours.finished(messages(TP0, range(0, 10), 1))
    refused = kafka(ours, assignment={TP0}, accepts=False)
    assert await ours.force_commit() is False
    refused.assert_awaited_once_with({TP0: 10})
    accepted = kafka(ours, assignment={TP0}, accepts=True)
    assert await ours.force_commit() is True
    accepted.assert_awaited_once_with({TP0: 10})  # sent again: not taken for done
    assert await ours.force_commit() is False  # and only once it was accepted, not again


async def test_stock_faust_records_a_refused_commit_as_done(stock: StockConsumer) -> None:
    stock._committed_offset[TP0] = None
    for m in messages(TP0, range(0, 10), 1):
        m.ack(stock)
    refused = kafka(stock, assignment={TP0}, accepts=False)
    assert await stock.force_commit() is False
    refused.assert_awaited_once_with({TP0: 10})
    assert stock._committed_offset[TP0] == 10  # recorded as committed although Kafka refused it
    accepted = kafka(stock, assignment={TP0}, accepts=True)
    await stock.force_commit()
    accepted.assert_not_awaited()  # never sent again


# --- revoke, then assign: the stale acknowledgements -----------------------------------------------------


async def rebalance_with_stale_acks(consumer: StockConsumer) -> None:
    """Generation 1 owns TP0 and committed 100. A rebalance: TP0 is revoked and assigned again (generation 2,
    fetched again from 100). During it, faust acknowledges generation-1 messages 100-140 it had fetched but
    never delivered to the agent (streams.py: a skipped event is acked) - none of them processed."""
    await consumer.on_partitions_assigned({TP0}, generation_id=1)
    consumer._committed_offset[TP0] = 100  # what faust's perform_seek reads back from Kafka
    await consumer.on_partitions_revoked({TP0})
    await consumer.on_partitions_assigned({TP0}, generation_id=2)
    consumer._committed_offset[TP0] = 100
    for m in messages(TP0, range(100, 141), 1):
        m.ack(consumer)


async def test_after_revoke_and_assign_nothing_beyond_the_lowest_unprocessed_is_committed(
    ours: MapperConsumer,
) -> None:
    commit = kafka(ours, assignment={TP0}, accepts=True)
    # faust calls on_partitions_* on its own consumer; the app's callbacks are not the point here.
    ours._on_partitions_revoked = AsyncMock()  # type: ignore[method-assign]
    ours._on_partitions_assigned = AsyncMock()  # type: ignore[method-assign]
    await rebalance_with_stale_acks(ours)
    assert ours._n_acked == 41  # acknowledgements still count towards broker_commit_every
    assert await ours.force_commit() is False  # nothing processed in generation 2 yet
    commit.assert_not_awaited()
    ours.finished(messages(TP0, range(100, 105), 2))  # the agent maps 100-104 again
    assert await ours.force_commit() is True
    commit.assert_awaited_once_with({TP0: 105})  # not one offset beyond what was processed


async def test_stock_faust_commits_past_what_was_processed_after_a_rebalance(stock: StockConsumer) -> None:
    commit = kafka(stock, assignment={TP0}, accepts=True)
    stock._on_partitions_revoked = AsyncMock()  # type: ignore[method-assign]
    stock._on_partitions_assigned = AsyncMock()  # type: ignore[method-assign]
    await rebalance_with_stale_acks(stock)
    await stock.force_commit()
    commit.assert_awaited_once_with({TP0: 141})  # 100-140 were never processed: a crash now skips them


# --- a fetch handed to the agent in one piece -----------------------------------------------------------


def fetched(tp: TP, offsets: range) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(tp.topic, tp.partition, o, 1000, 0, b"k", b"v", None, 1, 1, ()) for o in offsets]


async def assigned(consumer: MapperConsumer, tps: set[TP], generation: int) -> None:
    consumer._on_partitions_assigned = AsyncMock()  # type: ignore[method-assign]
    consumer._on_partitions_revoked = AsyncMock()  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 0  # type: ignore[method-assign]
    consumer.app.consumer_generation_id = generation
    await consumer.on_partitions_assigned(tps, generation_id=generation)


async def test_a_fetch_reaches_the_agents_inbox_in_fetch_order(ours: MapperConsumer) -> None:
    await assigned(ours, {TP0, TP1}, generation=3)
    inbox = ours.inbox([TOPIC], max_events=100, within_s=0)
    await ours._deliver({TP0: fetched(TP0, range(10, 13)), TP1: fetched(TP1, range(0, 2))}, None)
    batch = await inbox.take()
    assert [(m.tp, m.offset) for m in batch] == [(TP0, 10), (TP0, 11), (TP0, 12), (TP1, 0), (TP1, 1)]
    assert {m.generation_id for m in batch} == {3}
    assert ours.taken(batch) == batch
    assert {TP0, TP1} <= set(ours.app.monitor.stream_inbound_time)  # faust's slow-processing check
    # faust's read offsets move on: a record fetched again below them is not delivered twice.
    await ours._deliver({TP0: fetched(TP0, range(11, 14))}, None)
    assert [m.offset for m in await inbox.take()] == [12, 13]


async def test_after_a_rebalance_what_was_fetched_before_is_not_mapped(ours: MapperConsumer) -> None:
    """A batch fetched in generation 3 and taken after the rebalance: its partitions are fetched again from
    the committed offsets, so mapping it too would publish its outputs twice (or merge as a non-owner)."""
    await assigned(ours, {TP0}, generation=3)
    inbox = ours.inbox([TOPIC], max_events=100, within_s=0)
    await ours._deliver({TP0: fetched(TP0, range(0, 5))}, None)
    stale = await inbox.take()
    await ours.on_partitions_revoked({TP0})
    await ours._deliver({TP0: fetched(TP0, range(5, 8))}, None)  # fetched during the rebalance
    assert inbox.pending == 0
    await assigned(ours, {TP0}, generation=4)
    assert ours.taken(stale) == []
    await ours._deliver({TP0: fetched(TP0, range(0, 5))}, None)
    assert len(ours.taken(await inbox.take())) == 5


async def test_finished_batches_count_towards_commit_every(ours: MapperConsumer) -> None:
    await assigned(ours, {TP0}, generation=1)
    ours._n_acked = 0
    ours.finished(messages(TP0, range(0, 120), 1))
    ours.finished(messages(TP0, range(0, 10), 0))  # another generation's: not counted
    assert ours._n_acked == 120


def test_the_mapper_app_consumes_with_the_mapper_consumer(mappings: Mappings, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), mappings)
    assert type(app.transport) is MapperTransport
    assert type(app.consumer) is MapperConsumer
    assert type(app.producer_transport) is faust_aiokafka.Transport  # the producer keeps faust's own
