"""HTTP test doubles for crm-writer's peers, served through `httpx.MockTransport`.

`FakeHubSpot` keeps contacts, notes and tickets in memory and answers with HubSpot's shapes: batch
upsert/read with per-record (207) errors, `objectWriteTraceId`, the X-HubSpot-RateLimit-* headers, 429
bodies with `policyName`, and 401 for unknown tokens. Faults are switched on by tests: an outage (503),
a 429 storm, a daily quota exhausted. It records when each request arrived, so a test can check that
the rate limit held over every rolling window. `BotReceiver` verifies Standard Webhooks signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka import ConsumerRecord
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shopbotly.common.events import (
    CommandOp,
    CommandOutcome,
    CommandResult,
    CrmCommand,
    Headers,
    message_headers,
)
from shopbotly.common.kafka import KafkaSettings, make_consumer, make_producer
from shopbotly.common.topics import Topic
from shopbotly.crm_writer.domain import WRITE_KINDS, Write, WriteKind, property_text, union_tags
from shopbotly.crm_writer.engine import Writer
from shopbotly.crm_writer.settings import Settings

__all__ = [
    "BotReceiver",
    "ExpectedContact",
    "FakeContact",
    "FakeHubSpot",
    "RoutingTransport",
    "TopicReader",
    "actual_state",
    "command_record",
    "command_result",
    "count_results",
    "crm_command",
    "max_in_window",
    "mixed_commands",
    "one_write",
    "produce",
    "results_of",
    "running",
    "sequential_model",
    "settings_for",
    "writer_outputs",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


def max_in_window(times: list[float], window_s: float) -> int:
    """The most requests that arrived within any rolling window of `window_s` seconds."""
    best = 0
    start = 0
    ordered = sorted(times)
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass
class FakeContact:
    id: str
    properties: dict[str, str]
    notes: list[str] = field(default_factory=list)
    tickets: list[dict[str, str]] = field(default_factory=list)


_DATED = re.compile(r"^/crm/(objects|properties)/\d{4}-\d{2}/")


def _v3_path(path: str) -> str:
    """A date-versioned HubSpot path (`/crm/objects/2026-03/...`) as its numbered twin (`/crm/v3/objects/...`,
    associations `/crm/v4/objects/...`): the fake speaks both families the same way."""
    match = _DATED.match(path)
    if match is None:
        return path
    family = match.group(1)
    rest = path[match.end() :]
    numbered = "v4" if family == "objects" and "/associations/" in rest else "v3"
    return f"/crm/{numbered}/{family}/{rest}"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}
    )


class FakeHubSpot:
    """An in-memory HubSpot account behind `transport` (base URL: anything; paths are HubSpot's)."""

    def __init__(
        self,
        *,
        tokens: set[str] | None = None,
        limit: int | None = 100,
        interval_s: float = 10.0,
        tag_property: str = "shopbotly_tags",
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens if tokens is not None else {"hs-token"}
        self.limit = limit
        self.interval_s = interval_s
        self.tag_property = tag_property
        self.latency_s = latency_s
        self._clock = clock
        self.contacts: dict[str, FakeContact] = {}
        self._ids = itertools.count(1001)
        self.arrivals: deque[float] = deque()  # accepted requests, for the rolling window
        self.accepted_at: list[float] = []
        self.arrived_at: list[float] = []  # every authenticated request, refused or not
        self.requests = 0
        self.throttled = 0
        self.throttled_by_limit = 0  # 429s of the rolling-window limit itself (not injected)
        self.creates = 0
        self.updates = 0
        self.batch_sizes: list[int] = []
        self.paths: dict[str, int] = {}
        self.outage = False
        self.storm_until = 0.0
        self.daily_exhausted = False
        self.refuse_property: str | None = None  # a whole-batch 400 when any input sets it
        self.oauth_refresh_tokens: dict[str, str] = {}
        # Unique-valued note/ticket properties (batch upsert keys); empty: the portal lacks them.
        self.unique_properties: set[str] = {"shopbotly_command_id"}
        # Notes and tickets by (object type, record id): properties, unique key, associated contact id.
        self.engagements: dict[tuple[str, str], dict[str, Any]] = {}
        self.engagement_creates = 0
        self.engagement_batch_sizes: list[int] = []
        self.engagement_updates = 0
        self.minted = 0
        self.transport = httpx.MockTransport(self.handle)

    # -- state helpers for tests --------------------------------------------------------------

    def seed(self, email: str, properties: dict[str, str]) -> FakeContact:
        contact = FakeContact(str(next(self._ids)), {"email": email, **properties})
        self.contacts[email] = contact
        return contact

    def tags(self, email: str) -> list[str]:
        raw = self.contacts[email].properties.get(self.tag_property, "")
        return [t for t in raw.split(";") if t]

    def _rate_headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        return {
            "X-HubSpot-RateLimit-Max": str(self.limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.limit - len(self.arrivals))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.interval_s * 1000)),
        }

    # -- the handler -------------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self.requests += 1
        path = _v3_path(request.url.path)
        self.paths[path] = self.paths.get(path, 0) + 1
        if path == "/oauth/v1/token":
            return self._token(request)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return _json(
                401,
                {
                    "status": "error",
                    "message": "Authentication credentials not found.",
                    "category": "INVALID_AUTHENTICATION",
                },
            )
        if self.outage:
            return _json(503, {"status": "error", "message": "Service unavailable"})
        now = self._clock()
        self.arrived_at.append(now)
        if self.daily_exhausted:
            self.throttled += 1
            return _json(
                429,
                {
                    "status": "error",
                    "message": "You have reached your daily limit.",
                    "errorType": "RATE_LIMIT",
                    "policyName": "DAILY",
                },
            )
        if now < self.storm_until:
            self.throttled += 1
            return _json(
                429,
                {
                    "status": "error",
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT",
                    "policyName": "TEN_SECONDLY_ROLLING",
                },
                {"Retry-After": "1"},
            )
        if self.limit is not None:
            while self.arrivals and self.arrivals[0] <= now - self.interval_s:
                self.arrivals.popleft()
            if len(self.arrivals) >= self.limit:
                self.throttled += 1
                self.throttled_by_limit += 1
                return _json(
                    429,
                    {
                        "status": "error",
                        "message": "You have reached your ten_secondly_rolling limit.",
                        "errorType": "RATE_LIMIT",
                        "policyName": "TEN_SECONDLY_ROLLING",
                    },
                    self._rate_headers(),
                )
            self.arrivals.append(now)
        self.accepted_at.append(now)
        body = orjson.loads(request.content) if request.content else None
        if request.method == "POST" and path == "/crm/v3/objects/contacts/batch/upsert":
            status, payload = self._upsert(body)
        elif request.method == "POST" and path == "/crm/v3/objects/contacts/batch/read":
            status, payload = self._read(body)
        elif request.method == "POST" and path in (
            "/crm/v3/objects/notes/batch/upsert",
            "/crm/v3/objects/tickets/batch/upsert",
        ):
            status, payload = self._upsert_engagements(path.split("/")[4], body)
        elif request.method == "PUT" and path.startswith("/crm/v4/objects/"):
            status, payload = self._associate(path)
        elif request.method == "POST" and path in ("/crm/v3/objects/notes", "/crm/v3/objects/tickets"):
            status, payload = self._engagement(path.rsplit("/", 1)[1], body)
        else:
            status, payload = 404, {"status": "error", "message": f"no route {request.method} {path}"}
        return _json(status, payload, self._rate_headers())

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = dict(x.split("=", 1) for x in request.content.decode().split("&") if "=" in x)
        refresh = form.get("refresh_token")
        if form.get("grant_type") != "refresh_token" or refresh not in self.oauth_refresh_tokens:
            return _json(400, {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"})
        self.minted += 1
        token = f"minted-{self.minted}"
        self.tokens.add(token)
        return _json(
            200, {"access_token": token, "expires_in": 1800, "refresh_token": refresh, "token_type": "bearer"}
        )

    def _upsert(self, body: Any) -> tuple[int, dict[str, Any]]:
        inputs = body.get("inputs", [])
        self.batch_sizes.append(len(inputs))
        if len(inputs) > 100:
            return 400, {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "The maximum number of inputs supported in a batch request is 100.",
            }
        if self.refuse_property and any(self.refuse_property in (i.get("properties") or {}) for i in inputs):
            return 400, {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": f'Property "{self.refuse_property}" does not exist',
            }
        results, errors = [], []
        for item in inputs:
            email = str(item.get("id", "")).strip().lower()
            trace = item.get("objectWriteTraceId")
            if item.get("idProperty") != "email" or not _EMAIL.match(email):
                error = {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": f"Email address {email} is invalid",
                    "context": {"ids": [item.get("id")]},
                }
                if trace:
                    error["objectWriteTraceId"] = trace
                errors.append(error)
                continue
            props = {k: "" if v is None else str(v) for k, v in (item.get("properties") or {}).items()}
            contact = self.contacts.get(email)
            created = contact is None
            if contact is None:
                contact = FakeContact(str(next(self._ids)), {})
                self.contacts[email] = contact
                self.creates += 1
            else:
                self.updates += 1
            contact.properties.update(props)
            contact.properties["email"] = email
            result: dict[str, Any] = {
                "id": contact.id,
                "properties": dict(contact.properties),
                "new": created,
            }
            if trace:
                result["objectWriteTraceId"] = trace
            results.append(result)
        payload: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            payload["errors"] = errors
            payload["numErrors"] = len(errors)
            return 207, payload
        return 200, payload

    def _read(self, body: Any) -> tuple[int, dict[str, Any]]:
        wanted = body.get("properties") or ["email", "firstname", "lastname"]
        results, missing = [], []
        for item in body.get("inputs", []):
            email = str(item.get("id", "")).lower()
            contact = self.contacts.get(email)
            if contact is None:
                missing.append(item.get("id"))
                continue
            props = {name: contact.properties.get(name) for name in wanted}
            props["hs_object_id"] = contact.id
            results.append({"id": contact.id, "properties": props})
        payload: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            payload["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects",
                    "context": {"ids": missing},
                }
            ]
            return 207, payload
        return 200, payload

    def _upsert_engagements(self, kind: str, body: Any) -> tuple[int, dict[str, Any]]:
        inputs = body.get("inputs", [])
        self.engagement_batch_sizes.append(len(inputs))
        results = []
        for item in inputs:
            id_property = str(item.get("idProperty"))
            if id_property not in self.unique_properties:
                type_id = "0-46" if kind == "notes" else "0-5"
                return 400, {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": f"Unable to perform update/upsert by non-unique {type_id} property "
                    f"{id_property}",
                }
            key = str(item["id"])
            props = {k: str(v) for k, v in (item.get("properties") or {}).items() if v is not None}
            found = next((r for (k, _), r in self.engagements.items() if k == kind and r["key"] == key), None)
            created = found is None
            if found is None:
                found = {"id": str(next(self._ids)), "key": key, "properties": {}, "contact": None}
                self.engagements[(kind, found["id"])] = found
                self.engagement_creates += 1
            else:
                self.engagement_updates += 1
            found["properties"].update(props, **{id_property: key})
            if found["contact"] is not None and kind == "tickets":
                owner = next(c for c in self.contacts.values() if c.id == found["contact"])
                next(t for t in owner.tickets if t["id"] == found["id"]).update(found["properties"])
            result = {"id": found["id"], "properties": dict(found["properties"]), "new": created}
            if item.get("objectWriteTraceId"):
                result["objectWriteTraceId"] = item["objectWriteTraceId"]
            results.append(result)
        return 200, {"status": "COMPLETE", "results": results}

    def _associate(self, path: str) -> tuple[int, dict[str, Any]]:
        # /crm/v4/objects/{kind}/{id}/associations/default/contacts/{contactId}
        parts = path.split("/")
        kind, object_id, contact_id = parts[4], parts[5], parts[9]
        record = self.engagements.get((kind, object_id))
        owner = next((c for c in self.contacts.values() if c.id == contact_id), None)
        if record is None or owner is None:
            return 404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "no such record"}
        if record["contact"] is None:
            record["contact"] = contact_id
            if kind == "notes":
                owner.notes.append(record["properties"].get("hs_note_body", ""))
            else:
                owner.tickets.append({"id": object_id, **record["properties"]})
        type_id = 202 if kind == "notes" else 16
        spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
        result = {"from": {"id": object_id}, "to": {"id": contact_id}, "associationSpec": spec}
        return 200, {"status": "COMPLETE", "results": [result]}

    def _engagement(self, kind: str, body: Any) -> tuple[int, dict[str, Any]]:
        props = body.get("properties") or {}
        assoc = body.get("associations") or []
        expected_type = 202 if kind == "notes" else 16
        ids = [a["to"]["id"] for a in assoc]
        types = [t["associationTypeId"] for a in assoc for t in a["types"]]
        if not ids or types != [expected_type] * len(types):
            return 400, {"status": "error", "category": "VALIDATION_ERROR", "message": "bad associations"}
        owner = next((c for c in self.contacts.values() if c.id == ids[0]), None)
        if owner is None:
            return 400, {"status": "error", "category": "VALIDATION_ERROR", "message": "no such contact"}
        new_id = str(next(self._ids))
        if kind == "notes":
            if not props.get("hs_timestamp"):
                return 400, {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "hs_timestamp is required",
                }
            owner.notes.append(str(props.get("hs_note_body", "")))
        else:
            if not props.get("subject") or not props.get("hs_pipeline") or not props.get("hs_pipeline_stage"):
                return 400, {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "missing ticket fields",
                }
            owner.tickets.append({"id": new_id, **{k: str(v) for k, v in props.items()}})
        return 201, {"id": new_id, "properties": props}


