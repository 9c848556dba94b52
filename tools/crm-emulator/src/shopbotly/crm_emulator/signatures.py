"""HubSpot's legacy v1 webhook signature, which the emulator still sends next to v3 like HubSpot does.

v3 (`X-HubSpot-Signature-v3`) comes from the shared `shopbotly.common.signatures`, the same code ingest
verifies with; v1 is only ever sent (nobody here verifies it), so it lives with the sender.
"""

from __future__ import annotations

import hashlib

__all__ = ["hubspot_signature_v1"]


def hubspot_signature_v1(client_secret: str, body: bytes) -> str:
    """`X-HubSpot-Signature` with `X-HubSpot-Signature-Version: v1`: hex SHA-256 of secret + body."""
    return hashlib.sha256(client_secret.encode() + body).hexdigest()
