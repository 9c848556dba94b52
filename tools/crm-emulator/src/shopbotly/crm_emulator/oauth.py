"""OAuth 2.0 token-endpoint rules: form parsing, client authentication, Salesforce's JWT bearer checks.

Pure: secrets and keys come in resolved, time comes in as `now`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt

__all__ = [
    "JWT_BEARER",
    "ClientSpec",
    "OAuthError",
    "authenticate_client",
    "basic_credentials",
    "check_jwt_assertion",
    "parse_form",
]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class OAuthError(Exception):
    """An RFC 6749 error answer: `{"error": ..., "error_description": ...}` with an HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class ClientSpec:
    client_id: str
    client_secret: str | None
    jwt_public_key: str | None
    usernames: frozenset[str] | None


def parse_form(raw: bytes) -> dict[str, str]:
    """`application/x-www-form-urlencoded`, the only body token endpoints accept; last value wins."""
    try:
        parsed = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the body is not UTF-8 form data") from None
    return {k: v[-1] for k, v in parsed.items()}


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def _find(clients: Iterable[ClientSpec], client_id: str | None) -> ClientSpec | None:
    return next((c for c in clients if client_id is not None and c.client_id == client_id), None)


def authenticate_client(
    clients: Sequence[ClientSpec],
    form: Mapping[str, str],
    authorization: str | None,
    *,
    unknown_client: OAuthError,
    bad_secret: OAuthError,
) -> ClientSpec:
    """Client credentials from HTTP Basic or the form body (both are allowed by RFC 6749 §2.3.1).

    The two errors differ by server: Salesforce answers 400 invalid_client_id / invalid_client, a plain
    RFC 6749 server 401 invalid_client for both.
    """
    basic = basic_credentials(authorization)
    client_id, secret = basic if basic else (form.get("client_id"), form.get("client_secret"))
    client = _find(clients, client_id)
    if client is None:
        raise unknown_client
    if (
        client.client_secret is None
        or secret is None
        or not hmac.compare_digest(client.client_secret, secret)
    ):
        raise bad_secret
    return client


def check_jwt_assertion(
    assertion: str, clients: Sequence[ClientSpec], audiences: Sequence[str], now: float
) -> tuple[ClientSpec, str]:
    """(client, username) of a valid JWT bearer assertion, with Salesforce's error descriptions."""
    invalid = OAuthError("invalid_grant", "invalid assertion")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise invalid from None
    client = _find(clients, claims.get("iss"))
    if client is None:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if client.jwt_public_key is None:
        raise invalid
    try:
        verified = jwt.decode(
            assertion,
            key=client.jwt_public_key,
            algorithms=["RS256"],
            audience=list(audiences),
            issuer=client.client_id,
            # Expiry is checked against the caller's clock below, so tests can move time.
            options={"require": ["iss", "sub", "aud", "exp"], "verify_exp": False},
        )
    except jwt.InvalidAudienceError:
        raise OAuthError("invalid_grant", "audience is invalid") from None
    except jwt.PyJWTError:
        raise invalid from None
    exp = verified.get("exp")
    if not isinstance(exp, int | float) or exp <= now:
        raise invalid
    subject = str(verified["sub"])
    if client.usernames is not None and subject not in client.usernames:
        raise OAuthError("invalid_grant", "user hasn't approved this consumer")
    return client, subject
