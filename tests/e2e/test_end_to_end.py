"""The product as a user meets it: signed webhooks and the lead API in, CRM records, order and ticket lookups
and bot notifications out, through the real services, the real broker and the CRM emulator."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from shopbotly.cli.demo_cmd import sign_standard_webhook
from shopbotly.common.topics import Topic
from tests.e2e.e2e_stack import E2EStack, iso_now, unique
from tests.stack import gauge_values, histogram, json_of, poll, run_cli

pytestmark = pytest.mark.e2e

# Filled by the tests, written to <pytest tmp>/e2e_latency.json by the last one.
LATENCY: dict[str, Any] = {}


def _customer(email: str, name: str) -> dict[str, Any]:
    return {"email": email, "name": name, "phone": "+1 (415) 555-0134"}


def _order(order_id: int, email: str, **changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": order_id,
        "name": f"#{order_id % 100000}",
        "order_number": order_id % 100000,
        "email": email,
        "created_at": "2026-11-20T09:15:00-05:00",
        "updated_at": "2026-11-20T09:15:00-05:00",
        "currency": "usd",
        "total_price": "1444.00",
        "financial_status": "paid",
        "fulfillment_status": None,
        "cancelled_at": None,
        "customer": {"id": 7001, "email": email, "first_name": "Lena", "last_name": "Park"},
        "billing_address": {"company": "Park Studio", "phone": "+1 415-555-0199"},
        "line_items": [
            {"title": "Aeron Chair", "sku": "AER-GR-B", "quantity": 1, "price": "1395.00"},
            {"title": "Desk lamp", "sku": "LMP-01", "quantity": 1, "price": "49.00"},
        ],
        "fulfillments": [],
    }
    order.update(changes)
    return order


def _emulator_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _handoff(e2e: E2EStack, email: str, reason: str) -> str:
    """A chat handoff for `email`; returns the id of the ticket it opened in the CRM."""
    conversation = unique("conv")
    event = {
        "type": "handoff.requested",
        "timestamp": iso_now(),
        "data": {
            "conversation_id": conversation,
            "customer": _customer(email, "Tomás Ruiz"),
            "reason": reason,
            "priority": "urgent",
            "transcript": [
                {"role": "customer", "text": "My chair arrived with a broken armrest."},
                {"role": "bot", "text": "I'm sorry. Let me get a colleague."},
            ],
        },
    }
    response, _ = e2e.send_bot(event)
    assert response.status_code == 202, response.text
    contact = e2e.wait_contact(email, lambda c: bool(c.get("tickets")), f"a ticket for {email}")
    ticket = contact["tickets"][0]
    assert ticket["properties"]["subject"] == f"Chat handoff: {reason}"
    assert ticket["properties"]["hs_ticket_priority"] == "HIGH"  # urgent maps to HIGH
    assert conversation in ticket["properties"]["content"]
    return str(ticket["id"])


def test_a_signed_bot_webhook_becomes_a_crm_contact_and_a_forged_one_does_not(e2e: E2EStack) -> None:
    email = f"{unique('maya')}@example.com"
    conversation = unique("conv")
    event: dict[str, Any] = {
        "type": "lead.qualified",
        "timestamp": iso_now(),
        "data": {
            "conversation_id": conversation,
            "customer": _customer(email.upper(), "Maya  Lindqvist"),
            "intent_score": 0.87,
            "tags": ["Bulk-Order", " Office "],
        },
    }
    forged_email = f"{unique('forged')}@example.com"
    forged = {**event, "data": {**event["data"], "customer": _customer(forged_email, "Mallory")}}
    response, _ = e2e.send_bot(forged, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    assert response.status_code == 401

    response, event_id = e2e.send_bot(event)
    assert response.status_code == 202, response.text
    assert json_of(response)["event_id"] == event_id
    contact = e2e.wait_contact(
        email, lambda c: "shopbotly-lead" in (c.get("tags") or []), f"lead {email} in the CRM with its tags"
    )
    assert e2e.dead_letters(email) == []
    props = contact["properties"]
    assert {k: props.get(k) for k in ("email", "firstname", "lastname", "phone")} == {
        "email": email,
        "firstname": "Maya",
        "lastname": "Lindqvist",
        "phone": "+14155550134",
    }
    assert props["lifecyclestage"] == "lead"
    assert props["shopbotly_conversation_id"] == conversation
    assert float(props["shopbotly_intent_score"]) == 0.87
    assert sorted(contact["tags"]) == ["bulk-order", "office", "shopbotly-lead"]
    assert contact["creates"] == 1

    # The same delivery again (a platform retry) is answered as a duplicate and changes nothing.
    body = json.dumps(event).encode()
    headers = sign_standard_webhook(e2e.secrets.bot_source, body, msg_id=event_id)
    again = e2e.ingest.post("/v1/webhooks/alpha/bot", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert e2e.contact(forged_email) is None


def test_a_shopify_order_is_answered_by_the_order_lookup_and_updates_overwrite(e2e: E2EStack) -> None:
    email = f"{unique('lena')}@example.com"
    order_id = int(time.time() * 1000) % 10**12
    response, _ = e2e.send_shopify("orders/create", _order(order_id, email))
    assert response.status_code == 202, response.text

    order = e2e.wait_lookup(f"/api/v1/orders/{order_id}", lambda o: True, f"order {order_id} in the lookup")
    assert order["tenant"] == "alpha"
    assert order["customer_email"] == email
    assert order["status"] == "paid"
    assert order["total"] == "1444.00" and order["currency"] == "USD"
    assert [(line["sku"], line["quantity"]) for line in order["lines"]] == [("AER-GR-B", 1), ("LMP-01", 1)]

    fulfilled = _order(
        order_id,
        email,
        updated_at="2026-11-21T16:40:00-05:00",
        fulfillment_status="fulfilled",
        fulfillments=[
            {"tracking_numbers": ["1Z999AA10123456784"], "tracking_url": "https://ups.example/1Z999"}
        ],
    )
    response, _ = e2e.send_shopify("orders/updated", fulfilled)
    assert response.status_code == 202, response.text
    order = e2e.wait_lookup(
        f"/api/v1/orders/{order_id}", lambda o: o["status"] == "fulfilled", "orders/updated in the lookup"
    )
    assert order["fulfillment_status"] == "fulfilled"
    assert order["tracking_numbers"] == ["1Z999AA10123456784"]
    assert len(order["lines"]) == 2

    # Tenant isolation and auth: another tenant's key does not see the order; no key is refused.
    assert e2e.lookup(f"/api/v1/orders/{order_id}", tenant="beta").status_code == 404
    assert e2e.lookup(f"/api/v1/orders/{order_id}", tenant=None).status_code == 401
    history = e2e.lookup(f"/api/v1/customers/{email}/orders")
    assert history.status_code == 200
    assert str(order_id) in history.text

    # The buyer became a contact and the order is on it.
    contact = e2e.wait_contact(
        email, lambda c: any(str(order_id) in json.dumps(n) for n in c.get("notes") or []), "the order note"
    )
    assert e2e.dead_letters(email) == []
    assert contact["properties"]["firstname"] == "Lena"
    assert contact["properties"]["company"] == "Park Studio"


def test_a_shopify_customer_becomes_a_contact_with_its_tags(e2e: E2EStack) -> None:
    email = f"{unique('kai')}@example.com"
    customer = {
        "id": 9_100_000 + int(time.time()) % 100_000,
        "email": email,
        "first_name": "Kai",
        "last_name": "Berg",
        "phone": "+49 30 1234567",
        "tags": "VIP, Wholesale",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
        "default_address": {"company": "Berg GmbH"},
    }
    response, _ = e2e.send_shopify("customers/create", customer)
    assert response.status_code == 202, response.text
    contact = e2e.wait_contact(email, lambda c: "vip" in (c.get("tags") or []), f"Shopify customer {email}")
    assert e2e.dead_letters(email) == []
    props = contact["properties"]
    assert (props["firstname"], props["lastname"], props["company"]) == ("Kai", "Berg", "Berg GmbH")
    assert sorted(contact["tags"]) == ["vip", "wholesale"]
    assert contact["creates"] == 1


def test_a_lead_through_the_lead_api_reaches_the_crm(e2e: E2EStack) -> None:
    email = f"{unique('sam')}@example.com"
    lead = {
        "email": email,
        "first_name": "Sam",
        "last_name": "Okafor",
        "phone": "+49 30 1234567",
        "tags": ["newsletter", "b2b"],
        # Two the portal has (created below) and one it lacks: dropped, never costing the others.
        "custom_fields": {"shopbotly_plan": "pro", "ShopBotly_Seats": 5, "favourite_colour": "teal"},
    }
    # custom_fields name the portal's own properties: in a fresh portal they exist once someone created them.
    for name in ("shopbotly_plan", "shopbotly_seats"):
        created = e2e.emulator.post(
            "/crm/v3/properties/contacts",
            headers={"Authorization": f"Bearer {e2e.secrets.hubspot_token}"},
            json={
                "name": name,
                "label": name,
                "type": "string",
                "fieldType": "text",
                "groupName": "contactinformation",
            },
        )
        assert created.status_code in (201, 409), created.text  # 409: the module's stack had it already
    assert e2e.ingest.post("/api/v1/leads", json=lead).status_code == 401
    assert (
        e2e.ingest.post("/api/v1/leads", json={"first_name": "x"}, headers=e2e.api_key()).status_code == 422
    )
    keyed = {**e2e.api_key(), "Idempotency-Key": f"form-{email}"}
    response = e2e.ingest.post("/api/v1/leads", json=lead, headers=keyed)
    assert response.status_code == 202, response.text
    # The client's retry gets the same answer; the key with another body is refused (records on the topic).
    again = e2e.ingest.post("/api/v1/leads", json=lead, headers=keyed)
    assert (again.status_code, again.json()) == (202, response.json())
    other = e2e.ingest.post("/api/v1/leads", json={**lead, "first_name": "Samuel"}, headers=keyed)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_conflict")

    contact = e2e.wait_contact(
        email, lambda c: "b2b" in (c.get("tags") or []), f"API lead {email} in the CRM"
    )
    assert e2e.dead_letters(email) == []
    props = contact["properties"]
    assert (props["firstname"], props["lastname"], props["phone"]) == ("Sam", "Okafor", "+49301234567")
    assert props["lifecyclestage"] == "lead"
    assert (props["shopbotly_plan"], props["shopbotly_seats"]) == ("pro", "5")
    assert "favourite_colour" not in props
    assert sorted(contact["tags"]) == ["b2b", "newsletter"]
    assert contact["creates"] == 1


def test_crm_ticket_changes_reach_the_bot_signed_and_the_ticket_lookup(e2e: E2EStack) -> None:
    email = f"{unique('tomas')}@example.com"
    ticket_id = _handoff(e2e, email, "damaged delivery")
    ticket = e2e.wait_lookup(
        f"/api/v1/tickets/{ticket_id}",
        lambda t: t.get("customer_email") == email,
        f"ticket {ticket_id} lookup",
    )
    assert ticket["is_open"] is True

    def about(change: str) -> list[Any]:
        return e2e.bot.notifications(
            lambda n: n.data.get("ticket_id") == ticket_id and n.data.get("change") == change
        )

    reply = "A replacement armrest ships today."
    sent_at = time.time()
    e2e.emulator.post(
        f"/_emulator/tickets/{ticket_id}", json={"reply": {"text": reply, "author": "Alex"}}
    ).raise_for_status()
    (replied,) = e2e.stack.poll(lambda: about("reply"), timeout=30, what="reply notification at the bot")
    reply_latency = replied.received_at - sent_at
    assert replied.type == "ticket.updated"
    assert replied.data["body"] == reply
    assert replied.data["customer_email"] == email
    assert replied.data["identity"] == email

    sent_at = time.time()
    e2e.emulator.post(f"/_emulator/tickets/{ticket_id}", json={"hs_pipeline_stage": "4"}).raise_for_status()
    (closed,) = e2e.stack.poll(lambda: about("status"), timeout=30, what="status notification at the bot")
    status_latency = closed.received_at - sent_at
    assert (closed.data["status"], closed.data["is_open"]) == ("closed", False)

    ticket = e2e.wait_lookup(
        f"/api/v1/tickets/{ticket_id}", lambda t: t["status"] == "closed", "closed ticket"
    )
    assert ticket["is_open"] is False and ticket["last_reply"] == reply
    assert e2e.lookup(f"/api/v1/tickets/{ticket_id}", tenant="beta").status_code == 404
    listed = e2e.lookup(f"/api/v1/customers/{email}/tickets")
    assert listed.status_code == 200 and ticket_id in listed.text

    # Every notification the bot got passed standardwebhooks verification, and its webhook-id is the id of
    # a notify_bot command the mapper produced for this ticket: one delivery per command.
    assert e2e.bot.rejected == []
    commands = e2e.commands(
        lambda c: c.get("op") == "notify_bot" and c["fields"].get("ticket_id") == ticket_id
    )
    delivered = [n.webhook_id for n in e2e.bot.notifications(lambda n: n.data.get("ticket_id") == ticket_id)]
    assert sorted(delivered) == sorted({c["command_id"] for c in commands})
    LATENCY["crm_change_to_bot_notified_s"] = {
        "reply": round(reply_latency, 4),
        "status": round(status_latency, 4),
    }


def test_bot_down_notifications_are_held_and_a_refused_one_is_redriven(e2e: E2EStack) -> None:
    """The bot is down (connection refused): its notification is held back, not dead-lettered, and delivered
    once the bot is back. The bot refusing one (400) dead-letters it; a redrive delivers it."""
    email = f"{unique('ines')}@example.com"
    ticket_id = _handoff(e2e, email, "wrong colour")
    e2e.wait_lookup(
        f"/api/v1/tickets/{ticket_id}", lambda t: t.get("customer_email") == email, "ticket lookup"
    )

    def mine(command: dict[str, Any]) -> bool:
        return command.get("op") == "notify_bot" and command.get("fields", {}).get("ticket_id") == ticket_id

    def reply(text: str) -> str:
        e2e.emulator.post(
            f"/_emulator/tickets/{ticket_id}", json={"reply": {"text": text, "author": "Kim"}}
        ).raise_for_status()
        return text

    def delivered(text: str) -> list[Any] | None:
        return e2e.bot.notifications(
            lambda n: n.data.get("ticket_id") == ticket_id and n.data["body"] == text
        )

    def held() -> float:
        values = gauge_values(e2e.stack["crm-writer"].metrics(), "shopbotly_crm_writer_held_commands")
        return sum(values)

    e2e.bot.stop()  # the bot is down: connection refused
    try:
        first = reply("We will swap it for graphite.")
        e2e.stack.poll(lambda: held() >= 1, timeout=60, what="the notification held back for the bot")
        time.sleep(3.0)  # several probe periods
        assert not [m for m in e2e.topic(Topic.CRM_COMMANDS_DLQ) if mine(json.loads(m.value or b"{}"))]
    finally:
        e2e.bot.start()
    e2e.stack.poll(lambda: delivered(first), timeout=30, what="the held notification delivered")

    e2e.bot.fail_with = 400  # the bot refuses it: a permanent answer, dead-lettered at once
    try:
        second = reply("It ships tomorrow.")

        def dead_letters() -> list[Any] | None:
            found = [
                m
                for m in e2e.topic(Topic.CRM_COMMANDS_DLQ)
                if mine(json.loads(m.value or b"{}")) and json.loads(m.value or b"{}").get("body") == second
            ]
            return found or None

        (dead,) = e2e.stack.poll(
            dead_letters, timeout=60, what="the refused notification in crm-commands.dlq"
        )
        assert dead.headers["error.class"] == "permanent"
        assert dead.headers["origin.service"] == "crm-writer"
        assert dead.headers["origin.topic"] == f"{e2e.prefix}{Topic.CRM_COMMANDS.value}"
        command_id = json.loads(dead.value or b"{}")["command_id"]
        place = f"{dead.partition}:{dead.offset}"
    finally:
        e2e.bot.fail_with = None

    redrive = run_cli("dlq", "redrive", "--topic", "crm-commands.dlq.v1", "--offsets", place, env=e2e.env)
    assert "redriven 1," in redrive.stdout, redrive.stdout
    (again,) = e2e.stack.poll(
        lambda: e2e.bot.notifications(lambda n: n.webhook_id == command_id),
        timeout=30,
        what=f"redriven notification {command_id} at the bot",
    )
    assert again.data["body"] == second and again.data["ticket_id"] == ticket_id

    # Nothing lost: every notify_bot command for this ticket reached the bot, once.
    expected = {c["command_id"] for c in e2e.commands(mine)}
    got = [n.webhook_id for n in e2e.bot.notifications(lambda n: n.data.get("ticket_id") == ticket_id)]
    assert expected == set(got) and len(got) == len(set(got)) == 2
    assert e2e.bot.rejected == []


def test_ticket_changes_after_a_crm_restart_still_reach_the_bot(e2e: E2EStack) -> None:
    """The CRM (the emulator, HubSpot's stand-in) restarts with its records kept, as after `make down` and
    `make up`: its next ticket change must still reach the bot."""
    email = f"{unique('noor')}@example.com"
    ticket_id = _handoff(e2e, email, "late delivery")
    e2e.wait_lookup(
        f"/api/v1/tickets/{ticket_id}", lambda t: t.get("customer_email") == email, "ticket lookup"
    )
    e2e.stack["crm-emulator"].stop()
    e2e.stack.restart("crm-emulator")

    reply = "Your parcel left the warehouse this morning."
    e2e.emulator.post(
        f"/_emulator/tickets/{ticket_id}", json={"reply": {"text": reply, "author": "Sam"}}
    ).raise_for_status()

    def ingest_hubspot_answers() -> str:
        lines = e2e.stack["ingest"].metrics().splitlines()
        counted = [
            line for line in lines if line.startswith("shopbotly_ingest_requests_total") and "hubspot" in line
        ]
        return "ingest's answers to the CRM's webhooks:\n" + "\n".join(counted) + "\n\n" + e2e.stack.logs()

    (note,) = poll(
        lambda: e2e.bot.notifications(lambda n: n.data.get("ticket_id") == ticket_id),
        timeout=30,
        what=f"the reply on ticket {ticket_id} (after the CRM restarted) at the bot",
        context=ingest_hubspot_answers,
    )
    assert note.data["body"] == reply


def test_end_to_end_latency_is_recorded(
    e2e: E2EStack, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ingest accept → CRM applied, from crm-writer's histogram and timestamps: recorded, not asserted."""
    accepted: dict[str, float] = {}
    for i in range(20):
        email = f"{unique(f'lat{i}')}@example.com"
        response = e2e.ingest.post(
            "/api/v1/leads", json={"email": email, "first_name": "L"}, headers=e2e.api_key()
        )
        assert response.status_code == 202, response.text
        accepted[email] = time.time()
        time.sleep(0.05)

    def all_applied() -> dict[str, Any] | None:
        records = e2e.hubspot_state()["records"]["hubspot"]
        return records if all(email in records for email in accepted) else None

    records = e2e.stack.poll(all_applied, timeout=60, what="the 20 latency leads in the CRM")
    by_timestamps = sorted(_emulator_time(records[e]["created_at"]) - t for e, t in accepted.items())
    metrics = e2e.stack["crm-writer"].metrics()
    name = "shopbotly_crm_writer_e2e_latency_seconds"
    LATENCY.update(
        {
            "ingest_accept_to_crm_applied_histogram": histogram(
                metrics, name, {"connection": "alpha:hubspot"}
            ),
            "ingest_accept_to_bot_notified_histogram": histogram(metrics, name, {"connection": "alpha:bot"}),
            "lead_api_202_to_emulator_created_at_s": {
                "n": len(by_timestamps),
                "min": round(by_timestamps[0], 4),
                "p50": round(by_timestamps[len(by_timestamps) // 2], 4),
                "max": round(by_timestamps[-1], 4),
            },
        }
    )
    out = tmp_path_factory.getbasetemp() / "e2e_latency.json"
    out.write_text(json.dumps(LATENCY, indent=2))
    with capsys.disabled():
        print(f"\nend-to-end latency ({out}):\n{json.dumps(LATENCY, indent=2)}")
