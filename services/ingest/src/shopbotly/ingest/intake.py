"""The intake of one request, after the body is read: verify, parse, identify, dedup, publish.

HTTP-free so the HTTP edge stays thin; the Kafka edge is the publisher. Webhook dedup records live in this
replica's memory and are written only after the broker acknowledged the event, so a record never claims an
event that is not stored. Idempotency-Key records of the lead API are shared by every replica
(idempotency.py). Concurrent identical requests wait for the first one instead of publishing twice.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shopbotly.common.cache import BoundedCache
from shopbotly.common.config import ConfigError, ShopbotlyConfig
from shopbotly.common.events import RawEvent
from shopbotly.common.ids import normalize_email
from shopbotly.common.logging import bound, get_logger
from shopbotly.common.signatures import SignatureError
from shopbotly.common.sources import (
    LEAD_SOURCE,
    Answer,
    InboundRequest,
    SourceKeys,
    WebhookSource,
    source_kind,
)
from shopbotly.ingest import metrics
from shopbotly.ingest.domain import (
    EventFields,
    ExtractionRules,
    FieldError,
    Rejection,
    build_raw_event,
    extract_event,
    source_uri,
)
from shopbotly.ingest.idempotency import LeadIdempotency
from shopbotly.ingest.publisher import PublishFailed
from shopbotly.ingest.schemas import (
    EventAccepted,
    Lead,
    lead_event_id,
    lead_fingerprint,
    webhook_accepted_json,
)
from shopbotly.ingest.settings import Settings

__all__ = [
    "LEAD_EVENT_TYPE",
    "LEAD_SOURCE",
    "Accepted",
    "Intake",
    "Publisher",
    "Source",
    "WebhookRequest",
    "resolve_sources",
    "verify_content",
    "verify_request",
]

log = get_logger(__name__)

LEAD_EVENT_TYPE = "lead.submitted"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class Publisher(Protocol):
    @property
    def available(self) -> bool: ...

    async def publish(self, events: list[RawEvent]) -> list[BaseException | None]: ...


@dataclass(frozen=True)
class Source:
    """A configured source with its kind looked up, its secrets resolved and its expressions compiled."""

    tenant: str
    name: str
    kind: str
    impl: WebhookSource
    keys: SourceKeys
    max_body_bytes: int
    rules: ExtractionRules
    uri: str = field(init=False, repr=False)  # the envelope's `source`, from tenant and name

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", source_uri(self.tenant, self.name))


def resolve_sources(
    config: ShopbotlyConfig, settings: Settings, *, origin: str
) -> dict[tuple[str, str], Source]:
    """Every source, ready to verify. Secrets are read once, here: a missing or unusable secret stops the
    start with one line per problem (the reference is named, never the value)."""
    problems: list[str] = []
    sources: dict[tuple[str, str], Source] = {}
    for tenant, tenant_config in config.tenants.items():
        for name, src in tenant_config.sources.items():
            impl = source_kind(src.kind)
            resolved: list[str] = []
            for i, ref in enumerate(src.secrets):
                path = f"tenants.{tenant}.sources.{name}.secrets.{i}"
                try:
                    secret = ref.resolve()
                    impl.check_secret(secret)
                except (LookupError, ValueError) as exc:
                    problems.append(f"{origin}: {path}: {exc} ({ref.describe()})")
                    continue
                resolved.append(secret)
            sources[(tenant, name)] = Source(
                tenant=tenant,
                name=name,
                kind=src.kind,
                impl=impl,
                keys=SourceKeys(tuple(resolved), src.tolerance_s, impl.prepare(src)),
                max_body_bytes=src.max_body_bytes or settings.max_body_bytes,
                rules=ExtractionRules.for_source(src),
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return sources


@dataclass(slots=True)  # built per request: not frozen, which costs a setattr call per field
class WebhookRequest:
    headers: Mapping[str, str]  # lowercase names
    body: bytes
    method: str
    url: str  # as this service saw it: scheme://host/path?query
    path_qs: str  # raw path and query, for rebuilding the public URL
    trace_id: str
    received_at: datetime


def _refused(exc: SignatureError) -> Rejection:
    # One answer for every failure, so the response does not help a forger; the reason is counted
    # (shopbotly_ingest_rejections_total) and logged, never sent.
    return Rejection(
        401,
        f"signature_{exc.reason}",
        "missing or invalid signature, or a timestamp outside the allowed window",
        code="invalid_signature",
        note=exc.message,
    )


def verify_request(source: Source, request: WebhookRequest, *, now: float) -> None:
    """Check what the sender attached (a signature, a token) with the source's kind and secrets; 401 when
    it fails."""
    inbound = InboundRequest(request.headers, request.body, request.method, request.url, request.path_qs)
    try:
        source.impl.verify(source.keys, inbound, now=now)
    except SignatureError as exc:
        raise _refused(exc) from None


def verify_content(source: Source, parsed: Any) -> None:
    """Check what the parsed body must hold for the source's kind (Salesforce: a configured org id); 401."""
    try:
        source.impl.verify_content(source.keys, parsed)
    except SignatureError as exc:
        raise _refused(exc) from None


