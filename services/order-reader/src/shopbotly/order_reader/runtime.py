"""What one app instance owns and starts: config, store, caches, read-through client, consumer, metrics."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry

from shopbotly.common.config import ShopbotlyConfig
from shopbotly.common.health import Health
from shopbotly.common.logging import get_logger
from shopbotly.common.topics import Topic
from shopbotly.order_reader.auth import KeyRing
from shopbotly.order_reader.domain import Kind
from shopbotly.order_reader.lookups import Lookups
from shopbotly.order_reader.materializer import Materializer
from shopbotly.order_reader.metrics import Metrics
from shopbotly.order_reader.readthrough import ReadThrough
from shopbotly.order_reader.settings import Settings
from shopbotly.order_reader.store import Store

__all__ = ["Runtime"]

_log = get_logger(__name__)


class Runtime:
    """Built by the app factory; `start()`/`stop()` run in the app's lifespan."""

    metrics: Metrics
    store: Store
    lookups: Lookups

    def __init__(
        self,
        settings: Settings,
        config: ShopbotlyConfig,
        *,
        registry: CollectorRegistry,
        consume: bool = True,
        upstream_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.registry = registry
        self.consume = consume
        self.health = Health()
        self.keys = KeyRing(config)
        self.materializer: Materializer | None = None
        self._upstream_transport = upstream_transport
        self._http: httpx.AsyncClient | None = None
        # Encoded once: the headers every lookup answer carries besides its ETag.
        self.answer_headers: list[tuple[bytes, bytes]] = [
            # private: answers depend on the API key. Short: an order changes while the customer chats.
            (b"cache-control", f"private, max-age={settings.cache_max_age_s}".encode()),
            (b"vary", b"Authorization"),
        ]

    async def start(self) -> None:
        settings = self.settings
        self.metrics = Metrics(self.registry)
        self.store = Store(
            settings.store_path,
            topics={
                Kind.ORDER: settings.kafka.topic(Topic.ORDERS),
                Kind.TICKET: settings.kafka.topic(Topic.TICKETS),
            },
            cache_mb=settings.sqlite_cache_mb,
            mmap_mb=settings.sqlite_mmap_mb,
        )
        reset_reason = self.store.open()
        if reset_reason is not None:
            _log.warning("store emptied for a rebuild", reason=reset_reason)
        self._http = httpx.AsyncClient(transport=self._upstream_transport, follow_redirects=False)
        readthrough = ReadThrough(self._http, self.metrics)
        self.lookups = Lookups(self.store, self.metrics, readthrough, cache_entries=settings.cache_entries)
        if self.consume:
            self.materializer = Materializer(settings, self.store, self.lookups, self.metrics, self.health)
            self.materializer.start(reset_reason)
        else:
            self.health.set_ready("table", False, "not consuming (started without Kafka)")
        _log.info("order-reader started", port=settings.port, data_dir=str(settings.data_dir))

    async def stop(self) -> None:
        self.health.draining = True
        if self.materializer is not None:
            await self.materializer.stop()
        if self._http is not None:
            await self._http.aclose()
        self.store.close()
        self.metrics.close()
        _log.info("order-reader stopped")