class BotReceiver:
    """A bot endpoint that verifies every notification with the `standardwebhooks` library."""

    def __init__(self, secret: str, *, fail_with: int | None = None) -> None:
        self._webhook = Webhook(secret)
        self.fail_with = fail_with
        self.received: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.rejected = 0
        self.attempts = 0
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.fail_with is not None:
            return httpx.Response(self.fail_with)
        try:
            payload = self._webhook.verify(request.content, dict(request.headers))
        except WebhookVerificationError:
            self.rejected += 1
            return httpx.Response(400)
        self.received.append(payload)
        self.ids.append(request.headers["webhook-id"])
        return httpx.Response(204)


class RoutingTransport(httpx.AsyncBaseTransport):
    """Sends each request to the transport registered for its host (several fake peers, one client)."""

    def __init__(self, routes: dict[str, httpx.AsyncBaseTransport]) -> None:
        self.routes = routes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.routes.get(request.url.host)
        if transport is None:
            return httpx.Response(502, text=f"no fake peer for host {request.url.host}")
        return await transport.handle_async_request(request)


class TopicReader:
    """Reads a whole topic (every partition, from the beginning) in the background, for assertions."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer = make_consumer(kafka, topic, group_id=None, client_role="test-reader")
        self._task: asyncio.Task[None] | None = None
        self._grew = asyncio.Event()

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records.extend(records)
            if batch:
                self._grew.set()
                self._grew = asyncio.Event()

    async def wait_for(
        self, done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool], *, timeout_s: float
    ) -> None:
        async with asyncio.timeout(timeout_s):
            while not done(self.records):
                event = self._grew
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 0.5)


async def produce(
    kafka: KafkaSettings, records: Sequence[tuple[bytes | None, bytes | None, Headers]]
) -> None:
    """Publish records to crm-commands (key, value, headers), acknowledged before returning."""
    producer = make_producer(kafka, client_role="test-producer")
    await producer.start()
    try:
        topic = kafka.topic(Topic.CRM_COMMANDS)
        futures = [
            await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def command_record(cmd: CrmCommand) -> tuple[bytes | None, bytes | None, Headers]:
    headers = message_headers(
        event_id=cmd.causation_event_id, tenant=cmd.tenant, trace_id=cmd.trace_id, schema=CrmCommand.SCHEMA
    )
    return cmd.key(), cmd.to_json(), headers


@dataclass
class ExpectedContact:
    """What one identity's record looks like after applying its commands one by one, in order."""

    properties: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)


