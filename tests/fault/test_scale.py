"""Every service at several replicas (design guarantee 9), on a private broker with 6 partitions.

2 ingest, 3 mappers, 3 crm-writers and 2 order-readers take a stream of signed events: chatbot leads for every
customer, Shopify orders whose three events come under different customers (so under different partitions and
mapper replicas), chat handoffs that open CRM tickets, and agent replies on those tickets (CRM webhooks that
reach the bot). Meanwhile the mapper and the writer scale up by one and back down (SIGTERM), one replica of
each service is killed (SIGKILL) and restarted, and the broker restarts. Then:

- the CRM holds exactly the identities sent, each with the state of its customer's last event;
- no effect is doubled: one contact per identity, one note per order event, one ticket per handoff, one bot
  notification per notify_bot command;
- each order's state in both order-readers is the merge of all its events; each ticket's, its last change;
- the CRM never saw more requests in a rolling 10 s than the connection's limit, and at most 1 % were 429s;
- every consumer group (and each order-reader) has lag 0.

All checks are evaluated and reported (<pytest tmp>/scale_report.json) before the first failing one fails
the test, so one run shows every figure. Size: SHOPBOTLY_SCALE_CUSTOMERS and SHOPBOTLY_SCALE_LEADS (lead
events per customer) change it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopbotly.cli.demo_cmd import BotReceiver, Notification
from shopbotly.common.topics import Topic
from tests.fault.scenario import FaultRun, lead_contact, lead_qualified, wait_progress
from tests.fault.sender import Event, Sender
from tests.stack import (
    PrivateKafka,
    Service,
    Stack,
    StackSecrets,
    create_topics,
    free_port,
    gauge_values,
    group_lag,
    poll,
    read_topic,
    stack_env,
    tenants_yaml,
)

pytestmark = pytest.mark.fault

PARTITIONS = 6
REPLICAS = {"ingest": 2, "mapper": 3, "crm-writer": 3, "order-reader": 2}
# Issue 20 asks for ~20,000 events over 2,000 customers (SHOPBOTLY_SCALE_CUSTOMERS=2000
# SHOPBOTLY_SCALE_LEADS=9). On the 2-core test machine that stream alone takes over 8 minutes with 12
# processes on it; `make test` runs a quarter of it: 1,000 customers, 4,650 events.
CUSTOMERS = int(os.environ.get("SHOPBOTLY_SCALE_CUSTOMERS", "1000"))
LEADS_PER_CUSTOMER = int(os.environ.get("SHOPBOTLY_SCALE_LEADS", "4"))
ORDERS = CUSTOMERS // 5  # three events each, under two different customers
HANDOFFS = CUSTOMERS // 20  # a ticket each, then three agent changes
SCORES = (0.15, 0.35, 0.55, 0.75, 0.95)
RATE_PER_S = 40.0  # both senders together: the stream outlasts the faults (about 2 minutes)
BROKER_DOWN_S = 8
LIMIT = 100  # the connection's rate limit (tenants_yaml): 100 requests per 10 s, as HubSpot's own
WINDOW_S = 10.0
BOT_PATH = "/shopbotly/notifications"


def _email(i: int) -> str:
    return f"scale-{i:05d}@example.com"


def _lead(i: int, seq: int) -> Event:
    body = lead_qualified(
        _email(i),
        first_name=f"F{i}",
        last_name=f"L{i}-{seq}",
        conversation_id=f"conv-{i}-{seq}",
        score=SCORES[seq % len(SCORES)],
        tags=[f"round-{seq % 4}"],
    )
    return Event(f"lead-{i}-{seq}", body)


def _expected_contact(i: int) -> dict[str, str]:
    last = LEADS_PER_CUSTOMER - 1
    return lead_contact(
        _email(i),
        first_name=f"F{i}",
        last_name=f"L{i}-{last}",
        conversation_id=f"conv-{i}-{last}",
        score=SCORES[last % len(SCORES)],
    )


def _handoff(i: int) -> Event:
    return Event(
        f"handoff-{i}",
        {
            "type": "handoff.requested",
            "timestamp": "2026-11-24T10:00:00Z",
            "data": {
                "conversation_id": f"hand-{i}",
                "customer": {"email": _email(i), "first_name": f"F{i}", "last_name": f"L{i}-handoff"},
                "reason": f"parcel {i} damaged",
                "priority": "urgent",
                "transcript": [{"role": "customer", "text": "The box was crushed."}],
            },
        },
    )


@dataclass(frozen=True)
class OrderPlan:
    """One order's three Shopify events: created under its buyer, paid under another customer (a gift paid
    by someone else), fulfilled under the buyer again. Each event carries fields the others lack, so the
    merged state needs all three whatever order the mappers see them in (`updated_at` orders them)."""

    order_id: int
    buyer: int
    payer: int

    def events(self) -> tuple[Event, Event, Event]:
        oid = self.order_id
        name = f"#S{oid}"
        created = {
            "id": oid,
            "name": name,
            "email": _email(self.buyer),
            "created_at": "2026-11-20T09:00:00Z",
            "updated_at": "2026-11-20T09:00:00Z",
            "currency": "eur",
            "total_price": f"{oid % 1000}.50",
            "customer": {
                "id": 90_000 + self.buyer,
                "email": _email(self.buyer),
                "first_name": f"F{self.buyer}",
            },
            "line_items": [
                {"title": "Mug", "sku": f"MUG-{oid}", "quantity": 2, "price": "12.00"},
                {"title": "Tea", "sku": "TEA-1", "quantity": 1, "price": "9.50"},
            ],
        }
        paid = {
            "id": oid,
            "name": name,
            "email": _email(self.payer),
            "updated_at": "2026-11-20T10:00:00Z",
            "financial_status": "paid",
        }
        fulfilled = {
            "id": oid,
            "name": name,
            "email": _email(self.buyer),
            "updated_at": "2026-11-20T11:00:00Z",
            "fulfillment_status": "fulfilled",
            "fulfillments": [
                {"tracking_numbers": [f"TRK{oid}"], "tracking_url": f"https://track.example/{oid}"}
            ],
        }
        return (
            Event(f"order-{oid}-created", created, "orders/create"),
            Event(f"order-{oid}-paid", paid, "orders/updated"),
            Event(f"order-{oid}-fulfilled", fulfilled, "orders/updated"),
        )

    def expected(self) -> dict[str, Any]:
        oid = self.order_id
        return {
            "order_number": f"#S{oid}",
            "customer_email": _email(self.buyer),
            "status": "fulfilled",
            "financial_status": "paid",
            "fulfillment_status": "fulfilled",
            "currency": "EUR",
            "total": f"{oid % 1000}.50",
            "lines": [(f"MUG-{oid}", 2), ("TEA-1", 1)],
            "tracking_numbers": [f"TRK{oid}"],
            "tracking_url": f"https://track.example/{oid}",
            "created_at": _instant("2026-11-20T09:00:00Z"),
            "updated_at": _instant("2026-11-20T11:00:00Z"),
        }


def _instant(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _order_view(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_number": order.get("order_number"),
        "customer_email": order.get("customer_email"),
        "status": order.get("status"),
        "financial_status": order.get("financial_status"),
        "fulfillment_status": order.get("fulfillment_status"),
        "currency": order.get("currency"),
        "total": order.get("total"),
        "lines": [(line.get("sku"), line.get("quantity")) for line in order.get("lines") or []],
        "tracking_numbers": order.get("tracking_numbers") or [],
        "tracking_url": order.get("tracking_url"),
        "created_at": _instant(order.get("created_at")),
        "updated_at": _instant(order.get("updated_at")),
    }


@dataclass
class Workload:
    # Sent in this order, one lane after another round-robin: a customer's lane (its events one after
    # another), or a lane of one order event. An order's three lanes are adjacent, so its events go out
    # within a few tens of milliseconds, through both ingests, to partitions of different mappers.
    lanes: list[list[Event]]
    orders: list[OrderPlan]
    handoffs: set[int]  # customers who asked for a person (one ticket each)
    notes_by_identity: Counter[str]  # order events (attach_order: one note each) per customer

    @property
    def total(self) -> int:
        return sum(len(lane) for lane in self.lanes)


def _workload(rng: random.Random) -> Workload:
    customers = [[_lead(i, s) for s in range(LEADS_PER_CUSTOMER)] for i in range(CUSTOMERS)]
    handoffs = set(rng.sample(range(CUSTOMERS), HANDOFFS))
    for i in handoffs:
        # After the customer's first lead and before its last: the last event sent for a customer is a lead,
        # whose fields the contact must end with.
        customers[i].insert(rng.randint(1, LEADS_PER_CUSTOMER - 1), _handoff(i))
    groups: list[list[list[Event]]] = [[lane] for lane in customers]
    orders, notes = [], Counter[str]()
    for n in range(ORDERS):
        buyer, payer = rng.sample(range(CUSTOMERS), 2)
        plan = OrderPlan(700_000 + n, buyer, payer)
        # Order events set none of the fields a lead sets, so they need no place in the customer's lane;
        # an attach_order for a contact not created yet creates it (upsert by e-mail).
        groups.append([[event] for event in plan.events()])
        notes[_email(buyer)] += 2
        notes[_email(payer)] += 1
        orders.append(plan)
    rng.shuffle(groups)
    return Workload([lane for group in groups for lane in group], orders, handoffs, notes)


@dataclass
class ScaleStack(FaultRun):
    bot: BotReceiver | None = None

    @property
    def bot_received(self) -> list[Notification]:
        assert self.bot is not None
        return self.bot.received

    @property
    def emulator(self) -> Service:
        return self.stack["crm-emulator"]

    def running(self, kind: str) -> list[Service]:
        return [s for s in self.stack.of_kind(kind) if s.alive()]

    def hubspot(self) -> dict[str, Any]:
        response = httpx.get(f"{self.emulator.url}/_emulator/state", params={"system": "hubspot"}, timeout=60)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def lags(self) -> dict[str, int]:
        """Every consumer's lag: the two consumer groups per topic, each order-reader from its gauge."""
        out = {
            f"mapper {t}": n
            for t, n in group_lag(
                self.kafka.bootstrap,
                f"{self.prefix}mapper",
                [self.topic_name(Topic.RAW_EVENTS), self.topic_name(Topic.CRM_RESULTS)],
            ).items()
        }
        out |= {
            f"crm-writer {t}": n
            for t, n in group_lag(
                self.kafka.bootstrap, f"{self.prefix}crm-writer", [self.topic_name(Topic.CRM_COMMANDS)]
            ).items()
        }
        for reader in self.running("order-reader"):
            values = gauge_values(reader.metrics(), "shopbotly_order_reader_consumer_lag_messages")
            out[reader.name] = int(sum(values)) if values else -1  # -1: not reported yet
        return out


