"""Salesforce Outbound Messages: SOAP `notifications` from a flow or workflow rule, up to 100 a message.

Format (Salesforce SOAP API guide, "Understanding the Outbound Messaging WSDL" and "Understanding
Notifications"): `soapenv:Envelope/Body/notifications` in namespace http://soap.sforce.com/2005/09/outbound
holds OrganizationId, ActionId, SessionId (nillable), EnterpriseUrl, PartnerUrl and 1..100 `Notification`
elements, each an `Id` (the notification's, kept across re-sends) and an `sObject` with `xsi:type="sf:Case"`
whose children (namespace urn:sobject.enterprise.soap.sforce.com) are the fields the message was set up with.
Salesforce re-sends a message until the listener answers `notificationsResponse` with `<Ack>true</Ack>`.

Outbound Messages carry no signature: a source is authenticated by the OrganizationId in the body (checked
against the configured org ids, "Considerations for Security"), optionally by a shared secret in the URL
(`?token=<secret>`, set in the outbound message's endpoint URL), and by Salesforce's client certificate where
the TLS terminator in front of ingest asks for it (docs/services/ingest.md).
"""

from __future__ import annotations

import hmac
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
import orjson
from defusedxml import DefusedXmlException

from shopbotly.common.signatures import SignatureError
from shopbotly.common.sources._base import (
    Answer,
    Delivery,
    ExtractionDefaults,
    FieldError,
    InboundRequest,
    Item,
    Rejection,
    SourceKeys,
    WebhookSource,
)

if TYPE_CHECKING:
    from shopbotly.common.config._sources import SourceConfig

__all__ = [
    "ACK",
    "MAX_NOTIFICATIONS",
    "OUTBOUND_NS",
    "SOURCES",
    "Notification",
    "OutboundMessage",
    "org_id_key",
    "outbound_message",
]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
# Nesting below an sObject (a field holding an element); Salesforce sends flat fields.
_MAX_FIELD_DEPTH = 4
_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
_TOKEN_PARAM = "token"  # noqa: S105 - the name of the query parameter, not a secret

ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>'
    b"</soapenv:Body></soapenv:Envelope>"
)


def org_id_key(org_id: str) -> str:
    """The 15-character, case-sensitive form: an 18-character id only adds a case checksum."""
    return org_id[:15]


