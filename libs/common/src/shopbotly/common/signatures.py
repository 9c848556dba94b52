"""Webhook signature schemes: verify and sign, pure (no I/O; the clock is an argument).

The cryptography of the schemes ShopBotly receives (ingest, through the source kind modules in
`shopbotly.common.sources`) and that the CRM emulator sends (HubSpot v3), so both ends of a test sign and
verify with the same code. Every comparison of a secret-derived value is constant-time. Verifiers take
several secrets (rotation): a request passes when any secret matches any signature it carries.

Header values are passed in by the kind modules; the `*_headers` helpers return the provider's own
spelling, which HTTP treats case-insensitively.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "FailureReason",
    "HmacScheme",
    "SignatureError",
    "check_standard_webhooks_secret",
    "hubspot_v3_headers",
    "hubspot_v3_uri",
    "sign_generic_hmac",
    "sign_github",
    "sign_hubspot_v3",
    "sign_intercom",
    "sign_shopify",
    "sign_slack",
    "sign_standard_webhooks",
    "sign_stripe",
    "standard_webhooks_headers",
    "verify_generic_hmac",
    "verify_github",
    "verify_hubspot_v3",
    "verify_intercom",
    "verify_shopify",
    "verify_slack",
    "verify_standard_webhooks",
    "verify_stripe",
]

DEFAULT_TOLERANCE_S = 300

FailureReason = Literal["missing", "malformed", "stale", "mismatch"]


class SignatureError(Exception):
    """Verification failed.

    `reason` is for metrics and operator logs; a receiver answers 401 without it, so a forger learns
    nothing about which part was wrong.
    """

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason
        self.message = message


# --- shared helpers -------------------------------------------------------------------------------


def _hmac(key: bytes, data: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, data, algorithm).digest()


def _required(value: str | None, what: str) -> str:
    if value is None or not value.strip():
        raise SignatureError("missing", f"missing {what}")
    return value.strip()


def _int_timestamp(value: str, what: str) -> int:
    # Digits only: a float, a sign or whitespace inside is not what any of these providers sends.
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        raise SignatureError("malformed", f"{what} is not an integer timestamp")
    return int(value)


def _check_fresh(timestamp_s: float, now: float, tolerance_s: float) -> None:
    # Both directions: an old timestamp is a replay, one far in the future is a pre-signed replay.
    if abs(now - timestamp_s) > tolerance_s:
        raise SignatureError("stale", f"timestamp outside the tolerance of {tolerance_s:g}s")


def _b64decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _hex_or_none(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _any_match(expected: Sequence[bytes], presented: Sequence[bytes]) -> bool:
    # Every pair is compared (no early exit) so timing does not tell which secret or signature matched.
    matched = False
    for exp in expected:
        for got in presented:
            matched |= hmac.compare_digest(exp, got)
    return matched


def _secrets(secrets: Sequence[str]) -> Sequence[str]:
    if isinstance(secrets, str):  # a lone string is a Sequence[str] of characters: refuse the trap
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("at least one secret is needed")
    return secrets


# --- Standard Webhooks (https://www.standardwebhooks.com), also ShopBotly's own bot ------------------

_WHSEC = "whsec_"
_WHPK = "whpk_"
_WHSK = "whsk_"


@lru_cache(maxsize=512)
def _sw_hmac_key(secret: str) -> bytes:
    raw = secret.removeprefix(_WHSEC)
    # The reference library pads, so unpadded base64 secrets work there too.
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is base64 after the `whsec_` prefix") from None
    if not key:
        raise ValueError("a Standard Webhooks secret may not be empty")
    return key


def _ed25519() -> tuple[type[Ed25519PrivateKey], type[Ed25519PublicKey], type[Exception]]:
    # Imported on first use: only v1a (ed25519) needs `cryptography`, so services that sign or verify
    # v1 alone do not depend on it.
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - the workspace installs it with ingest
        raise ValueError("v1a (ed25519) signatures need the `cryptography` package") from None
    return ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, InvalidSignature


@lru_cache(maxsize=128)
def _sw_private_key(secret: str) -> Ed25519PrivateKey:
    raw = _b64decode(secret.removeprefix(_WHSK))
    # 32 bytes is the seed; 64 is seed + public key, as some libraries serialize it.
    if raw is None or len(raw) not in (32, 64):
        raise ValueError("a `whsk_` secret is the base64 of a 32-byte ed25519 private key")
    return _ed25519()[0].from_private_bytes(raw[:32])


@lru_cache(maxsize=128)
def _sw_public_key(secret: str) -> Ed25519PublicKey:
    if secret.startswith(_WHSK):
        return _sw_private_key(secret).public_key()
    raw = _b64decode(secret.removeprefix(_WHPK))
    if raw is None or len(raw) != 32:
        raise ValueError("a `whpk_` key is the base64 of a 32-byte ed25519 public key")
    return _ed25519()[1].from_public_bytes(raw)


def _sw_content(msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `webhook-signature` entry: `v1,<base64 HMAC-SHA256>` for a `whsec_` secret, `v1a,<base64
    ed25519>` for a `whsk_` private key."""
    content = _sw_content(msg_id, timestamp, body)
    if secret.startswith(_WHSK):
        return "v1a," + base64.b64encode(_sw_private_key(secret).sign(content)).decode()
    return "v1," + base64.b64encode(_hmac(_sw_hmac_key(secret), content)).decode()