@pytest.fixture
def scale_stack(tmp_path: Path) -> Iterator[ScaleStack]:
    kafka = PrivateKafka.create(tmp_path / "kafka-run")
    kafka.start()
    bot: BotReceiver | None = None
    stack: Stack | None = None
    try:
        prefix = "scale."
        secrets = StackSecrets()
        emulator_port, bot_port = free_port(), free_port()
        config = tmp_path / "tenants.yaml"
        config.write_text(
            tenants_yaml(
                secrets, emulator_port=emulator_port, bot_url=f"http://127.0.0.1:{bot_port}{BOT_PATH}"
            )
        )
        env = {
            **stack_env(bootstrap=kafka.bootstrap, prefix=prefix, config=config, partitions=PARTITIONS),
            **secrets.env(),
            "SHOPBOTLY_RETRY_AFTER_S": "1",
            "SHOPBOTLY_EMULATOR_WEBHOOKS__CLIENT_SECRET": secrets.hubspot_app,
        }
        create_topics(env)
        stack = Stack.create(
            tmp_path / "stack", env, names=["crm-emulator"], ports={"crm-emulator": emulator_port}
        )
        for kind, count in REPLICAS.items():
            for n in range(1, count + 1):
                stack.add(f"{kind}-{n}", kind)
        # The CRM's webhooks (ticket changes) go to the second ingest: the first is the one killed.
        stack["crm-emulator"].env["SHOPBOTLY_EMULATOR_WEBHOOKS__URL"] = (
            f"{stack['ingest-2'].url}/v1/webhooks/alpha/hubspot"
        )
        bot = BotReceiver(secrets.bot_notify, bot_port, BOT_PATH)
        bot.start()
        stack.start(timeout=180)
        yield ScaleStack(stack, kafka, prefix, secrets, bot=bot)
    finally:
        if stack is not None:
            stack.stop()
        if bot is not None:
            bot.stop()
        kafka.stop()