def _no_record(event: RawEvent) -> None:
    """Leads are not in the webhook dedup memory (their Idempotency-Key records are shared instead)."""


class _Flight:
    """One in-flight publish that identical concurrent requests wait for. Its future is made only when one
    does (nearly never): most flights end unwatched."""

    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done: asyncio.Future[bool] | None = None
        self._result: bool | None = None

    def done(self) -> asyncio.Future[bool]:
        """Resolves with True when the flight stored its event(s), False when it did not."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self._result is not None:
                self._done.set_result(self._result)
        return self._done

    def land(self, stored: bool) -> None:
        if self._result is None:
            self._result = stored
            if self._done is not None and not self._done.done():
                self._done.set_result(stored)


@dataclass(slots=True)
class Accepted:
    """What a delivery did: the ids of its events and how many of them this request published."""

    event_ids: list[str]
    published: int

    @property
    def duplicate(self) -> bool:
        """Every event had been stored before."""
        return bool(self.event_ids) and not self.published

    def json(self) -> bytes:
        return webhook_accepted_json(self.event_ids, self.published)


class Intake:
    def __init__(
        self,
        sources: Mapping[tuple[str, str], Source],
        publisher: Publisher,
        settings: Settings,
        *,
        idempotency: LeadIdempotency,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = dict(sources)
        self.publisher = publisher
        self.settings = settings
        self._clock = clock
        self._seen: BoundedCache[tuple[str, str, str], bool] = BoundedCache(
            settings.dedup_max_entries, ttl_s=settings.dedup_ttl_s, clock=monotonic
        )
        self.idempotency = idempotency
        self._flights: dict[tuple[str, ...], _Flight] = {}

    def source(self, tenant: str, name: str) -> Source:
        found = self.sources.get((tenant, name))
        if found is None:
            raise Rejection(404, "unknown_source", f"no source {name!r} is configured for tenant {tenant!r}")
        return found

    def unavailable(self, detail: str = "Kafka is unavailable; retry later") -> Rejection:
        return Rejection(
            503, "unavailable", detail, headers={"Retry-After": str(self.settings.retry_after_s)}
        )

    # --- webhooks --------------------------------------------------------------------------------

    async def webhook(self, source: Source, request: WebhookRequest) -> tuple[int, Accepted | Answer]:
        """Verify, parse and publish a delivery; the answer is the sender's own (a challenge, an
        acknowledgement) where its kind defines one, else ShopBotly's JSON."""
        verify_request(source, request, now=self._clock())
        body = source.impl.parse(request.body)
        verify_content(source, body)
        challenge = source.impl.challenge(body)
        if challenge is not None:
            return challenge.status, challenge
        events = self._events(source, request, body)
        status, accepted = await self._publish_once(source, events)
        ack = source.impl.acknowledge(accepted.event_ids, duplicate=accepted.duplicate)
        return (ack.status, ack) if ack is not None else (status, accepted)

    def _events(self, source: Source, request: WebhookRequest, body: Any) -> list[RawEvent]:
        hash_source = source.uri
        events: list[RawEvent] = []
        errors: list[FieldError] = []
        for item in source.impl.split(body, request.body):
            data, raw, loc = item.data, item.raw, item.loc
            try:
                fields = extract_event(
                    source.rules, data, request.headers, hash_source=hash_source, raw=raw, loc=loc
                )
            except Rejection as exc:
                errors.extend(exc.errors)
                continue
            events.append(
                build_raw_event(
                    tenant=source.tenant,
                    source=source.name,
                    fields=fields,
                    data=data,
                    trace_id=request.trace_id,
                    received_at=request.received_at,
                )
            )
        if errors:
            raise Rejection(422, "invalid_event", "the event cannot be identified", errors=errors)
        return events

    async def _publish_once(self, source: Source, events: list[RawEvent]) -> tuple[int, Accepted]:
        fresh: list[RawEvent] = []
        waits: list[asyncio.Future[bool]] = []
        keys: set[tuple[str, str, str]] = set()
        for event in events:
            key = (source.tenant, source.name, event.id)
            if key in keys or self._seen.get(key):
                continue  # a repeat inside the batch, or already stored
            keys.add(key)
            flight = self._flights.get(key)
            if flight is not None:
                waits.append(flight.done())
            else:
                fresh.append(event)
        ok = await self._publish(
            fresh, lambda e: (source.tenant, source.name, e.id), source.tenant, source.name
        )
        if waits:
            ok = all(await asyncio.gather(*waits)) and ok
        if not ok:
            raise self.unavailable()
        return (202 if fresh else 200), Accepted([e.id for e in events], len(fresh))

    async def _publish(
        self,
        events: list[RawEvent],
        key_of: Callable[[RawEvent], tuple[str, ...]],
        tenant: str,
        source: str,
        on_stored: Callable[[RawEvent], None] | None = None,
    ) -> bool:
        """Publish `events`; record the acknowledged ones; True when every one was acknowledged."""
        if not events:
            return True
        flights = [(key_of(e), _Flight()) for e in events]
        for key, flight in flights:
            self._flights[key] = flight
        try:
            results = await self.publisher.publish(events)
        except BaseException:
            results = [RuntimeError("publish interrupted") for _ in events]
            raise
        finally:
            stored = 0
            for event, (key, flight), result in zip(events, flights, results, strict=True):
                self._flights.pop(key, None)
                if result is None:
                    stored += 1
                    log.debug(
                        "event stored",
                        event_id=event.id,
                        tenant=tenant,
                        trace_id=event.traceid,
                        source=source,
                    )
                    if on_stored is None:
                        self._seen.put((tenant, source, event.id), True)
                    else:
                        on_stored(event)
                else:
                    with bound(event_id=event.id, tenant=tenant, trace_id=event.traceid):
                        log.warning("event not stored", source=source, error=str(result))
                flight.land(result is None)
            metrics.events_published(tenant, source).inc(stored)
            metrics.DEDUP_ENTRIES.set(len(self._seen))
        return all(r is None for r in results)

    # --- leads -----------------------------------------------------------------------------------

    async def lead(
        self,
        tenant: str,
        lead: Lead,
        *,
        idempotency_key: str | None,
        trace_id: str,
        received_at: datetime,
    ) -> tuple[int, EventAccepted, bool]:
        """Publish a lead; the bool is True when an earlier request with this Idempotency-Key answers it."""
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise Rejection(
                400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters"
            )
        data = lead.event_data()
        fingerprint = lead_fingerprint(data)
        event = build_raw_event(
            tenant=tenant,
            source=LEAD_SOURCE,
            fields=EventFields(
                lead_event_id(tenant, idempotency_key, fingerprint),
                LEAD_EVENT_TYPE,
                normalize_email(lead.email),
            ),
            data=data,
            trace_id=trace_id,
            received_at=received_at,
        )
        if idempotency_key is None:
            if not await self._publish(
                [event], lambda e: ("lead", e.id), tenant, LEAD_SOURCE, on_stored=_no_record
            ):
                raise self.unavailable()
            return 202, EventAccepted(event_id=event.id), False
        # One request per key at a time in this replica; the others wait for it, then find its record.
        flight_key = ("lead-key", tenant, idempotency_key)
        while (flight := self._flights.get(flight_key)) is not None:
            await asyncio.wait([flight.done()])  # not `await`: a waiter's cancellation must not cancel it
        own = self._flights[flight_key] = _Flight()
        try:
            return await self._keyed_lead(tenant, idempotency_key, fingerprint, event)
        finally:
            self._flights.pop(flight_key, None)
            own.land(True)

    async def _keyed_lead(
        self, tenant: str, idempotency_key: str, fingerprint: str, event: RawEvent
    ) -> tuple[int, EventAccepted, bool]:
        store = self.idempotency
        if not store.ready:
            raise self.unavailable("Idempotency-Key records are still being read; retry later")
        binding = store.binding(tenant, idempotency_key)
        if binding is None:
            try:
                binding = await store.claim(tenant, idempotency_key, fingerprint, event.id, event.traceid)
            except PublishFailed as exc:
                with bound(event_id=event.id, tenant=tenant, trace_id=event.traceid):
                    log.warning("idempotency claim failed", reason=exc.reason, error=str(exc))
                raise self.unavailable() from None
        if binding.fingerprint != fingerprint:
            raise Rejection(
                422,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different body; use a new key for a new lead",
            )
        if binding.stored:
            return 202, EventAccepted(event_id=binding.event_id), True
        stored = await self._publish(
            [event], lambda e: ("lead", e.id), tenant, LEAD_SOURCE, on_stored=_no_record
        )
        if not stored:
            # The key stays bound to this body: the client's retry (same body) publishes it.
            raise self.unavailable()
        await store.stored(tenant, idempotency_key, binding, event.traceid)
        return 202, EventAccepted(event_id=event.id), False