def sequential_model(
    commands: Sequence[CrmCommand], *, skip: set[str] | None = None
) -> dict[str, ExpectedContact]:
    """The CRM state that applying `commands` sequentially produces (the reference for tests)."""
    state: dict[str, ExpectedContact] = {}
    for cmd in commands:
        if skip and cmd.command_id in skip:
            continue
        c = state.setdefault(cmd.identity, ExpectedContact())
        if cmd.op in (CommandOp.UPSERT_CONTACT, CommandOp.UPSERT_LEAD, CommandOp.ADD_TAGS):
            c.properties.update({k: property_text(v) for k, v in cmd.fields.items()})
            c.tags = union_tags(c.tags, cmd.tags)
        elif cmd.op is CommandOp.ADD_NOTE:
            c.notes.append(cmd.body or "")
        elif cmd.op is CommandOp.CREATE_TICKET:
            c.tickets.append((cmd.body or "").splitlines()[0] if cmd.body else "Support request")
    return state


def actual_state(fake: FakeHubSpot) -> dict[str, ExpectedContact]:
    out: dict[str, ExpectedContact] = {}
    for email, contact in fake.contacts.items():
        props = {k: v for k, v in contact.properties.items() if k not in ("email", fake.tag_property)}
        out[email] = ExpectedContact(
            properties=props,
            tags=fake.tags(email),
            notes=list(contact.notes),
            tickets=[t["subject"] for t in contact.tickets],
        )
    return out


