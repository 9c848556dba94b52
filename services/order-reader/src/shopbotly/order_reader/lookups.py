"""Answering lookups: answer cache, then the store, then (orders only) the tenant's read-through.

Reads run on the event loop without a thread hop: a cache hit is a dict lookup, and a store read is a
primary-key search in pages SQLite usually has in memory, cheaper than handing it to a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from shopbotly.common.config import TenantConfig
from shopbotly.order_reader.cache import Answer, LruCache
from shopbotly.order_reader.domain import (
    CursorKey,
    Kind,
    encode_cursor,
    entity_tag,
    history_body,
    history_tag,
)
from shopbotly.order_reader.metrics import Metrics
from shopbotly.order_reader.readthrough import ReadThrough
from shopbotly.order_reader.store import Store

__all__ = ["Found", "Lookups", "Source"]

# Cached "not in the store", so repeated misses (typos, enumeration) cost no SQLite read either.
_ABSENT: tuple[bytes, str] = (b"", "")


class Source(Enum):
    TABLE = "table"
    READTHROUGH = "readthrough"


@dataclass(frozen=True, slots=True)
class Found:
    answer: Answer
    source: Source


class Lookups:
    def __init__(
        self, store: Store, metrics: Metrics, readthrough: ReadThrough, *, cache_entries: int
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._readthrough = readthrough
        # Plain tuples of str and bytes as keys and entries: the garbage collector stops tracking those, so
        # a large cache adds nothing to its full passes (which pause every request while they run).
        self._cache: LruCache[tuple[str, str, str], tuple[bytes, str]] = LruCache(cache_entries)
        self._hit = metrics.cache.labels("hit")
        self._miss = metrics.cache.labels("miss")

    def invalidate(self, kind: Kind, tenant: str, ident: str) -> None:
        """Called after a change to this key is committed to the store."""
        self._cache.invalidate((kind.value, tenant, ident))
        if kind is Kind.ORDER:
            self._readthrough.invalidate(tenant, ident)

    def clear(self) -> None:
        self._cache.clear()
        self._readthrough.clear()

    def local(self, kind: Kind, tenant: str, ident: str) -> Answer | None:
        key = (kind.value, tenant, ident)
        entry = self._cache.get(key)
        if entry is None:
            self._miss.inc()
            record = self._store.get(kind, tenant, ident)
            entry = (
                _ABSENT
                if record is None
                else (record.body, entity_tag(kind, record.partition, record.offset))
            )
            self._cache.put(key, entry)
        else:
            self._hit.inc()
        return None if entry is _ABSENT else Answer(*entry)

    async def get(self, kind: Kind, tenant: str, config: TenantConfig, ident: str) -> Found | None:
        """The answer for one id of this tenant, or None. Raises UpstreamUnavailable from read-through."""
        answer = self.local(kind, tenant, ident)
        if answer is not None:
            return Found(answer, Source.TABLE)
        if kind is Kind.ORDER and config.order_api is not None:
            fetched = await self._readthrough.fetch(tenant, config.order_api, ident)
            if fetched is not None:
                return Found(fetched, Source.READTHROUGH)
        return None

    def history(self, kind: Kind, tenant: str, email: str, *, limit: int, after: CursorKey | None) -> Answer:
        """One page of a customer's orders (newest first) or tickets (open first, then newest)."""
        records = self._store.history(kind, tenant, email, limit=limit + 1, after=after)
        page = records[:limit]
        next_cursor = encode_cursor(kind, page[-1].cursor_key()) if len(records) > limit else None
        tags = [entity_tag(kind, r.partition, r.offset) for r in page]
        return Answer(history_body([r.body for r in page], next_cursor), history_tag(tags, next_cursor))