class Agent:
    """A helpdesk agent working the tickets in the CRM while the stream runs: on each ticket a reply, a
    stage change (waiting on us) and a second reply, each a CRM webhook to ShopBotly and a notification."""

    def __init__(self, ss: ScaleStack) -> None:
        self.ss = ss
        self.done: dict[str, str] = {}  # ticket id -> customer e-mail
        self.changes = 0

    @staticmethod
    def replies(ticket_id: str) -> tuple[str, str]:
        return f"first answer on {ticket_id}", f"second answer on {ticket_id}"

    def work(self) -> int:
        """Works every ticket not worked yet; returns how many."""
        state = self.ss.hubspot()
        worked = 0
        for email, record in state["records"]["hubspot"].items():
            for ticket in record.get("tickets") or []:
                ticket_id = str(ticket["id"])
                if ticket_id in self.done:
                    continue
                first, second = self.replies(ticket_id)
                url = f"{self.ss.emulator.url}/_emulator/tickets/{ticket_id}"
                for change in (
                    {"reply": {"text": first}},
                    {"hs_pipeline_stage": "3"},
                    {"reply": {"text": second}},
                ):
                    httpx.post(url, json=change, timeout=30).raise_for_status()
                    self.changes += 1
                self.done[ticket_id] = email
                worked += 1
        return worked