NAMES = ["Ann", "Bo", "Cy", "Di", "Ed"]


def settings_for(kafka: KafkaSettings, **kw: Any) -> Settings:
    """Settings for a writer in a test: its own group, fast commits, short backoffs and circuits."""
    values: dict[str, Any] = {
        "kafka": kafka,
        "consumer_group": f"{kafka.topic_prefix}crm-writer",
        "commit_interval_s": 0.2,
        "poll_timeout_ms": 50,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.4,
        "circuit_open_s": 0.3,
        "circuit_max_open_s": 1.0,
        "revoke_grace_s": 2.0,
        "session_timeout_ms": 6000,
        "shutdown_grace_s": 5.0,
        **kw,
    }
    return Settings(**values)


@asynccontextmanager
async def running(writer: Writer) -> AsyncIterator[asyncio.Task[None]]:
    """Run a writer while the block runs; stop it gracefully after (cancel it if that hangs)."""
    task = asyncio.create_task(writer.run())
    try:
        async with asyncio.timeout(30):
            while not writer.started.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield task
    finally:
        if not task.done():
            writer.stop()
            try:
                async with asyncio.timeout(15):
                    await task
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def mixed_commands(
    n: int, identities: int, *, seed: int, notes: bool = True, connection: str = "hs", tenant: str = "t1"
) -> list[CrmCommand]:
    """`n` commands over `identities` identities: upserts, tags, and (unless `notes=False`) notes, tickets."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        who = f"user{rng.randrange(identities):04d}@example.com"
        roll = rng.random()
        kw: dict[str, Any] = {}
        if roll < 0.6 or (not notes and roll < 0.8):
            op = CommandOp.UPSERT_CONTACT
            kw["fields"] = {
                f: rng.choice(NAMES) + str(i % 7) for f in rng.sample(["firstname", "lastname", "phone"], 2)
            }
        elif roll < 0.85 or not notes:
            op = CommandOp.ADD_TAGS
            kw["tags"] = rng.sample(["vip", "lead", "shop", "chat", "refund", "b2b"], 2)
        elif roll < 0.95:
            op = CommandOp.ADD_NOTE
            kw["body"] = f"note {i} for {who}"
        else:
            op = CommandOp.CREATE_TICKET
            kw["body"] = f"ticket {i}\ndetails"
        out.append(
            crm_command(
                i,
                op,
                who,
                command_id=f"cmd_{seed}_{i:05d}",
                tenant=tenant,
                connection=connection,
                causation_event_id=f"evt_{seed}_{i}",
                rule_id="it",
                trace_id=f"trace{i}",
                received_at=None,
                **kw,
            )
        )
    return out


@asynccontextmanager
async def writer_outputs(
    kafka: KafkaSettings, writer: Writer | None = None
) -> AsyncIterator[tuple[TopicReader, TopicReader]]:
    """Readers of crm-writer's results and dead letters (opened first, so they miss nothing), with `writer`
    running meanwhile when one is given."""
    async with (
        TopicReader(kafka, kafka.topic(Topic.CRM_RESULTS)) as results,
        TopicReader(kafka, kafka.topic(Topic.CRM_COMMANDS_DLQ)) as dlq,
    ):
        if writer is None:
            yield results, dlq
        else:
            async with running(writer):
                yield results, dlq


def crm_command(
    n: int | str = 0, op: CommandOp = CommandOp.UPSERT_CONTACT, identity: str = "a@x.io", **fields: Any
) -> CrmCommand:
    """A command as the mapper emits it: `c{n}`, caused by event `e{n}`, tenant `t`, connection `crm`, unless
    `fields` say otherwise."""
    values: dict[str, Any] = {
        "command_id": f"c{n}",
        "tenant": "t",
        "connection": "crm",
        "identity": identity,
        "op": op,
        "causation_event_id": f"e{n}",
        "rule_id": "r",
        "mapping_version": "1",
    }
    return CrmCommand(**(values | fields))


def command_result(
    cid: str, tenant: str = "t", outcome: CommandOutcome = CommandOutcome.APPLIED, **fields: Any
) -> CommandResult:
    """A result as crm-writer publishes it: an applied contact upsert on connection `hubspot` for
    `jane@example.com`, unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "connection": "hubspot",
        "identity": "jane@example.com",
        "op": CommandOp.UPSERT_CONTACT,
    }
    return CommandResult(command_id=cid, tenant=tenant, outcome=outcome, **(values | fields))


def one_write(cmd: CrmCommand, kind: WriteKind | None = None, partition: int = 0) -> Write:
    """The write of one command, as the lanes hand it to a connector (`kind`: the op's usual one)."""
    write = Write(kind or WRITE_KINDS[cmd.op], cmd.tenant, cmd.connection, cmd.identity)
    write.absorb(cmd, partition)
    return write


def results_of(reader: TopicReader) -> dict[str, CommandResult]:
    """The outcome of each command id seen on crm-results."""
    out: dict[str, CommandResult] = {}
    for r in reader.records:
        res = CommandResult.from_json(r.value)
        # A duplicate result (ledger hit after a restart) never hides an earlier "applied".
        if res.command_id not in out or out[res.command_id].outcome.value != "applied":
            out[res.command_id] = res
    return out


def count_results(n: int) -> Callable[[list[Any]], bool]:
    """A `TopicReader.wait_for` condition: results for at least `n` distinct command ids."""
    return lambda records: len({CommandResult.from_json(r.value).command_id for r in records}) >= n