def standard_webhooks_headers(
    secrets: str | Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of a signed delivery; several secrets give several signatures (rotation)."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign_standard_webhooks(s, msg_id, timestamp, body) for s in keys),
    }


def verify_standard_webhooks(
    secrets: Sequence[str],
    *,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Verify `webhook-id`, `webhook-timestamp` and `webhook-signature` (or their `svix-*` names, see
    `verify_webhook`) against `whsec_` secrets (v1) and `whpk_` public keys (v1a). Raises SignatureError."""
    keys = _secrets(secrets)
    msg_id = _required(msg_id, "webhook-id")
    ts_text = _required(timestamp, "webhook-timestamp")
    sig_text = _required(signature, "webhook-signature")
    ts = _int_timestamp(ts_text, "webhook-timestamp")
    _check_fresh(ts, now, tolerance_s)
    v1: list[bytes] = []
    v1a: list[bytes] = []
    for entry in sig_text.split(" "):
        version, _, value = entry.partition(",")
        decoded = _b64decode(value) if value else None
        if decoded is None:
            continue
        if version == "v1":
            v1.append(decoded)
        elif version == "v1a":
            v1a.append(decoded)
    if not v1 and not v1a:
        raise SignatureError("malformed", "webhook-signature has no v1 or v1a signature")
    content = _sw_content(msg_id, ts_text, body)
    symmetric = [k for k in keys if not k.startswith((_WHPK, _WHSK))]
    if v1 and symmetric and _any_match([_hmac(_sw_hmac_key(k), content) for k in symmetric], v1):
        return
    asymmetric = [k for k in keys if k.startswith((_WHPK, _WHSK))]
    if v1a and asymmetric:
        invalid_signature = _ed25519()[2]
        for key in asymmetric:
            for sig in v1a:
                try:
                    _sw_public_key(key).verify(sig, content)
                    return
                except invalid_signature:
                    continue
    raise SignatureError("mismatch", "no signature matches")


# --- Stripe ----------------------------------------------------------------------------------------


def sign_stripe(secret: str, timestamp: int, body: bytes) -> str:
    """`Stripe-Signature` value: `t=<ts>,v1=<hex HMAC-SHA256 of "<ts>." + body>`; the key is the whole
    `whsec_...` string, as Stripe uses it."""
    mac = _hmac(secret.encode(), f"{timestamp}.".encode() + body).hex()
    return f"t={timestamp},v1={mac}"


def verify_stripe(
    secrets: Sequence[str],
    *,
    header: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    keys = _secrets(secrets)
    text = _required(header, "Stripe-Signature")
    ts_text: str | None = None
    v1: list[bytes] = []
    for item in text.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            ts_text = value
        elif name == "v1" and (decoded := _hex_or_none(value)) is not None:
            v1.append(decoded)
    if ts_text is None or not v1:
        raise SignatureError("malformed", "Stripe-Signature needs t= and at least one v1=")
    ts = _int_timestamp(ts_text, "Stripe-Signature t")
    _check_fresh(ts, now, tolerance_s)
    payload = f"{ts_text}.".encode() + body
    if not _any_match([_hmac(k.encode(), payload) for k in keys], v1):
        raise SignatureError("mismatch", "no signature matches")


# --- body-only HMAC schemes: Shopify, GitHub, Intercom ---------------------------------------------


def sign_shopify(secret: str, body: bytes) -> str:
    """`X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body with the app's client secret."""
    return base64.b64encode(_hmac(secret.encode(), body)).decode()


def verify_shopify(secrets: Sequence[str], *, signature: str | None, body: bytes) -> None:
    keys = _secrets(secrets)
    presented = _b64decode(_required(signature, "X-Shopify-Hmac-Sha256"))
    if presented is None:
        raise SignatureError("malformed", "X-Shopify-Hmac-Sha256 is not base64")
    if not _any_match([_hmac(k.encode(), body) for k in keys], [presented]):
        raise SignatureError("mismatch", "no signature matches")


def _prefixed_hex(value: str | None, header: str, prefix: str) -> bytes:
    text = _required(value, header)
    if not text.startswith(prefix) or (decoded := _hex_or_none(text[len(prefix) :])) is None:
        raise SignatureError("malformed", f"{header} is not {prefix}<hex>")
    return decoded


def sign_github(secret: str, body: bytes) -> str:
    """`X-Hub-Signature-256`: `sha256=<hex HMAC-SHA256 of the body>`."""
    return "sha256=" + _hmac(secret.encode(), body).hex()


def verify_github(secrets: Sequence[str], *, signature: str | None, body: bytes) -> None:
    keys = _secrets(secrets)
    presented = _prefixed_hex(signature, "X-Hub-Signature-256", "sha256=")
    if not _any_match([_hmac(k.encode(), body) for k in keys], [presented]):
        raise SignatureError("mismatch", "no signature matches")


def sign_intercom(secret: str, body: bytes) -> str:
    """`X-Hub-Signature` as Intercom sends it: `sha1=<hex HMAC-SHA1 of the body>` with the client secret."""
    return "sha1=" + _hmac(secret.encode(), body, "sha1").hex()


def verify_intercom(secrets: Sequence[str], *, signature: str | None, body: bytes) -> None:
    keys = _secrets(secrets)
    presented = _prefixed_hex(signature, "X-Hub-Signature", "sha1=")
    if not _any_match([_hmac(k.encode(), body, "sha1") for k in keys], [presented]):
        raise SignatureError("mismatch", "no signature matches")


# --- Slack -----------------------------------------------------------------------------------------


def sign_slack(secret: str, timestamp: int, body: bytes) -> str:
    """`X-Slack-Signature`: `v0=<hex HMAC-SHA256 of "v0:<ts>:" + body>` with the signing secret."""
    return "v0=" + _hmac(secret.encode(), f"v0:{timestamp}:".encode() + body).hex()


def verify_slack(
    secrets: Sequence[str],
    *,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    keys = _secrets(secrets)
    ts_text = _required(timestamp, "X-Slack-Request-Timestamp")
    presented = _prefixed_hex(signature, "X-Slack-Signature", "v0=")
    ts = _int_timestamp(ts_text, "X-Slack-Request-Timestamp")
    _check_fresh(ts, now, tolerance_s)
    payload = f"v0:{ts_text}:".encode() + body
    if not _any_match([_hmac(k.encode(), payload) for k in keys], [presented]):
        raise SignatureError("mismatch", "no signature matches")


# --- HubSpot v3 ------------------------------------------------------------------------------------

# HubSpot signs the URI with these percent-escapes decoded (its "Validate the v3 request signature"
# table); every other escape stays as sent.
_HUBSPOT_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(re.escape(k) for k in _HUBSPOT_DECODE), re.IGNORECASE)


def hubspot_v3_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the full URL with the listed percent-escapes decoded."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODE[m.group(0).upper()], uri)


def _hubspot_source(method: str, uri: str, body: bytes, timestamp: str) -> bytes:
    return method.upper().encode() + hubspot_v3_uri(uri).encode() + body + timestamp.encode()


def sign_hubspot_v3(secret: str, *, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """`X-HubSpot-Signature-v3`: base64 HMAC-SHA256(client secret, method + URI + body + timestamp)."""
    return base64.b64encode(
        _hmac(secret.encode(), _hubspot_source(method, uri, body, str(timestamp_ms)))
    ).decode()


def hubspot_v3_headers(
    secret: str, *, method: str, uri: str, body: bytes, timestamp_ms: int
) -> dict[str, str]:
    return {
        "X-HubSpot-Signature-v3": sign_hubspot_v3(
            secret, method=method, uri=uri, body=body, timestamp_ms=timestamp_ms
        ),
        "X-HubSpot-Request-Timestamp": str(timestamp_ms),
    }


def verify_hubspot_v3(
    secrets: Sequence[str],
    *,
    signature: str | None,
    timestamp: str | None,
    method: str,
    uri: str,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Verify a HubSpot v3 request. `uri` is the full public URL HubSpot called (scheme, host, path,
    query); `timestamp` is X-HubSpot-Request-Timestamp in milliseconds."""
    keys = _secrets(secrets)
    ts_text = _required(timestamp, "X-HubSpot-Request-Timestamp")
    # A proxy or client that form-decodes the header turns base64 '+' into ' '; no base64 has a space.
    sig_text = _required(signature, "X-HubSpot-Signature-v3").replace(" ", "+")
    ts_ms = _int_timestamp(ts_text, "X-HubSpot-Request-Timestamp")
    _check_fresh(ts_ms / 1000, now, tolerance_s)
    presented = _b64decode(sig_text)
    if presented is None:
        raise SignatureError("malformed", "X-HubSpot-Signature-v3 is not base64")
    source = _hubspot_source(method, uri, body, ts_text)
    if not _any_match([_hmac(k.encode(), source) for k in keys], [presented]):
        raise SignatureError("mismatch", "no signature matches")


# --- generic HMAC ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"(\{body\}|\{timestamp\})")


@dataclass(frozen=True)
class HmacScheme:
    """A self-hosted sender's HMAC: where the signature is, how it is written and what is signed.

    `signed_payload` is a template over the raw body and the timestamp header's value, e.g. "{body}" or
    "{timestamp}.{body}".
    """

    header: str = "X-Signature"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    timestamp_header: str | None = None
    timestamp_unit: Literal["s", "ms"] = "s"
    signed_payload: str = "{body}"

    def __post_init__(self) -> None:
        names = set(re.findall(r"\{([^}]*)\}", self.signed_payload))
        if "body" not in names:
            raise ValueError("signed_payload must contain {body}")
        if names - {"body", "timestamp"}:
            raise ValueError(f"signed_payload may use only {{body}} and {{timestamp}}, not {sorted(names)}")
        if "timestamp" in names and self.timestamp_header is None:
            raise ValueError("signed_payload uses {timestamp}, so timestamp_header must be set")

    def payload(self, body: bytes, timestamp: str | None) -> bytes:
        parts: list[bytes] = []
        for piece in _PLACEHOLDER.split(self.signed_payload):
            if piece == "{body}":
                parts.append(body)
            elif piece == "{timestamp}":
                parts.append((timestamp or "").encode())
            else:
                parts.append(piece.encode())
        return b"".join(parts)

    def encode(self, digest: bytes) -> str:
        text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode()
        return self.prefix + text

    def decode(self, value: str) -> bytes | None:
        if not value.startswith(self.prefix):
            return None
        text = value[len(self.prefix) :]
        return _hex_or_none(text) if self.encoding == "hex" else _b64decode(text)


def sign_generic_hmac(secret: str, body: bytes, *, scheme: HmacScheme, timestamp: int | None = None) -> str:
    ts = None if timestamp is None else str(timestamp)
    return scheme.encode(_hmac(secret.encode(), scheme.payload(body, ts), scheme.algorithm))


def verify_generic_hmac(
    secrets: Sequence[str],
    *,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    scheme: HmacScheme,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    keys = _secrets(secrets)
    presented = scheme.decode(_required(signature, scheme.header))
    if presented is None:
        raise SignatureError("malformed", f"{scheme.header} is not {scheme.prefix}<{scheme.encoding}>")
    ts_text: str | None = None
    if scheme.timestamp_header is not None:
        ts_text = _required(timestamp, scheme.timestamp_header)
        ts = _int_timestamp(ts_text, scheme.timestamp_header)
        _check_fresh(ts / 1000 if scheme.timestamp_unit == "ms" else ts, now, tolerance_s)
    payload = scheme.payload(body, ts_text)
    if not _any_match([_hmac(k.encode(), payload, scheme.algorithm) for k in keys], [presented]):
        raise SignatureError("mismatch", "no signature matches")


# --- secrets ---------------------------------------------------------------------------------------


def check_standard_webhooks_secret(secret: str) -> None:
    """Raise ValueError when `secret` is not a usable `whsec_`, `whpk_` or `whsk_` key."""
    if secret.startswith(_WHPK) or secret.startswith(_WHSK):
        _sw_public_key(secret)
    else:
        _sw_hmac_key(secret)