# --- the message -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    id: str
    sobject_type: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    enterprise_url: str | None
    partner_url: str | None
    notifications: Sequence[Notification]


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def outbound_message(
    *,
    organization_id: str,
    action_id: str,
    notifications: Iterable[Notification],
    enterprise_url: str = "",
    partner_url: str = "",
    session_id: str | None = None,
) -> bytes:
    """The SOAP request Salesforce POSTs for these notifications, written the way Salesforce writes it
    (the CRM emulator sends it)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
        f' xmlns:xsi="{XSI_NS}">',
        "<soapenv:Body>",
        f'<notifications xmlns="{OUTBOUND_NS}">',
        f"<OrganizationId>{escape(organization_id)}</OrganizationId>",
        f"<ActionId>{escape(action_id)}</ActionId>",
        '<SessionId xsi:nil="true"/>'
        if session_id is None
        else f"<SessionId>{escape(session_id)}</SessionId>",
        f"<EnterpriseUrl>{escape(enterprise_url)}</EnterpriseUrl>",
        f"<PartnerUrl>{escape(partner_url)}</PartnerUrl>",
    ]
    for note in notifications:
        parts.append(f"<Notification><Id>{escape(note.id)}</Id>")
        parts.append(f'<sObject xsi:type="sf:{escape(note.sobject_type)}" xmlns:sf="{SOBJECT_NS}">')
        for name, value in note.fields.items():
            if value is None:
                parts.append(f'<sf:{name} xsi:nil="true"/>')
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                parts.append(f"<sf:{name}>{escape(text)}</sf:{name}>")
        parts.append("</sObject></Notification>")
    parts.append("</notifications></soapenv:Body></soapenv:Envelope>")
    return "".join(parts).encode()


# --- parsing ---------------------------------------------------------------------------------------


def _invalid(loc: str, msg: str, kind: str = "missing") -> Rejection:
    return Rejection(
        422,
        "invalid_event",
        "not a Salesforce outbound message (SOAP notifications)",
        errors=[FieldError(loc, msg, kind)],
    )


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _child(parent: ET.Element, ns: str, name: str) -> ET.Element | None:
    return parent.find(_q(ns, name))


def _text(parent: ET.Element, name: str, loc: str, *, required: bool = True) -> str | None:
    element = _child(parent, OUTBOUND_NS, name)
    text = (element.text or "").strip() if element is not None else ""
    if not text:
        if required:
            raise _invalid(f"{loc}.{name}", f"{name} is missing or empty")
        return None
    return text


def _is_nil(element: ET.Element) -> bool:
    return element.get(_q(XSI_NS, "nil")) in ("true", "1")


def _value(element: ET.Element, loc: str, depth: int) -> Any:
    if _is_nil(element):
        return None
    children = list(element)
    if not children:
        return element.text or ""
    if depth >= _MAX_FIELD_DEPTH:
        raise _invalid(loc, f"nested deeper than {_MAX_FIELD_DEPTH} levels", "too_deep")
    return {_local(c.tag)[1]: _value(c, f"{loc}.{_local(c.tag)[1]}", depth + 1) for c in children}


def _notification(element: ET.Element, loc: str) -> Notification:
    note_id = _text(element, "Id", loc)
    assert note_id is not None
    if not _ID.match(note_id):
        raise _invalid(f"{loc}.Id", "expected a Salesforce id (15 or 18 letters and digits)", "pattern")
    sobject = _child(element, OUTBOUND_NS, "sObject")
    if sobject is None:
        raise _invalid(f"{loc}.sObject", "sObject is missing")
    declared = sobject.get(_q(XSI_NS, "type")) or ""
    sobject_type = declared.rpartition(":")[2]
    if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,79}$", sobject_type):
        raise _invalid(f"{loc}.sObject", 'expected xsi:type="sf:<object name>", e.g. sf:Case', "type")
    fields = {_local(c.tag)[1]: _value(c, f"{loc}.sObject.{_local(c.tag)[1]}", 1) for c in sobject}
    return Notification(note_id, sobject_type, fields)


def parse_outbound_message(body: bytes) -> OutboundMessage:
    """The message in a SOAP body: 400 for XML that is malformed or uses a DTD or entities (never
    resolved: billion laughs, external entities), 422 naming the part that is not an outbound message."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise Rejection(
            400, "forbidden_xml", "XML with a DTD, entities or external references is not accepted"
        ) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise Rejection(
            400, "malformed_xml", f"malformed XML at line {line} column {column}: {exc.msg}"
        ) from None
    if root.tag != _q(SOAP_NS, "Envelope"):
        raise _invalid("Envelope", "expected a SOAP 1.1 Envelope", "type")
    soap_body = _child(root, SOAP_NS, "Body")
    notes = soap_body.find(_q(OUTBOUND_NS, "notifications")) if soap_body is not None else None
    if notes is None:
        raise _invalid("Envelope.Body.notifications", f"no notifications element in {OUTBOUND_NS}")
    loc = "notifications"
    org = _text(notes, "OrganizationId", loc)
    action = _text(notes, "ActionId", loc)
    assert org is not None and action is not None
    if not _ID.match(org):
        raise _invalid(f"{loc}.OrganizationId", "expected a Salesforce id", "pattern")
    elements = notes.findall(_q(OUTBOUND_NS, "Notification"))
    if not elements:
        raise _invalid(f"{loc}.Notification", "a message holds 1 to 100 notifications")
    if len(elements) > MAX_NOTIFICATIONS:
        raise _invalid(
            f"{loc}.Notification",
            f"{len(elements)} notifications; a message holds at most {MAX_NOTIFICATIONS}",
            "too_long",
        )
    return OutboundMessage(
        organization_id=org,
        action_id=action,
        enterprise_url=_text(notes, "EnterpriseUrl", loc, required=False),
        partner_url=_text(notes, "PartnerUrl", loc, required=False),
        notifications=[_notification(e, f"{loc}.Notification[{i}]") for i, e in enumerate(elements)],
    )


# --- the kind --------------------------------------------------------------------------------------


