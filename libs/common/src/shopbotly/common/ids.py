"""Identity normalization, deterministic ids and message keys (DESIGN.md, Topics)."""

from __future__ import annotations

import hashlib

__all__ = [
    "command_id",
    "command_key",
    "content_event_id",
    "normalize_email",
    "order_key",
    "raw_event_key",
    "ticket_key",
]


def normalize_email(value: str) -> str:
    """Lowercase and trim; the CRM identity and the ordering key both use this form."""
    return value.strip().lower()


def content_event_id(source: str, body: bytes) -> str:
    """Event id for sources that send none: SHA-256 of the source name and the exact body."""
    digest = hashlib.sha256(source.encode() + b"\x00" + body).hexdigest()
    return f"sha256:{digest}"


def command_id(event_id: str, rule_id: str, index: int) -> str:
    """Deterministic command id: the same event through the same rule always yields the same id."""
    digest = hashlib.sha256(f"{event_id}\x00{rule_id}\x00{index}".encode()).hexdigest()
    return f"cmd_{digest[:32]}"


def raw_event_key(tenant: str, subject: str) -> bytes:
    return f"{tenant}:{subject}".encode()


def command_key(tenant: str, connection: str, identity: str) -> bytes:
    return f"{tenant}:{connection}:{identity}".encode()


def order_key(tenant: str, order_id: str) -> bytes:
    return f"{tenant}:{order_id}".encode()


def ticket_key(tenant: str, ticket_id: str) -> bytes:
    return f"{tenant}:{ticket_id}".encode()
