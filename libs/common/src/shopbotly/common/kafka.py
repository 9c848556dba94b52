"""Kafka client factories: the only place ShopBotly builds Kafka clients, with safe defaults.

Producers are idempotent with `acks=all` (DESIGN.md guarantee 1); consumers never auto-commit
(guarantee 2: offsets move only after the effect). Security (TLS, SASL PLAIN/SCRAM) comes from settings.
Every client in the process, faust's included, backs off its reconnects to a broker that refuses them
(`install_reconnect_backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic, TopicSpec, registry

__all__ = [
    "KafkaSettings",
    "ReconnectBackoff",
    "ResilientProducer",
    "install_reconnect_backoff",
    "make_admin",
    "make_consumer",
    "make_producer",
]

log = get_logger(__name__)

# Kafka's own client defaults for reconnect.backoff.ms / reconnect.backoff.max.ms are 50 ms / 1 s (KIP-144).
# 100 ms is aiokafka's retry backoff; 1 s bounds how long after a broker's return a client notices it.
RECONNECT_BACKOFF_S = 0.1
RECONNECT_BACKOFF_MAX_S = 1.0


@dataclass
class ReconnectBackoff:
    """Per-broker reconnect backoff of one client, as the Java client's `reconnect.backoff.ms` (KIP-144):
    after each failed connect the next waits twice as long (base, 2x, 4x ... up to `max_s`), +/-20 % jitter so
    clients do not reconnect in step; a successful connect starts again from `base_s`."""

    base_s: float = RECONNECT_BACKOFF_S
    max_s: float = RECONNECT_BACKOFF_MAX_S
    clock: Callable[[], float] = time.monotonic
    _failures: dict[Any, int] = field(default_factory=dict)
    _not_before: dict[Any, float] = field(default_factory=dict)

    def delay(self, node_id: Any) -> float:
        """Seconds until `node_id` may be tried again (0: now)."""
        return max(0.0, self._not_before.get(node_id, 0.0) - self.clock())

    def failed(self, node_id: Any) -> float:
        failures = self._failures.get(node_id, 0) + 1
        self._failures[node_id] = failures
        wait = min(self.max_s, self.base_s * 2.0 ** (failures - 1)) * random.uniform(0.8, 1.2)
        self._not_before[node_id] = self.clock() + wait
        return wait

    def succeeded(self, node_id: Any) -> None:
        self._failures.pop(node_id, None)
        self._not_before.pop(node_id, None)


_ConnGetter = Callable[..., Awaitable[Any]]


def install_reconnect_backoff() -> None:
    """Make every `AIOKafkaClient` of this process back off its reconnects (idempotent).

    aiokafka has no reconnect backoff (aio-libs/aiokafka#144): each of a client's loops (metadata, fetcher,
    coordinator, producer sender) reconnects as fast as the broker refuses, and a refused connect costs
    microseconds. While a broker was down that was thousands of connects, `Unable connect to node` lines
    and metadata refreshes per second per service, and most of a core. Here a connect to a broker that
    failed waits for that broker's backoff first; concurrent callers wait for the same attempt. The class
    is patched, not an instance: faust builds its own aiokafka clients inside the mapper. aiokafka is pinned
    in the lock file; tests/fault/test_broker_outage_noise.py fails if an upgrade breaks this.
    """
    original: _ConnGetter = AIOKafkaClient._get_conn
    if getattr(original, "_shopbotly_backoff", False):
        return

    @functools.wraps(original)
    async def get_conn(
        self: AIOKafkaClient,
        node_id: Any,
        *,
        group: ConnectionGroup = ConnectionGroup.DEFAULT,
        no_hint: bool = False,
    ) -> Any:
        conn = self._conns.get((node_id, group))
        if conn is not None and conn.connected():
            return conn
        backoff: ReconnectBackoff = self.__dict__.setdefault("_shopbotly_reconnect", ReconnectBackoff())
        # A loop, not one sleep: another caller's attempt may fail meanwhile and push the next one out.
        while True:
            wait = backoff.delay(node_id)
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        conn = await original(self, node_id, group=group, no_hint=no_hint)
        if conn is None:
            backoff.failed(node_id)
        else:
            backoff.succeeded(node_id)
        return conn

    get_conn._shopbotly_backoff = True  # type: ignore[attr-defined]
    AIOKafkaClient._get_conn = get_conn  # type: ignore[method-assign]


class KafkaSettings(BaseSettings):
    """Kafka connection settings, from `SHOPBOTLY_KAFKA_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SHOPBOTLY_KAFKA_", extra="ignore", frozen=True)

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topic_prefix: str = "shopbotly."
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    client_id: str = "shopbotly"
    # lz4: cheap on CPU, good on JSON. linger 5 ms: lets concurrent webhook publishes share a batch
    # without adding noticeable latency to a single one.
    compression_type: Literal["gzip", "lz4", "zstd", "snappy"] | None = "lz4"
    linger_ms: int = Field(default=5, ge=0)
    request_timeout_ms: int = Field(default=15_000, ge=1000)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                f"SHOPBOTLY_KAFKA_{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        return self

    def topics(self) -> dict[Topic, TopicSpec]:
        return registry(
            self.topic_prefix, partitions=self.partitions, min_insync_replicas=self.min_insync_replicas
        )

    def topic(self, logical: Topic) -> str:
        return f"{self.topic_prefix}{logical.value}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        ctx = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return ctx

    def client_options(self) -> dict[str, Any]:
        """Connection and security options common to every aiokafka client."""
        install_reconnect_backoff()  # every factory passes here: no client of ours reconnects in a spin
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        context = self.ssl_context()
        if context is not None:
            opts["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return opts

    def faust_options(self) -> dict[str, Any]:
        """faust.App keyword arguments with the same broker, security and producer guarantees."""
        import faust  # local import: only the mapper depends on faust

        install_reconnect_backoff()  # faust builds aiokafka clients of its own
        opts: dict[str, Any] = {
            "broker": ";".join(f"kafka://{h}" for h in self.bootstrap.split(",")),
            "producer_acks": -1,
            "producer_compression_type": self.compression_type,
            "producer_linger_ms": self.linger_ms,
            "topic_replication_factor": self.replication_factor,
            "topic_partitions": self.partitions,
            "topic_allow_declare": False,
            "broker_commit_every": 100,
        }
        context = self.ssl_context()
        if self.security_protocol.startswith("SASL") and self.sasl_password is not None:
            opts["broker_credentials"] = faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        elif context is not None:
            opts["broker_credentials"] = faust.SSLCredentials(context)
        return opts


def make_producer(settings: KafkaSettings, *, client_role: str, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, `acks=all` producer. Call `await producer.start()` before use."""
    return AIOKafkaProducer(**_producer_options(settings, client_role, overrides))


def _producer_options(settings: KafkaSettings, client_role: str, overrides: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {
        **settings.client_options(),
        "client_id": f"{settings.client_id}-{client_role}",
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": settings.compression_type,
        "linger_ms": settings.linger_ms,
        "max_request_size": 2 * 1024 * 1024,
    }
    opts.update(overrides)
    if opts.get("acks") != "all" or not opts.get("enable_idempotence"):
        raise ValueError("ShopBotly producers must be idempotent with acks=all (DESIGN.md guarantee 1)")
    return opts


class ResilientProducer:
    """The producer the services use: `make_producer`'s idempotent `acks=all` producer, replaced by a new one
    when a batch fails.

    An idempotent producer numbers each partition's batches; the broker accepts only the next number.
    aiokafka never takes a number back: when a numbered batch fails (it expired while the partition had no
    leader during a broker restart, or the broker refused it), every later batch to that partition is refused
    with `OutOfOrderSequenceNumber`, for the life of the producer (aio-libs/aiokafka#1017). The Java client
    resets the sequence by bumping the producer epoch; aiokafka cannot, so after any failed delivery the
    next send starts a new producer (a new producer id, numbers from 0) and the old one is closed in the
    background.

    Nothing is re-sent here: a failed send fails for the caller, who retries it (in its order, the only one it
    knows). What the old producer still holds either lands or fails back to its caller the same way.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        client_role: str,
        resets: Counter | None = None,
        retire_timeout_s: float = 30.0,
        **overrides: Any,
    ) -> None:
        options = _producer_options(settings, client_role, overrides)  # refuses bad overrides now
        self._new: Callable[[], AIOKafkaProducer] = lambda: AIOKafkaProducer(**options)
        self._role = client_role
        self._resets = resets
        self._retire_timeout_s = retire_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._failure: BaseException | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self.replaced = 0

    async def start(self) -> None:
        """Connect (raises when the broker cannot be reached, like `AIOKafkaProducer.start`)."""
        self._producer = await self._started()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Flush what is pending and close, including producers still being retired, within `timeout_s`.

        Bounded because an idempotent producer's batches wait for a leader for ever, and aiokafka's stop
        can outlast a cancel (asyncio.wait_for would then wait for it too): what has not finished in time
        is cancelled and not waited for, and the shutdown goes on.
        """
        producer, self._producer = self._producer, None
        pending: set[asyncio.Future[None]] = set(self._retiring)
        if producer is not None:
            pending.add(asyncio.ensure_future(producer.stop()))
        if not pending:
            return
        done, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("kafka producer did not stop cleanly", client_role=self._role, error=repr(exc))
        for task in late:
            task.cancel()
        if late:
            log.warning("kafka producer did not stop in time", client_role=self._role, timeout_s=timeout_s)

    @property
    def client(self) -> AIOKafkaClient:
        """The current producer's client (metadata, topics)."""
        if self._producer is None:
            raise RuntimeError("the producer is not started")
        return self._producer.client

    @property
    def failure(self) -> BaseException | None:
        """The delivery failure that condemned the current producer, until it is replaced."""
        return self._failure

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Hand a message over; the returned future resolves on the broker's acknowledgement."""
        producer = await self.healthy()
        future: asyncio.Future[RecordMetadata] = await producer.send(
            topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms, headers=headers
        )
        future.add_done_callback(lambda f: self._delivered(producer, f))
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> RecordMetadata:
        future = await self.send(topic, value, key, partition, timestamp_ms, headers)
        return await future

    async def healthy(self) -> AIOKafkaProducer:
        """The current producer, replaced first if a delivery failed (raises if the new one cannot start)."""
        producer = self._producer
        if producer is not None and self._failure is None:
            return producer
        async with self._lock:
            if self._producer is None:
                raise RuntimeError("the producer is not started")
            if self._failure is not None:
                replacement = await self._started()
                old, self._producer = self._producer, replacement
                log.warning(
                    "kafka producer replaced",
                    client_role=self._role,
                    after=f"{type(self._failure).__name__}: {self._failure}"[:200],
                )
                self._failure = None
                self.replaced += 1
                if self._resets is not None:
                    self._resets.inc()
                task = asyncio.create_task(self._retire(old), name=f"retire-producer-{self._role}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return self._producer

    def _delivered(self, producer: AIOKafkaProducer, future: asyncio.Future[RecordMetadata]) -> None:
        if future.cancelled():
            return
        # Always retrieved here, whoever else awaits the future: a caller that stopped waiting (its own
        # deadline passed) leaves the failure to us, and asyncio logs every unretrieved one as "Future
        # exception was never retrieved" (dozens per broker restart, one per batch that lost its leader).
        failure = future.exception()
        if failure is not None and producer is self._producer and self._failure is None:
            self._failure = failure

    async def _started(self) -> AIOKafkaProducer:
        producer = self._new()
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _retire(self, producer: AIOKafkaProducer) -> None:
        """Let the old producer deliver or fail what it holds, then close it (bounded: batches of an
        idempotent producer wait for a leader for ever)."""
        try:
            await asyncio.wait_for(producer.stop(), self._retire_timeout_s)
        except Exception as exc:
            log.warning("old kafka producer did not close cleanly", client_role=self._role, error=repr(exc))
            with contextlib.suppress(Exception):
                await producer.client.close()


def make_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    client_role: str,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits; the caller commits after the effect is done."""
    opts: dict[str, Any] = {
        **settings.client_options(),
        "client_id": f"{settings.client_id}-{client_role}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_uncommitted",
        "max_poll_interval_ms": 300_000,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
    }
    opts.update(overrides)
    if opts.get("enable_auto_commit"):
        raise ValueError("ShopBotly consumers commit manually, after the effect (DESIGN.md guarantee 2)")
    return AIOKafkaConsumer(*topics, **opts)


def make_admin(settings: KafkaSettings, *, client_role: str = "admin") -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**settings.client_options(), client_id=f"{settings.client_id}-{client_role}")