class Salesforce(WebhookSource):
    kind = "salesforce"
    scheme = "the organization id in the message (and the URL token, where configured)"
    preset = "salesforce"
    options = frozenset({"organization_ids"})
    needs_secret = False
    signs_body = False
    media_description = "text/xml (SOAP 1.1)"
    # One event per notification. The notification id is kept across Salesforce's re-sends, so a re-sent
    # message is a duplicate; the SessionId (a live API session of the sending user) is never stored. The
    # subject is the record a change belongs to (derived_subject), so a Case and its comments stay in order.
    defaults = ExtractionDefaults("body.NotificationId", "body.sObjectType", None, None)

    def check_config(self, config: SourceConfig) -> None:
        if not getattr(config, "organization_ids", None):  # the kind's own field (config._sources)
            raise ValueError(
                "kind salesforce needs `organization_ids`: the 15- or 18-character ids of the orgs whose"
                " outbound messages this source accepts (Setup > Company Information > Salesforce.com"
                " Organization ID)"
            )

    def prepare(self, config: SourceConfig) -> frozenset[str]:
        return frozenset(org_id_key(o) for o in getattr(config, "organization_ids", None) or ())

    def check_secret(self, secret: str) -> None:
        super().check_secret(secret)
        if len(secret) < 16:
            raise ValueError("a URL token must have at least 16 characters")

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        if not keys.secrets:
            return  # authenticated by the org id alone (and mTLS at the terminator)
        tokens = parse_qs(urlsplit(request.url).query).get(_TOKEN_PARAM, [])
        if not tokens:
            raise SignatureError("missing", f"missing the `{_TOKEN_PARAM}` query parameter")
        matched = False
        for secret in keys.secrets:
            for token in tokens:
                matched |= hmac.compare_digest(secret.encode(), token.encode())
        if not matched:
            raise SignatureError("mismatch", "no token matches")

    def sign(self, d: Delivery) -> dict[str, str]:
        # No signature header: the secret travels in the endpoint URL (`?token=`), the org id in the body.
        return {"SOAPAction": '""'}

    def accepts(self, content_type: str | None) -> bool:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        return media in ("text/xml", "application/xml", "application/soap+xml")

    def parse(self, body: bytes) -> OutboundMessage:
        return parse_outbound_message(body)

    def verify_content(self, keys: SourceKeys, parsed: Any) -> None:
        assert isinstance(parsed, OutboundMessage)
        allowed = keys.options if isinstance(keys.options, frozenset) else frozenset()
        if org_id_key(parsed.organization_id) not in allowed:
            raise SignatureError("mismatch", f"OrganizationId {parsed.organization_id} is not configured")

    def split(self, parsed: Any, raw: bytes) -> list[Item]:
        assert isinstance(parsed, OutboundMessage)
        items: list[Item] = []
        for i, note in enumerate(parsed.notifications):
            data = {
                "NotificationId": note.id,
                "OrganizationId": parsed.organization_id,
                "ActionId": parsed.action_id,
                "EnterpriseUrl": parsed.enterprise_url,
                "PartnerUrl": parsed.partner_url,
                "sObjectType": note.sobject_type,
                "sObject": dict(note.fields),
            }
            raw_item = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            items.append(Item(data, raw_item, f"notifications.Notification[{i}]"))
        return items

    def derived_subject(self, data: Any) -> str | None:
        """`case:<Id>` for a Case and for a CaseComment (its ParentId), a Contact's e-mail, else
        `<type>:<Id>`: every change of one Case, comments included, in order on one partition."""
        if not isinstance(data, Mapping):
            return None
        sobject = data.get("sObject")
        kind = data.get("sObjectType")
        if not isinstance(sobject, Mapping) or not isinstance(kind, str):
            return None
        if kind == "CaseComment":
            kind, record_id = "Case", sobject.get("ParentId")
        else:
            record_id = sobject.get("Id")
        email = sobject.get("Email")
        if kind == "Contact" and isinstance(email, str) and "@" in email:
            return email
        if not isinstance(record_id, str) or not record_id:
            return None
        return f"{kind.lower()}:{record_id}"

    def acknowledge(self, event_ids: Sequence[str], *, duplicate: bool) -> Answer:
        # Every notification is stored (or was before): Ack true, or Salesforce re-sends for 24 hours.
        return Answer(200, "text/xml; charset=utf-8", ACK)


SOURCES = (Salesforce(),)
