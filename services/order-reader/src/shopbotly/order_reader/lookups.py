"""Answering lookups: answer cache, then the store, then (orders only) the tenant's read-through.

Reads run on the event loop without a thread hop: a cache hit is a dict lookup, and a store read is a
primary-key search in pages SQLite usually has in memory (or maps), cheaper than handing it to a thread.
"""

from __future__ import annotations

from shopbotly.common.cache import BoundedCache
from shopbotly.common.config import TenantConfig
from shopbotly.order_reader.domain import (
    Answer,
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

__all__ = ["Lookups"]

# Cached "not in the store", so repeated misses (typos, enumeration) cost no SQLite read either.
_ABSENT: tuple[bytes, str] = (b"", "")
# The kind in cache keys as a plain str: an enum member would keep every key tuple tracked by the garbage
# collector (see below), and `Kind.value` is a property lookup on every request.
_KEY_OF = {kind: str(kind.value) for kind in Kind}


class Lookups:
    def __init__(
        self, store: Store, metrics: Metrics, readthrough: ReadThrough, *, cache_entries: int
    ) -> None:
        self._store = store
        self._readthrough = readthrough
        # Plain tuples of str and bytes as keys and entries: the garbage collector stops tracking those, so
        # a large cache adds nothing to its full passes (which pause every request while they run).
        self._cache: BoundedCache[tuple[str, str, str], tuple[bytes, str]] = BoundedCache(cache_entries)
        # Hits and misses are the cache's own counts, read at scrape time: nothing to count per lookup.
        metrics.watch_answer_cache(self._cache)

    def invalidate(self, kind: Kind, tenant: str, ident: str) -> None:
        """Called after a change to this key is committed to the store."""
        self._cache.pop((_KEY_OF[kind], tenant, ident))
        if kind is Kind.ORDER:
            self._readthrough.invalidate(tenant, ident)

    def clear(self) -> None:
        self._cache.clear()
        self._readthrough.clear()

    def local(self, kind: Kind, tenant: str, ident: str) -> Answer | None:
        """The answer from the table (through the cache), or None when the table does not have it."""
        key = (_KEY_OF[kind], tenant, ident)
        entry = self._cache.get(key)
        if entry is None:
            # One indexed read of the answer as stored (its bytes are sent as they are) and its version.
            row = self._store.get(kind, tenant, ident)
            entry = _ABSENT if row is None else (row[2], entity_tag(kind, row[0], row[1]))
            self._cache.put(key, entry)
        return None if entry is _ABSENT else Answer(*entry)

    async def remote(self, kind: Kind, tenant: str, config: TenantConfig, ident: str) -> Answer | None:
        """After a local miss: the order from the tenant's upstream order API, if it has one, else None.
        Raises UpstreamUnavailable when that API gave no usable answer."""
        if kind is not Kind.ORDER or config.order_api is None:
            return None
        return await self._readthrough.fetch(tenant, config.order_api, ident)

    def history(self, kind: Kind, tenant: str, email: str, *, limit: int, after: CursorKey | None) -> Answer:
        """One page of a customer's orders (newest first) or tickets (open first, then newest)."""
        records = self._store.history(kind, tenant, email, limit=limit + 1, after=after)
        page = records[:limit]
        next_cursor = encode_cursor(kind, page[-1].cursor_key()) if len(records) > limit else None
        tags = [entity_tag(kind, r.partition, r.offset) for r in page]
        return Answer(history_body([r.body for r in page], next_cursor), history_tag(tags, next_cursor))
