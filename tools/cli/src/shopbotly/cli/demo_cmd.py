"""`shopbotly demo`: signed webhooks into the running local stack, then the CRM records, an order lookup and
the CRM → bot loop (a ticket reply reaching a bot receiver that verifies it with `standardwebhooks`).

It runs against `make up` (config/shopbotly.yaml, secrets from config/demo.env) and changes nothing but the
demo tenant's data. `BotReceiver` is also the bot stand-in of the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import httpx
import typer
import uvicorn
from dotenv import dotenv_values
from rich.table import Table
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shopbotly.cli._common import console, err_console
from shopbotly.cli._kafka_io import Bound, BoundKind, Record, read_range
from shopbotly.common.config import ConfigError, ShopbotlyConfig, TenantConfig, load_config
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic

__all__ = ["BotReceiver", "Notification", "demo", "sign_shopify", "sign_standard_webhook"]

T = TypeVar("T")


# --- signing, as the platforms do it (independent of ShopBotly's own verification code) ---------------------


def sign_standard_webhook(secret: str, body: bytes, msg_id: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed with the `standardwebhooks` reference library."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def sign_shopify(secret: str, body: bytes, topic: str, webhook_id: str | None = None) -> dict[str, str]:
    """Shopify's headers: X-Shopify-Hmac-Sha256 = base64 HMAC-SHA256 of the body with the app secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "x-shopify-hmac-sha256": base64.b64encode(digest).decode(),
        "x-shopify-topic": topic,
        "x-shopify-webhook-id": webhook_id or str(uuid.uuid4()),
        "x-shopify-shop-domain": "demo-shop.myshopify.com",
        "x-shopify-api-version": "2025-01",
        "content-type": "application/json",
    }


# --- the bot's side: a receiver that verifies every notification -----------------------------------------


@dataclass(frozen=True)
class Notification:
    """One verified delivery: its `webhook-id` (ShopBotly's command id) and the parsed body."""

    webhook_id: str
    payload: dict[str, Any]
    received_at: float  # time.time()

    @property
    def type(self) -> str:
        return str(self.payload.get("type", ""))

    @property
    def data(self) -> dict[str, Any]:
        data = self.payload.get("data")
        return data if isinstance(data, dict) else {}


@dataclass
class BotReceiver:
    """A stand-in for a tenant's chatbot: an HTTP endpoint (uvicorn, in a thread) for notifications.

    Each delivery is verified with the `standardwebhooks` library; verified ones are kept in `received`,
    refused ones counted in `rejected` (answered 401). `fail_with` makes it answer that status instead
    (an unhealthy bot). `stop()` closes the port (a bot that is down); `start()` opens it again.
    """

    secret: str
    port: int
    path: str = "/"
    host: str = "127.0.0.1"
    fail_with: int | None = None
    received: list[Notification] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    attempts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def for_url(cls, url: str, secret: str) -> BotReceiver:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"the bot receiver needs an http://host:port/path URL, got {url!r}")
        return cls(secret=secret, port=parts.port, path=parts.path or "/", host=parts.hostname)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.attempts += 1
        if self.fail_with is not None:
            return JSONResponse({"error": "unavailable"}, status_code=self.fail_with)
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            with self._lock:
                self.rejected.append(str(exc))
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        note = Notification(request.headers["webhook-id"], payload, time.time())
        with self._lock:
            self.received.append(note)
        return Response(status_code=204)

    def start(self, timeout: float = 10.0) -> None:
        app = Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_config=None, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"bot-receiver-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(
                    f"the bot receiver could not listen on {self.host}:{self.port} (port in use?)"
                )
            if time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(f"the bot receiver did not start on {self.host}:{self.port} in {timeout}s")
            time.sleep(0.02)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
        self._server = self._thread = None

    def __enter__(self) -> BotReceiver:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def notifications(self, predicate: Callable[[Notification], bool] = lambda _: True) -> list[Notification]:
        with self._lock:
            return [n for n in self.received if predicate(n)]


# --- the demo ---------------------------------------------------------------------------------------------


class DemoError(Exception):
    """Something the user can fix (stack not running, config or secret missing, effect not seen in time)."""


