"""Salesforce outbound messages at ingest's HTTP edge: org id and URL token, hostile and malformed XML, size
limits, the batch split into events and the SOAP acknowledgement Salesforce needs to stop re-sending."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from shopbotly.common.events import RawEvent
from shopbotly.common.ids import raw_event_key
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.sources.salesforce import ACK, Notification, outbound_message
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import SALESFORCE_ORG_ID, SALESFORCE_TOKEN, Running, read_topic, running_app

XML = {"content-type": "text/xml; charset=utf-8", "soapaction": '""'}
URL = f"/v1/webhooks/acme/salesforce?token={SALESFORCE_TOKEN}"
ORG_ONLY = "/v1/webhooks/acme/salesforce_org_only"
DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "ingest.md"


def _case(n: int, **fields: str | None) -> Notification:
    record: dict[str, str | None] = {
        "Id": f"5000000000{n:05d}AAA",
        "Subject": f"Case {n}",
        "Status": "New",
        "IsClosed": "false",
        "ContactEmail": f"customer{n}@example.com",
        **fields,
    }
    return Notification(f"04l0000000{n:05d}AAA", "Case", record)


def _message(*notes: Notification, org: str = SALESFORCE_ORG_ID, session: str | None = "SESSION!x") -> bytes:
    return outbound_message(
        organization_id=org,
        action_id="04k000000000001AAA",
        notifications=notes,
        enterprise_url="https://acme.my.salesforce.com/services/Soap/c/62.0/00D000000000001",
        partner_url="https://acme.my.salesforce.com/services/Soap/u/62.0/00D000000000001",
        session_id=session,
    )


def _rejections(source: str, reason: str) -> float:
    labels = {"tenant": "acme", "source": source, "reason": reason}
    return REGISTRY.get_sample_value("shopbotly_ingest_rejections_total", labels) or 0.0


@pytest.fixture
async def offline(offline_settings: Settings) -> AsyncIterator[Running]:
    async with running_app(offline_settings, lifespan=False) as running:
        yield running


# --- refusals (component: the producer is not started, so a request past every check answers 503) ---------


@pytest.mark.component
async def test_a_valid_message_passes_every_check(offline: Running) -> None:
    resp = await offline.client.post(URL, content=_message(_case(1)), headers=XML)
    assert resp.status_code == 503  # verified and parsed; only the broker is missing
    resp = await offline.client.post(ORG_ONLY, content=_message(_case(1)), headers=XML)
    assert resp.status_code == 503  # an org-only source needs no token; its 15-character org id matches


@pytest.mark.component
async def test_another_orgs_message_is_401_like_any_failed_signature(offline: Running) -> None:
    before = _rejections("salesforce", "signature_mismatch")
    other = "00D000000000002EAA"
    for path in (URL, ORG_ONLY):
        resp = await offline.client.post(path, content=_message(_case(1), org=other), headers=XML)
        assert resp.status_code == 401 and resp.json()["code"] == "invalid_signature"
        assert other not in resp.text
    assert _rejections("salesforce", "signature_mismatch") == before + 1


@pytest.mark.component
@pytest.mark.parametrize(
    ("query", "reason"), [("", "signature_missing"), ("?token=wrong-token-0123456789", "signature_mismatch")]
)
async def test_a_missing_or_wrong_url_token_is_401(offline: Running, query: str, reason: str) -> None:
    before = _rejections("salesforce", reason)
    resp = await offline.client.post(
        f"/v1/webhooks/acme/salesforce{query}", content=_message(_case(1)), headers=XML
    )
    assert resp.status_code == 401 and resp.json()["code"] == "invalid_signature"
    assert _rejections("salesforce", reason) == before + 1


HOSTILE = {
    "billion laughs": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
    ),
    "external entity": (
        b'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'>&xxe;</soapenv:Envelope>"
    ),
    "a DTD alone": b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:1/x.dtd"><x/>',
}


@pytest.mark.component
@pytest.mark.parametrize("name", list(HOSTILE))
async def test_xml_with_a_dtd_or_entities_is_400_and_never_expanded(offline: Running, name: str) -> None:
    resp = await offline.client.post(URL, content=HOSTILE[name], headers=XML)
    assert resp.status_code == 400 and resp.json()["code"] == "forbidden_xml"


@pytest.mark.component
async def test_malformed_xml_is_400_with_its_position(offline: Running) -> None:
    resp = await offline.client.post(URL, content=b"<soapenv:Envelope><unclosed>", headers=XML)
    assert resp.status_code == 400
    problem = resp.json()
    assert problem["code"] == "malformed_xml" and "line 1 column" in problem["detail"]


@pytest.mark.component
async def test_a_soap_body_that_is_no_outbound_message_is_422_naming_the_part(offline: Running) -> None:
    body = _message(_case(1)).replace(b"http://soap.sforce.com/2005/09/outbound", b"urn:other")
    resp = await offline.client.post(URL, content=body, headers=XML)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == "Envelope.Body.notifications"
    no_id = _message(_case(1)).replace(b"<Id>04l000000000001AAA</Id>", b"<Id></Id>")
    resp = await offline.client.post(URL, content=no_id, headers=XML)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == "notifications.Notification[0].Id"


@pytest.mark.component
async def test_more_than_100_notifications_is_422(offline: Running) -> None:
    body = _message(*(_case(n) for n in range(101)))
    resp = await offline.client.post(URL, content=body, headers=XML)
    assert resp.status_code == 422
    assert "at most 100" in resp.json()["errors"][0]["msg"]


@pytest.mark.component
async def test_a_body_over_the_limit_is_413(offline: Running) -> None:
    body = _message(_case(1, Description="x" * (600 * 1024)))
    resp = await offline.client.post(URL, content=body, headers=XML)
    assert resp.status_code == 413 and resp.json()["code"] == "too_large"


@pytest.mark.component
async def test_json_is_415_naming_the_media_type_salesforce_sends(offline: Running) -> None:
    resp = await offline.client.post(URL, content=b"{}", headers={"content-type": "application/json"})
    assert resp.status_code == 415 and "text/xml" in resp.json()["detail"]


# --- publishing (the real broker) -----------------------------------------------------------------------


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[Running]:
    async with running_app(settings) as running:
        yield running


@pytest.mark.integration
async def test_a_batch_is_split_into_events_and_acknowledged_once_stored(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    notes = [_case(1), _case(2, Status="Closed", IsClosed="true"), _case(3, ContactEmail=None)]
    body = _message(*notes)
    resp = await ingest.client.post(URL, content=body, headers=XML)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/xml")
    assert resp.content == ACK and b"<Ack>true</Ack>" in resp.content

    records = await read_topic(kafka_settings, expected=3)
    events = {RawEvent.from_json(r.value).id: (RawEvent.from_json(r.value), r) for r in records}
    assert sorted(events) == sorted(n.id for n in notes)
    for note in notes:
        event, record = events[note.id]
        assert event.type == "Case" and event.sourcename == "salesforce"
        # Every change of one Case, comments included, stays in order on one partition.
        assert event.subject == f"case:{note.fields['Id']}"
        assert record.key == raw_event_key("acme", f"case:{note.fields['Id']}")
        assert event.data["sObject"] == dict(note.fields)
        assert event.data["OrganizationId"] == SALESFORCE_ORG_ID
        assert "SessionId" not in event.data and "SESSION" not in record.value.decode()

    # Salesforce re-sends a message it got no Ack for: acknowledged again, nothing new is published.
    again = await ingest.client.post(URL, content=body, headers=XML)
    assert again.status_code == 200 and again.content == ACK
    assert len(await read_topic(kafka_settings, expected=4, timeout_s=2)) == 3


def _documented_exchange() -> tuple[str, dict[str, str], bytes, int, bytes]:
    """The request and answer of docs/services/ingest.md, "Salesforce outbound messages"."""
    section = DOC.read_text().split("### Salesforce outbound messages", 1)[1]
    blocks = [b.split("```", 1)[0] for b in section.split("```http\n")[1:3]]
    head, _, body = blocks[0].partition("\n\n")
    request_line, *header_lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    status_line, _, answer = blocks[1].partition("\n\n")
    return (
        request_line.split(" ")[1],
        headers,
        body.strip().encode(),
        int(status_line.split(" ")[1]),
        answer.strip().encode(),
    )


@pytest.mark.integration
async def test_the_documented_message_is_stored_and_acknowledged(
    ingest: Running, kafka_settings: KafkaSettings
) -> None:
    path, headers, body, status, answer = _documented_exchange()
    resp = await ingest.client.post(path, content=body, headers=headers)
    assert (resp.status_code, resp.content) == (status, answer)
    (record,) = await read_topic(kafka_settings, expected=1)
    event = RawEvent.from_json(record.value)
    assert (event.id, event.type, event.subject) == ("04l000000000901AAA", "Case", "case:500000000000901AAA")
