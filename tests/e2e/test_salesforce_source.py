"""Salesforce → bot: an agent works a Case in the emulator's Salesforce org; its outbound messages (SOAP,
verified by org id and URL token, acknowledged with Ack) reach the bot as signed notifications, and the
ticket lookup shows the Case."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.e2e_stack import E2EStack, unique

pytestmark = pytest.mark.e2e


def _seed(e2e: E2EStack, sobject: str, fields: dict[str, str]) -> str:
    response = e2e.emulator.post(f"/_emulator/salesforce/{sobject}", json={"fields": fields})
    response.raise_for_status()
    record_id: str = response.json()["id"]
    return record_id


def test_a_case_reply_in_salesforce_reaches_the_bot_signed_and_the_ticket_lookup(e2e: E2EStack) -> None:
    email = f"{unique('ines')}@example.com"
    contact_id = _seed(e2e, "Contact", {"LastName": "Ines", "Email": email})
    case_id = _seed(
        e2e,
        "Case",
        {"Subject": "Armrest broken", "Status": "New", "Priority": "High", "ContactId": contact_id},
    )

    def work(change: dict[str, Any]) -> None:
        e2e.emulator.post(f"/_emulator/salesforce/cases/{case_id}", json=change).raise_for_status()

    def about(change: str) -> list[Any]:
        return e2e.bot.notifications(
            lambda n: n.data.get("ticket_id") == case_id and n.data.get("change") == change
        )

    # The agent takes the Case: its outbound message sets the ticket's state and tells the bot.
    work({"fields": {"Status": "Working"}})
    (taken,) = e2e.stack.poll(lambda: about("status"), timeout=30, what="status notification at the bot")
    assert (taken.data["status"], taken.data["is_open"]) == ("waiting_on_us", True)
    assert taken.data["customer_email"] == email and taken.data["identity"] == email
    ticket = e2e.wait_lookup(f"/api/v1/tickets/{case_id}", lambda t: t["status"] == "waiting_on_us", "ticket")
    assert ticket["customer_email"] == email and ticket["subject"] == "Armrest broken"

    # The agent replies with a public comment: the bot gets the text, the lookup shows it.
    reply = "A replacement armrest ships today."
    work({"reply": {"text": reply, "author": "Alex"}})
    (replied,) = e2e.stack.poll(lambda: about("reply"), timeout=30, what="reply notification at the bot")
    assert replied.type == "ticket.updated" and replied.data["body"] == reply
    assert replied.data["customer_email"] == email
    ticket = e2e.wait_lookup(f"/api/v1/tickets/{case_id}", lambda t: t.get("last_reply") == reply, "reply")
    assert ticket["is_open"] is True

    work({"fields": {"Status": "Closed"}})
    e2e.stack.poll(
        lambda: [n for n in about("status") if n.data["status"] == "closed"],
        timeout=30,
        what="closed at the bot",
    )
    ticket = e2e.wait_lookup(f"/api/v1/tickets/{case_id}", lambda t: t["status"] == "closed", "closed ticket")
    assert ticket["is_open"] is False and ticket["last_reply"] == reply
    assert e2e.lookup(f"/api/v1/tickets/{case_id}", tenant="beta").status_code == 404

    # Every outbound message was acknowledged (none dropped); every notification passed the bot's
    # standardwebhooks verification, one per notify_bot command the mapper made for this Case.
    outbound = e2e.emulator.get("/_emulator/outbound-messages").json()
    assert outbound["stats"]["messages_dropped"] == 0
    assert {a["outcome"] for a in outbound["attempts"]} <= {"acknowledged", "retry"}
    assert e2e.bot.rejected == []
    commands = e2e.commands(lambda c: c.get("op") == "notify_bot" and c["fields"].get("ticket_id") == case_id)
    delivered = [n.webhook_id for n in e2e.bot.notifications(lambda n: n.data.get("ticket_id") == case_id)]
    assert sorted(delivered) == sorted({c["command_id"] for c in commands}) and len(delivered) == 3