def _wait(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            result = check()
        except httpx.HTTPError as exc:
            result, last = None, f"{type(exc).__name__}: {exc}"
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise DemoError(
                f"{what}: not seen within {timeout:g}s{detail}. Is the stack up? `make ps`, `make logs`"
            )
        time.sleep(interval)


@dataclass
class DemoContext:
    tenant: str
    config: TenantConfig
    env: Mapping[str, str]
    ingest: httpx.Client
    reader: httpx.Client
    emulator: httpx.Client
    api_key: str
    timeout: float
    sent: list[tuple[str, str, str, int]] = field(default_factory=list)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def secret(self, source_kind: str) -> tuple[str, str]:
        """(source name, resolved secret) of the tenant's first source of this kind."""
        for name, source in self.config.sources.items():
            if source.kind == source_kind:
                ref = source.secrets[0]
                try:
                    value = self.env.get(ref.env) if ref.env else ref.resolve()
                except LookupError:
                    value = None
                if not value:
                    raise DemoError(
                        f"secret {ref.describe()} of source {name!r} is not set (config/demo.env)"
                    )
                return name, value
        raise DemoError(f"tenant {self.tenant!r} has no {source_kind!r} source")

    def post_webhook(
        self, source: str, headers: dict[str, str], body: bytes, label: str, event_id: str
    ) -> None:
        url = f"/v1/webhooks/{self.tenant}/{source}"
        response = self.ingest.post(url, content=body, headers=headers)
        self.sent.append((source, label, event_id, response.status_code))
        if response.status_code >= 300:
            raise DemoError(f"ingest refused {label}: {response.status_code} {response.text[:300]}")


def _bot_event(kind: str, conversation: str, customer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    stamp = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": kind,
        "timestamp": stamp,
        "data": {"conversation_id": conversation, "customer": customer, **extra},
    }


def _send_bot(ctx: DemoContext, event: dict[str, Any]) -> str:
    source, secret = ctx.secret("shopbotly")
    body = json.dumps(event).encode()
    headers = sign_standard_webhook(secret, body)
    ctx.post_webhook(source, headers, body, event["type"], headers["webhook-id"])
    return headers["webhook-id"]


def _shopify_order(order_id: int, email: str) -> dict[str, Any]:
    now = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    lines = [
        {
            "id": order_id + 1,
            "title": "Aeron Chair, graphite",
            "sku": "AER-GR-B",
            "quantity": 2,
            "price": "1395.00",
        },
        {"id": order_id + 2, "title": "Desk lamp", "sku": "LMP-01", "quantity": 1, "price": "49.00"},
    ]
    return {
        "id": order_id,
        "name": f"#{order_id % 10000}",
        "order_number": order_id % 10000,
        "email": email,
        "created_at": now,
        "updated_at": now,
        "currency": "USD",
        "total_price": "2839.00",
        "subtotal_price": "2839.00",
        "financial_status": "paid",
        "fulfillment_status": None,
        "cancelled_at": None,
        "customer": {"id": 115310627314723954, "email": email, "first_name": "Jane", "last_name": "Doe"},
        "billing_address": {"company": "Doe Design LLC", "phone": "+1 415-555-0134", "country_code": "US"},
        "line_items": lines,
        "fulfillments": [],
    }


def _contact_table(state: dict[str, Any], emails: list[str]) -> Table:
    """The CRM contacts side by side: one column per contact, one row per property."""
    records = state.get("records", {}).get("hubspot", {})
    table = Table("property", *emails, title="CRM contacts (the CRM emulator playing HubSpot)")
    rows: dict[str, list[str]] = {
        name: []
        for name in (
            "id",
            "firstname",
            "lastname",
            "phone",
            "lifecyclestage",
            "shopbotly_intent_score",
            "shopbotly_conversation_id",
            "tags",
            "notes",
            "tickets",
            "creates / updates",
        )
    }
    for email in emails:
        rec = records.get(email) or {}
        props = rec.get("properties", {})
        for name in rows:
            if name == "id":
                value = str(rec.get("id", "(missing)"))
            elif name == "tags":
                value = ", ".join(rec.get("tags") or [])
            elif name in ("notes", "tickets"):
                value = str(len(rec.get(name) or []))
            elif name == "creates / updates":
                value = f"{rec.get('creates', 0)} / {rec.get('updates', 0)}"
            else:
                value = str(props.get(name) or "")
            rows[name].append(value)
    for name, values in rows.items():
        table.add_row(name, *values)
    return table


def _ticket_of(state: dict[str, Any], email: str, conversation: str) -> dict[str, Any] | None:
    rec = state.get("records", {}).get("hubspot", {}).get(email) or {}
    for ticket in rec.get("tickets") or []:
        if conversation in json.dumps(ticket.get("properties", {})):
            return dict(ticket)
    return None


def _kv_table(title: str, values: Mapping[str, Any]) -> Table:
    table = Table("field", "value", title=title)
    for key, value in values.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(key, shown if len(shown) < 120 else shown[:117] + "...")
    return table


def _load_env(env_file: Path | None) -> dict[str, str]:
    """The process environment over the demo env file (demo-only secrets)."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.exists():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def _trusting(ca: Path) -> ssl.SSLContext | bool:
    """Trust `ca` when it exists (the emulator over HTTPS), else the default CAs."""
    return ssl.create_default_context(cafile=ca) if ca.is_file() else True


def _check_up(clients: Mapping[str, httpx.Client]) -> None:
    down = []
    for name, client in clients.items():
        try:
            if client.get("/readyz").status_code != 200:
                down.append(f"{name} ({client.base_url}) not ready")
        except httpx.HTTPError as exc:
            down.append(f"{name} ({client.base_url}): {type(exc).__name__}")
    if down:
        raise DemoError("the local stack is not up: " + "; ".join(down) + ". Start it with `make up`.")


def run_demo(ctx: DemoContext, bot: BotReceiver) -> None:
    run_id = secrets.token_hex(3)
    jane = {"email": "Jane.Doe@Example.com", "name": "Jane Doe", "phone": "+1 (415) 555-0134"}
    omar = {"email": "omar.haddad@example.com", "name": "Omar Haddad", "phone": "+44 20 7946 0958"}
    jane_conv, omar_conv = f"conv_{run_id}_j", f"conv_{run_id}_o"
    order_id = 5_000_000_000_000 + secrets.randbelow(10**9)

    console.rule("[bold]1. The chatbot and the shop send signed webhooks")
    transcript = [
        {"role": "customer", "text": "Hi, is the Aeron chair in stock in graphite?"},
        {"role": "bot", "text": "Yes, 12 in stock. Delivery in 3-5 days."},
        {"role": "customer", "text": "Can I get a bulk discount for 20 chairs?"},
    ]
    _send_bot(ctx, _bot_event("conversation.started", jane_conv, jane, channel="web", locale="en-US"))
    for i, msg in enumerate(transcript):
        _send_bot(ctx, _bot_event("message.received", jane_conv, jane, message={"id": f"m_{i}", **msg}))
    _send_bot(
        ctx,
        _bot_event(
            "lead.qualified",
            jane_conv,
            jane,
            intent_score=0.92,
            tags=["Bulk-Order", "office-furniture"],
            transcript=transcript,
        ),
    )
    omar_transcript = [
        {"role": "customer", "text": "My order arrived with a broken armrest."},
        {"role": "bot", "text": "Sorry to hear that. Let me get a colleague."},
    ]
    _send_bot(ctx, _bot_event("conversation.started", omar_conv, omar, channel="web"))
    _send_bot(
        ctx,
        _bot_event(
            "handoff.requested",
            omar_conv,
            omar,
            reason="damaged delivery",
            priority="high",
            transcript=omar_transcript,
        ),
    )
    shop_source, shop_secret = ctx.secret("shopify")
    order_body = json.dumps(_shopify_order(order_id, jane["email"])).encode()
    shop_headers = sign_shopify(shop_secret, order_body, "orders/create")
    ctx.post_webhook(
        shop_source, shop_headers, order_body, "orders/create", shop_headers["x-shopify-webhook-id"]
    )
    sent = Table("source", "type", "event id", "answer", title="webhooks sent to ingest")
    for source, label, event_id, status in ctx.sent:
        sent.add_row(source, label, event_id, str(status))
    console.print(sent)

    console.rule("[bold]2. What reached the CRM")
    jane_email, omar_email = jane["email"].lower(), omar["email"]

    def crm_done() -> dict[str, Any] | None:
        state: dict[str, Any] = ctx.emulator.get("/_emulator/state", params={"system": "hubspot"}).json()
        records = state.get("records", {}).get("hubspot", {})
        j, o = records.get(jane_email, {}), records.get(omar_email, {})
        jane_ok = (
            j.get("properties", {}).get("shopbotly_conversation_id") == jane_conv
            and j.get("properties", {}).get("lifecyclestage") == "lead"
            and "shopbotly-lead" in (j.get("tags") or [])
            and any(str(order_id) in json.dumps(n) for n in j.get("notes") or [])
        )
        omar_ok = o and _ticket_of(state, omar_email, omar_conv) is not None
        return state if jane_ok and omar_ok else None

    state = _wait(crm_done, timeout=ctx.timeout, what="the contacts, tags, order note and ticket in the CRM")
    console.print(_contact_table(state, [jane_email, omar_email]))
    notes_table = Table("contact", "note", title="CRM notes (latest 3 per contact)")
    for email in (jane_email, omar_email):
        record = state.get("records", {}).get("hubspot", {}).get(email) or {}
        for note in (record.get("notes") or [])[-3:]:
            notes_table.add_row(email, str(note.get("properties", {}).get("hs_note_body", "")))
    console.print(notes_table)
    ticket = _ticket_of(state, omar_email, omar_conv)
    assert ticket is not None
    ticket_id = str(ticket["id"])
    props = ticket.get("properties", {})
    tickets = Table("ticket", "contact", "subject", "priority", "stage", title="CRM tickets")
    tickets.add_row(
        ticket_id,
        omar_email,
        props.get("subject", ""),
        props.get("hs_ticket_priority", ""),
        props.get("hs_pipeline_stage", ""),
    )
    console.print(tickets)

    console.rule("[bold]3. The chatbot looks the order up")
    auth = {"Authorization": f"Bearer {ctx.api_key}"}
    order = _wait(
        lambda: (
            r.json()
            if (r := ctx.reader.get(f"/api/v1/orders/{order_id}", headers=auth)).status_code == 200
            else None
        ),
        timeout=ctx.timeout,
        what=f"order {order_id} in the order lookup",
    )
    console.print(f"GET /api/v1/orders/{order_id} → 200", markup=False)
    lines = Table(
        "title", "sku", "qty", "price", title=f"order {order.get('order_number')} ({order.get('status')})"
    )
    for line in order.get("lines") or []:
        lines.add_row(
            str(line.get("title")), str(line.get("sku")), str(line.get("quantity")), str(line.get("price"))
        )
    console.print(_kv_table("order lookup", {k: v for k, v in order.items() if k != "lines"}))
    console.print(lines)

    console.rule("[bold]4. CRM → bot: an agent answers the ticket, the bot is told")
    _wait(
        lambda: ctx.reader.get(f"/api/v1/tickets/{ticket_id}", headers=auth).status_code == 200,
        timeout=ctx.timeout,
        what=f"ticket {ticket_id} in the ticket lookup",
    )
    reply = "We are sending a replacement armrest today; it arrives in 2 days."
    ctx.emulator.post(
        f"/_emulator/tickets/{ticket_id}", json={"reply": {"text": reply, "author": "Alex (support)"}}
    ).raise_for_status()
    console.print(f"agent reply on ticket {ticket_id} (POST /_emulator/tickets/{ticket_id})", markup=False)

    def for_ticket(change: str) -> Callable[[Notification], bool]:
        return lambda n: str(n.data.get("ticket_id")) == ticket_id and n.data.get("change") == change

    _wait(
        lambda: bot.notifications(for_ticket("reply")),
        timeout=ctx.timeout,
        what="the reply notification at the bot",
    )
    ctx.emulator.post(f"/_emulator/tickets/{ticket_id}", json={"hs_pipeline_stage": "4"}).raise_for_status()
    console.print(f"agent closes ticket {ticket_id} (hs_pipeline_stage 4)", markup=False)
    _wait(
        lambda: [n for n in bot.notifications(for_ticket("status")) if n.data.get("status") == "closed"],
        timeout=ctx.timeout,
        what="the status notification at the bot",
    )
    notes = Table(
        "webhook-id",
        "type",
        "change",
        "status",
        "body",
        title=f"notifications the bot received at {bot.url}, each verified with standardwebhooks",
    )
    for n in bot.notifications():
        d = n.data
        what = d.get("ticket_id") or d.get("contact_id") or d.get("deal_id") or ""
        notes.add_row(
            n.webhook_id[:12] + "…",
            n.type,
            f"{d.get('change', '')} {what}",
            str(d.get("status") or ""),
            str(d.get("body") or ""),
        )
    console.print(notes)
    if bot.rejected:
        err_console.print(f"{len(bot.rejected)} notification(s) failed verification: {bot.rejected[:3]}")

    def closed_ticket() -> dict[str, Any] | None:
        response = ctx.reader.get(f"/api/v1/tickets/{ticket_id}", headers=auth)
        found: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return found if found.get("status") == "closed" else None

    lookup = _wait(
        closed_ticket,
        timeout=ctx.timeout,
        what=f"ticket {ticket_id} closed in the ticket lookup",
    )
    console.print(f"GET /api/v1/tickets/{ticket_id} → 200", markup=False)
    console.print(_kv_table("ticket lookup", lookup))

    console.rule("[bold]5. Dead letters written during the demo")
    dead = _dead_letters_since(ctx.started_ms)
    if not dead:
        console.print("none: every event and command took effect")
        console.rule("[bold green]demo done")
        return
    table = Table("topic", "key", "error.class", "error.message", title="dead letters (shopbotly dlq list)")
    for record in dead:
        table.add_row(
            record.topic,
            record.key_text or "",
            record.header("error.class") or "",
            (record.header("error.message") or "")[:300],
        )
    console.print(table)
    raise DemoError(
        f"{len(dead)} dead letter(s) during the demo (above); inspect them with `shopbotly dlq list`"
    )


def _dead_letters_since(started_ms: int) -> list[Record]:
    settings = KafkaSettings()

    async def read() -> list[Record]:
        found: list[Record] = []
        for logical in (Topic.RAW_EVENTS_DLQ, Topic.CRM_COMMANDS_DLQ):
            records, _, _ = await read_range(
                settings,
                settings.topic(logical),
                start=Bound(BoundKind.TIME, started_ms),
                stop=Bound(BoundKind.LATEST),
                client_role="cli-demo",
            )
            found.extend(records)
        return found

    return asyncio.run(read())


def demo(
    tenant: Annotated[str, typer.Option(help="Tenant of the demo")] = "demo",
    config_path: Annotated[
        Path | None,
        typer.Option("--config", help="Tenants file; default $SHOPBOTLY_CONFIG or config/shopbotly.yaml"),
    ] = None,
    env_file: Annotated[Path, typer.Option(help="Demo-only secrets (DEMO_*)")] = Path("config/demo.env"),
    ingest_url: Annotated[str, typer.Option(help="ingest")] = "http://127.0.0.1:8080",
    reader_url: Annotated[str, typer.Option(help="order-reader")] = "http://127.0.0.1:8081",
    emulator_url: Annotated[str, typer.Option(help="CRM emulator")] = "https://127.0.0.1:8090",
    emulator_ca: Annotated[Path, typer.Option(help="The CRM emulator's CA (make up writes it there)")] = Path(
        ".run/tls/crm-emulator-ca.pem"
    ),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each effect")] = 60.0,
) -> None:
    """Send signed webhooks to the running stack; show CRM records, an order lookup, the CRM → bot loop."""
    env = _load_env(env_file)
    path = config_path or Path(env.get("SHOPBOTLY_CONFIG") or "config/shopbotly.yaml")
    try:
        config: ShopbotlyConfig = load_config(path)
    except ConfigError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    tenant_config = config.tenants.get(tenant)
    if tenant_config is None:
        err_console.print(f"error: {path}: no tenant {tenant!r}", markup=False)
        raise typer.Exit(1)
    api_key = env.get("DEMO_API_KEY", "")
    if not api_key or not tenant_config.api_key_for(api_key):
        err_console.print(
            f"error: DEMO_API_KEY ({env_file}) is not an API key of tenant {tenant!r}", markup=False
        )
        raise typer.Exit(1)
    if tenant_config.bot_webhook is None:
        err_console.print(
            f"error: tenant {tenant!r} has no bot_webhook to show the CRM → bot loop", markup=False
        )
        raise typer.Exit(1)
    bot_ref = tenant_config.bot_webhook.secret
    bot_secret = env.get(bot_ref.env or "", "")
    if not bot_secret:
        err_console.print(f"error: bot_webhook secret {bot_ref.describe()} is not set", markup=False)
        raise typer.Exit(1)
    with (
        httpx.Client(base_url=ingest_url, timeout=10) as ingest,
        httpx.Client(base_url=reader_url, timeout=10) as reader,
        httpx.Client(base_url=emulator_url, timeout=10, verify=_trusting(emulator_ca)) as emulator,
    ):
        ctx = DemoContext(tenant, tenant_config, env, ingest, reader, emulator, api_key, timeout)
        try:
            _check_up({"ingest": ingest, "order-reader": reader, "crm-emulator": emulator})
            with BotReceiver.for_url(tenant_config.bot_webhook.url, bot_secret) as bot:
                run_demo(ctx, bot)
        except (DemoError, RuntimeError, ValueError) as exc:
            err_console.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None