def _rolling_peak(times: list[float], window: float) -> tuple[int, float | None]:
    """The most requests that arrived within any `window` seconds, and when that window started."""
    times = sorted(times)
    best, start, lo = 0, None, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        if hi - lo + 1 > best:
            best, start = hi - lo + 1, times[lo]
    return best, start


@pytest.mark.timeout(900)
def test_several_replicas_of_every_service_lose_and_double_nothing_through_scaling_kills_and_a_broker_restart(
    scale_stack: ScaleStack, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ss = scale_stack
    stack = ss.stack
    rng = random.Random(20)
    work = _workload(rng)
    lanes = work.lanes
    senders = [
        Sender(
            f"{ingest.url}/v1/webhooks/alpha/bot",
            ss.secrets.bot_source,
            lanes[n :: REPLICAS["ingest"]],
            rate=RATE_PER_S / REPLICAS["ingest"],
            shopify_url=f"{ingest.url}/v1/webhooks/alpha/shop",
            shopify_secret=ss.secrets.shopify,
        )
        for n, ingest in enumerate(stack.of_kind("ingest"))
    ]
    assert sum(s.total for s in senders) == work.total
    agent = Agent(ss)

    ss.note(f"stream starts: {work.total} events, {CUSTOMERS} customers")
    for sender in senders:
        sender.start()

    wait_progress(senders, 0.10, ss)
    stack.add("mapper-4", "mapper")
    stack.restart("mapper-4")
    ss.note("mapper scaled up to 4")

    wait_progress(senders, 0.20, ss)
    stack.add("crm-writer-4", "crm-writer")
    stack.restart("crm-writer-4")
    ss.note("crm-writer scaled up to 4")

    wait_progress(senders, 0.30, ss)
    killed = ("mapper-1", "crm-writer-1", "ingest-1", "order-reader-1")
    for name in killed:
        stack[name].kill9()
        ss.note(f"{name} killed (SIGKILL)")
    for name in killed:
        stack[name].start()
    for name in killed:
        stack[name].wait_ready(180)
        ss.note(f"{name} ready again")

    wait_progress(senders, 0.45, ss)
    ss.note(f"agent worked {agent.work()} ticket(s)")

    wait_progress(senders, 0.55, ss)
    ss.kafka.stop(hold_ports=True)
    ss.note("broker stopped")
    time.sleep(BROKER_DOWN_S)
    ss.kafka.start()
    ss.note("broker started")

    wait_progress(senders, 0.70, ss)
    for name in ("mapper-4", "crm-writer-4"):
        code = stack[name].stop(timeout=60)
        ss.note(f"{name} stopped (SIGTERM): exit {code}")
        assert code == 0, f"{name} exited {code} on SIGTERM:\n{stack[name].tail()}"

    for sender in senders:
        poll(
            sender.done.is_set,
            timeout=300,
            what="the senders to finish",
            context=lambda: f"answers {[dict(s.answers) for s in senders]}\n{ss.logs()}",
        )
    ss.note("stream done")
    for sender in senders:
        assert sender.error is None, repr(sender.error)
        assert sender.refused == [], sender.refused[:5]

    # Every handoff's ticket reaches the CRM; the agent works the ones it has not worked yet.
    def all_tickets() -> bool:
        agent.work()
        return len(agent.done) >= HANDOFFS

    poll(all_tickets, timeout=240, what=f"{HANDOFFS} tickets in the CRM", interval=2, context=ss.logs)
    ss.note(f"all {len(agent.done)} tickets worked ({agent.changes} changes)")

    # Settled: every consumer at lag 0, the CRM's webhooks delivered, and nothing moves any more.
    last: dict[str, Any] = {}

    def settled() -> bool:
        flushed = httpx.post(
            f"{ss.emulator.url}/_emulator/webhooks/flush", params={"timeout_s": 5}, timeout=30
        )
        now = {
            "lags": ss.lags(),
            "flushed": flushed.json().get("drained"),
            "crm_requests": ss.hubspot()["counters"]["requests"],
            "bot": len(ss.bot_received),
        }
        quiet = now == last and all(v == 0 for v in now["lags"].values()) and now["flushed"]
        last.clear()
        last.update(now)
        return bool(quiet)

    settled_in_time = True
    try:
        poll(
            settled, timeout=240, what="every consumer at lag 0, nothing moving", interval=3, context=ss.logs
        )
        ss.note("settled")
    except AssertionError:
        settled_in_time = False
        ss.note(f"not settled: {last}")

    report, failures = _check(ss, work, agent)
    report["settled"] = settled_in_time
    report["lags"] = last.get("lags")
    if not settled_in_time:
        failures.append(f"lag: not 0 (or still moving) after 240 s: {last}")
    report |= {
        "events": work.total,
        "customers": CUSTOMERS,
        "orders": len(work.orders),
        "handoffs": HANDOFFS,
        "ticket_changes": agent.changes,
        "answers": [dict(s.answers) for s in senders],
        "runtime_s": round(time.monotonic() - ss.started, 1),
        "timeline": ss.timeline,
        "failures": failures,
    }
    out = tmp_path_factory.getbasetemp() / "scale_report.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    with capsys.disabled():
        figures = {k: v for k, v in report.items() if k != "timeline"}
        print(f"\nscale run ({out}):\n{json.dumps(figures, default=str)}")
    assert failures == [], "\n".join(failures)


def _check(ss: ScaleStack, work: Workload, agent: Agent) -> tuple[dict[str, Any], list[str]]:
    """Every check of the module docstring: (figures, failures in words)."""
    failures: list[str] = []
    report: dict[str, Any] = {}
    state = ss.hubspot()
    records: dict[str, Any] = state["records"]["hubspot"]

    # Identities: exactly the customers sent.
    sent = {_email(i) for i in range(CUSTOMERS)}
    missing, extra = sorted(sent - set(records)), sorted(set(records) - sent)
    report["identities"] = {
        "sent": len(sent),
        "in_crm": len(records),
        "missing": len(missing),
        "extra": len(extra),
    }
    if missing or extra:
        failures.append(
            f"identities: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra ({extra[:3]})"
        )

    # Each customer's final state: its last event's fields; tags the union of its events'.
    wrong_state, wrong_tags, doubled, wrong_notes, wrong_tickets = [], [], [], [], []
    rounds = {f"round-{s % 4}" for s in range(LEADS_PER_CUSTOMER)}
    for i in range(CUSTOMERS):
        record = records.get(_email(i))
        if record is None:
            continue
        props = record.get("properties", {})
        diff = {k: (props.get(k), v) for k, v in _expected_contact(i).items() if props.get(k) != v}
        if diff:
            wrong_state.append(f"{_email(i)} (actual, expected): {diff}")
        tags = {"shopbotly-lead", *rounds} | ({"handoff-requested"} if i in work.handoffs else set())
        if set(record.get("tags") or []) != tags:
            wrong_tags.append(f"{_email(i)}: {record.get('tags')}")
        if record.get("creates") != 1 or len(record.get("record_ids") or []) != 1:
            doubled.append(
                f"{_email(i)}: creates {record.get('creates')}, records {record.get('record_ids')}"
            )
        notes = record.get("notes") or []
        if len(notes) != work.notes_by_identity[_email(i)]:
            wrong_notes.append(
                f"{_email(i)}: {len(notes)} notes, {work.notes_by_identity[_email(i)]} expected"
            )
        if len(record.get("tickets") or []) != (1 if i in work.handoffs else 0):
            wrong_tickets.append(f"{_email(i)}: {len(record.get('tickets') or [])} tickets")
    report["contacts"] = {
        "wrong_state": len(wrong_state),
        "wrong_tags": len(wrong_tags),
        "duplicated": len(doubled),
        "wrong_note_count": len(wrong_notes),
        "wrong_ticket_count": len(wrong_tickets),
    }
    for what, found in (
        ("final state != last event", wrong_state),
        ("tags != union of events", wrong_tags),
        ("duplicate contacts", doubled),
        ("notes != order events", wrong_notes),
        ("tickets != handoffs", wrong_tickets),
    ):
        if found:
            failures.append(f"contacts, {what}: {len(found)} of {CUSTOMERS}, e.g. {found[:3]}")
    by_type = state["counters"]["records_by_type"].get("hubspot", {})
    expected_notes = sum(work.notes_by_identity.values())
    report["records_by_type"] = by_type
    if by_type.get("notes", {}).get("creates") != expected_notes:
        failures.append(
            f"notes: {by_type.get('notes')} created, {expected_notes} expected (one per order event)"
        )
    if by_type.get("tickets", {}).get("creates") != HANDOFFS:
        failures.append(f"tickets: {by_type.get('tickets')} created, {HANDOFFS} expected (one per handoff)")

    # Bot notifications: one delivery per notify_bot command, none twice, every command delivered.
    commands = {
        json.loads(m.value)["command_id"]
        for m in read_topic(ss.kafka.bootstrap, ss.topic_name(Topic.CRM_COMMANDS), timeout=120)
        if m.value and json.loads(m.value).get("op") == "notify_bot"
    }
    received = Counter(n.webhook_id for n in ss.bot_received)
    twice = {k: v for k, v in received.items() if v > 1}
    undelivered = commands - set(received)
    unknown = set(received) - commands
    replies = Counter(
        (str(n.data.get("ticket_id")), n.data.get("body"))
        for n in ss.bot_received
        if n.data.get("change") == "reply"
    )
    missing_replies = [(t, text) for t in agent.done for text in Agent.replies(t) if replies[(t, text)] == 0]
    report["bot"] = {
        "notify_bot_commands": len(commands),
        "delivered": len(received),
        "delivered_twice": len(twice),
        "undelivered": len(undelivered),
        "unknown": len(unknown),
        "ticket_replies_missing": len(missing_replies),
        "rejected": len(ss.bot.rejected) if ss.bot else 0,
    }
    if twice:
        # When, on the timeline, and what: a repeat right after a SIGKILL or a rebalance is the at-least-once
        # window (delivered, ledger entry not yet acknowledged).
        repeats = [
            (n.webhook_id, ss.since_start(n.received_at), n.data.get("change") or n.type)
            for n in ss.bot_received
            if n.webhook_id in twice
        ]
        report["bot"]["repeats"] = repeats
        failures.append(
            f"bot notifications: {len(twice)} delivered more than once (id, at s, what): {repeats}"
        )
    if undelivered or unknown:
        failures.append(
            f"bot notifications: {len(undelivered)} of {len(commands)} notify_bot commands undelivered, "
            f"{len(unknown)} deliveries of no command"
        )
    if missing_replies:
        failures.append(
            f"bot notifications: {len(missing_replies)} of {2 * len(agent.done)} replies never reached "
            f"the bot, e.g. {missing_replies[:3]}"
        )

    # Orders: the merge of all their events, in every order-reader.
    key = {"Authorization": f"Bearer {ss.secrets.api_keys['alpha']}"}
    for reader in ss.running("order-reader"):
        lost: Counter[str] = Counter()
        wrong_orders: list[str] = []
        with httpx.Client(base_url=reader.url, headers=key, timeout=30) as client:
            for plan in work.orders:
                response = client.get(f"/api/v1/orders/{plan.order_id}")
                if response.status_code != 200:
                    wrong_orders.append(f"{plan.order_id}: {response.status_code}")
                    lost["(the whole order)"] += 1
                    continue
                got, expected = _order_view(response.json()), plan.expected()
                diff = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
                lost.update(diff.keys())
                if diff:
                    wrong_orders.append(f"{plan.order_id} (actual, expected): {diff}")
        report[f"orders {reader.name}"] = {"wrong": len(wrong_orders), "fields": dict(lost)}
        if wrong_orders:
            failures.append(
                f"order merge ({reader.name}): {len(wrong_orders)} of {len(work.orders)} orders differ from "
                f"the merge of their events (fields: {dict(lost)}), e.g. {wrong_orders[:2]}"
            )

        # Tickets: the last change of each, with its customer.
        wrong_tickets_seen: list[str] = []
        with httpx.Client(base_url=reader.url, headers=key, timeout=30) as client:
            for ticket_id, email in agent.done.items():
                response = client.get(f"/api/v1/tickets/{ticket_id}")
                if response.status_code != 200:
                    wrong_tickets_seen.append(f"{ticket_id}: {response.status_code}")
                    continue
                ticket = response.json()
                expected_ticket = {
                    "last_reply": Agent.replies(ticket_id)[1],
                    "status": "waiting_on_us",
                    "customer_email": email,
                }
                diff = {k: (ticket.get(k), v) for k, v in expected_ticket.items() if ticket.get(k) != v}
                if diff:
                    wrong_tickets_seen.append(f"{ticket_id} (actual, expected): {diff}")
        report[f"tickets {reader.name}"] = {"wrong": len(wrong_tickets_seen)}
        if wrong_tickets_seen:
            failures.append(
                f"ticket state ({reader.name}): {len(wrong_tickets_seen)} of {len(agent.done)} tickets "
                f"differ from their last change, e.g. {wrong_tickets_seen[:2]}"
            )

    # Pressure on the CRM: every request the emulator saw, refused ones included.
    log = httpx.get(f"{ss.emulator.url}/_emulator/requests", params={"system": "hubspot"}, timeout=60).json()
    times = [at for at, _ in log["requests"]]
    statuses = Counter(str(status) for _, status in log["requests"])
    peak, peak_at = _rolling_peak(times, WINDOW_S)
    share_429 = statuses["429"] / len(times) if times else 0.0
    report["crm_requests"] = {
        "total": len(times),
        "by_status": dict(statuses),
        "peak_per_10s": peak,
        "peak_window_start_s": round(peak_at - times[0], 1) if peak_at is not None and times else None,
        "share_429": round(share_429, 4),
        "by_endpoint": state["counters"]["by_endpoint"],
    }
    if len(times) >= (log["size"] or 0):
        failures.append(f"request log full ({len(times)}): the rolling count would miss requests")
    if peak > LIMIT:
        failures.append(f"rate limit: {peak} requests in one rolling 10 s, the connection's limit is {LIMIT}")
    if share_429 > 0.01:
        failures.append(
            f"rate limit: {statuses['429']} of {len(times)} requests were 429 ({share_429:.2%} > 1 %)"
        )
    return report, failures
