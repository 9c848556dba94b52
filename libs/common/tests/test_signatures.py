"""Signature schemes: valid, tampered, stale and rotated-secret vectors for every scheme.

Where an official library exists (standardwebhooks, stripe) it produces the vectors and checks our signer;
elsewhere the vectors follow the provider's published recipe, computed independently of the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from shopbotly.common import signatures as sig
from shopbotly.common import sources
from shopbotly.common.signatures import HmacScheme, SignatureError

pytestmark = pytest.mark.unit

NOW = 1_760_000_000.0
BODY = b'{"type":"contact.created","data":{"email":"Jane@Example.com"}}'
SW_OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()


def _reason(call: Callable[[], None]) -> str:
    with pytest.raises(SignatureError) as err:
        call()
    return err.value.reason


# --- Standard Webhooks -----------------------------------------------------------------------------


def test_standard_webhooks_vector_from_the_reference_library_verifies() -> None:
    ts = datetime.fromtimestamp(NOW, tz=UTC)
    official = standardwebhooks.Webhook(SW_OLD).sign("msg_1", ts, BODY.decode())
    sig.verify_standard_webhooks(
        [SW_OLD], msg_id="msg_1", timestamp=str(int(NOW)), signature=official, body=BODY, now=NOW
    )
    assert sig.sign_standard_webhooks(SW_OLD, "msg_1", int(NOW), BODY) == official


def test_standard_webhooks_our_headers_pass_the_reference_library() -> None:
    import time

    now = int(time.time())
    headers = sig.standard_webhooks_headers(SW_NEW, "msg_2", now, BODY)
    # The library checks the timestamp against the real clock, hence `now` from time.time().
    assert standardwebhooks.Webhook(SW_NEW).verify(BODY, headers) == {
        "type": "contact.created",
        "data": {"email": "Jane@Example.com"},
    }


def test_standard_webhooks_tampered_body_id_or_timestamp_fails() -> None:
    value = sig.sign_standard_webhooks(SW_OLD, "msg_1", int(NOW), BODY)

    def verify(msg_id: str = "msg_1", ts: str = str(int(NOW)), body: bytes = BODY) -> None:
        sig.verify_standard_webhooks(
            [SW_OLD], msg_id=msg_id, timestamp=ts, signature=value, body=body, now=NOW
        )

    verify()
    assert _reason(lambda: verify(body=BODY.replace(b"Jane", b"John"))) == "mismatch"
    assert _reason(lambda: verify(msg_id="msg_2")) == "mismatch"
    assert _reason(lambda: verify(ts=str(int(NOW) - 1))) == "mismatch"


def test_standard_webhooks_stale_and_future_timestamps_fail() -> None:
    for ts in (int(NOW) - 301, int(NOW) + 301):
        value = sig.sign_standard_webhooks(SW_OLD, "m", ts, BODY)
        with pytest.raises(SignatureError) as err:
            sig.verify_standard_webhooks(
                [SW_OLD], msg_id="m", timestamp=str(ts), signature=value, body=BODY, now=NOW
            )
        assert err.value.reason == "stale"
    value = sig.sign_standard_webhooks(SW_OLD, "m", int(NOW) - 299, BODY)
    sig.verify_standard_webhooks(
        [SW_OLD], msg_id="m", timestamp=str(int(NOW) - 299), signature=value, body=BODY, now=NOW
    )


def test_standard_webhooks_rotation_on_both_sides() -> None:
    ts = str(int(NOW))
    old_only = sig.sign_standard_webhooks(SW_OLD, "m", int(NOW), BODY)
    # Receiver rotated: both secrets active, a sender still on the old one passes.
    sig.verify_standard_webhooks(
        [SW_NEW, SW_OLD], msg_id="m", timestamp=ts, signature=old_only, body=BODY, now=NOW
    )
    # Sender rotated: it signs with both, a receiver that only knows the new one passes.
    both = sig.standard_webhooks_headers([SW_OLD, SW_NEW], "m", int(NOW), BODY)["webhook-signature"]
    assert len(both.split(" ")) == 2
    sig.verify_standard_webhooks([SW_NEW], msg_id="m", timestamp=ts, signature=both, body=BODY, now=NOW)
    # The old secret retired on the receiver: a delivery signed only with it fails.
    assert (
        _reason(
            lambda: sig.verify_standard_webhooks(
                [SW_NEW], msg_id="m", timestamp=ts, signature=old_only, body=BODY, now=NOW
            )
        )
        == "mismatch"
    )


def test_standard_webhooks_missing_and_malformed_headers() -> None:
    ts = str(int(NOW))
    good = sig.sign_standard_webhooks(SW_OLD, "m", int(NOW), BODY)

    def verify(msg_id: str | None = "m", t: str | None = ts, s: str | None = good) -> None:
        sig.verify_standard_webhooks([SW_OLD], msg_id=msg_id, timestamp=t, signature=s, body=BODY, now=NOW)

    assert _reason(lambda: verify(msg_id=None)) == "missing"
    assert _reason(lambda: verify(t="")) == "missing"
    assert _reason(lambda: verify(s=None)) == "missing"
    assert _reason(lambda: verify(t="17e8")) == "malformed"
    assert _reason(lambda: verify(s="v2,abc")) == "malformed"
    assert _reason(lambda: verify(s="v1,***")) == "malformed"


def test_standard_webhooks_v1a_ed25519() -> None:
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    whsk = "whsk_" + base64.b64encode(raw_private).decode()
    whpk = "whpk_" + base64.b64encode(raw_public).decode()
    value = sig.sign_standard_webhooks(whsk, "m", int(NOW), BODY)
    assert value.startswith("v1a,")
    private.public_key().verify(base64.b64decode(value[4:]), f"m.{int(NOW)}.".encode() + BODY)
    ts = str(int(NOW))
    sig.verify_standard_webhooks(
        [SW_OLD, whpk], msg_id="m", timestamp=ts, signature=value, body=BODY, now=NOW
    )
    assert (
        _reason(
            lambda: sig.verify_standard_webhooks(
                [whpk], msg_id="m", timestamp=ts, signature=value, body=BODY + b" ", now=NOW
            )
        )
        == "mismatch"
    )
    other = (
        "whpk_"
        + base64.b64encode(
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ).decode()
    )
    assert (
        _reason(
            lambda: sig.verify_standard_webhooks(
                [other], msg_id="m", timestamp=ts, signature=value, body=BODY, now=NOW
            )
        )
        == "mismatch"
    )


def test_check_secret_refuses_unusable_standard_webhooks_secrets_without_echoing_them() -> None:
    sources.check_secret("shopbotly", SW_OLD)
    with pytest.raises(ValueError, match="base64") as err:
        sources.check_secret("standard_webhooks", "whsec_not*base64!")
    assert "not*base64" not in str(err.value)
    with pytest.raises(ValueError, match="32-byte"):
        sources.check_secret("standard_webhooks", "whpk_" + base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="empty"):
        sources.check_secret("stripe", "")


# --- Stripe ----------------------------------------------------------------------------------------

STRIPE_OLD = "whsec_test_old_0123456789"
STRIPE_NEW = "whsec_test_new_9876543210"


def test_stripe_vector_from_the_official_library_verifies_and_matches() -> None:
    ts = int(NOW)
    mac = stripe.WebhookSignature._compute_signature(f"{ts}.{BODY.decode()}", STRIPE_OLD)
    header = f"t={ts},v1={mac},v0=deadbeef"
    sig.verify_stripe([STRIPE_OLD], header=header, body=BODY, now=NOW)
    assert sig.sign_stripe(STRIPE_OLD, ts, BODY) == f"t={ts},v1={mac}"


def test_stripe_our_header_passes_the_official_library() -> None:
    import time

    header = sig.sign_stripe(STRIPE_NEW, int(time.time()), BODY)
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, STRIPE_NEW, tolerance=300)


def test_stripe_tampered_stale_rotated() -> None:
    header = sig.sign_stripe(STRIPE_OLD, int(NOW), BODY)
    assert (
        _reason(lambda: sig.verify_stripe([STRIPE_OLD], header=header, body=BODY + b"x", now=NOW))
        == "mismatch"
    )
    assert (
        _reason(lambda: sig.verify_stripe([STRIPE_OLD], header=header, body=BODY, now=NOW + 301)) == "stale"
    )
    sig.verify_stripe([STRIPE_NEW, STRIPE_OLD], header=header, body=BODY, now=NOW)
    assert _reason(lambda: sig.verify_stripe([STRIPE_NEW], header=header, body=BODY, now=NOW)) == "mismatch"
    # Stripe itself sends two v1 entries while the endpoint's secret is being rolled.
    mac_new = sig.sign_stripe(STRIPE_NEW, int(NOW), BODY).split("v1=")[1]
    sig.verify_stripe([STRIPE_NEW], header=f"{header},v1={mac_new}", body=BODY, now=NOW)
    assert _reason(lambda: sig.verify_stripe([STRIPE_OLD], header="v1=00", body=BODY, now=NOW)) == "malformed"
    assert _reason(lambda: sig.verify_stripe([STRIPE_OLD], header=None, body=BODY, now=NOW)) == "missing"


# --- Shopify, GitHub, Intercom ---------------------------------------------------------------------


def _b64_hmac(key: str, data: bytes, algo: str = "sha256") -> str:
    return base64.b64encode(hmac.new(key.encode(), data, algo).digest()).decode()


def _hex_hmac(key: str, data: bytes, algo: str = "sha256") -> str:
    return hmac.new(key.encode(), data, algo).hexdigest()


@pytest.mark.parametrize(
    ("sign", "verify", "recipe"),
    [
        (sig.sign_shopify, sig.verify_shopify, lambda k, b: _b64_hmac(k, b)),
        (sig.sign_github, sig.verify_github, lambda k, b: "sha256=" + _hex_hmac(k, b)),
        (sig.sign_intercom, sig.verify_intercom, lambda k, b: "sha1=" + _hex_hmac(k, b, "sha1")),
    ],
    ids=["shopify", "github", "intercom"],
)
def test_body_only_schemes(
    sign: Callable[[str, bytes], str],
    verify: Callable[..., None],
    recipe: Callable[[str, bytes], str],
) -> None:
    old, new = "secret-old", "secret-new"
    value = recipe(old, BODY)
    assert sign(old, BODY) == value
    verify([old], signature=value, body=BODY)
    verify([new, old], signature=value, body=BODY)
    assert _reason(lambda: verify([new], signature=value, body=BODY)) == "mismatch"
    assert _reason(lambda: verify([old], signature=value, body=BODY[:-1])) == "mismatch"
    assert _reason(lambda: verify([old], signature=None, body=BODY)) == "missing"
    assert _reason(lambda: verify([old], signature="sha512=zz", body=BODY)) == "malformed"


# --- Slack -----------------------------------------------------------------------------------------


def test_slack_published_recipe_tampered_stale_rotated() -> None:
    ts = int(NOW)
    expected = "v0=" + _hex_hmac("slack-old", f"v0:{ts}:".encode() + BODY)
    assert sig.sign_slack("slack-old", ts, BODY) == expected

    def verify(keys: list[str], body: bytes = BODY, now: float = NOW, t: str = str(ts)) -> None:
        sig.verify_slack(keys, signature=expected, timestamp=t, body=body, now=now)

    verify(["slack-old"])
    verify(["slack-new", "slack-old"])
    assert _reason(lambda: verify(["slack-new"])) == "mismatch"
    assert _reason(lambda: verify(["slack-old"], body=b"{}")) == "mismatch"
    assert _reason(lambda: verify(["slack-old"], t=str(ts + 1), now=NOW)) == "mismatch"
    assert _reason(lambda: verify(["slack-old"], now=NOW + 600)) == "stale"


# --- HubSpot v3 ------------------------------------------------------------------------------------

HS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HS_BODY = b'[{"eventId":1,"subscriptionType":"ticket.propertyChange","objectId":123}]'
HS_URI = "https://hooks.example.com/v1/webhooks/acme/hubspot?portal=62515"


def _hubspot_recipe(secret: str, method: str, uri: str, body: bytes, ts: str) -> str:
    # HubSpot's published recipe (and its Python SDK's get_signature): method + uri + body + timestamp.
    return _b64_hmac(secret, f"{method}{uri}{body.decode()}{ts}".encode())


def test_hubspot_v3_published_recipe_valid_and_rotated() -> None:
    ts_ms = int(NOW * 1000)
    value = _hubspot_recipe(HS_SECRET, "POST", HS_URI, HS_BODY, str(ts_ms))
    assert (
        sig.sign_hubspot_v3(HS_SECRET, method="POST", uri=HS_URI, body=HS_BODY, timestamp_ms=ts_ms) == value
    )
    kwargs = {"signature": value, "timestamp": str(ts_ms), "method": "POST", "uri": HS_URI, "body": HS_BODY}
    sig.verify_hubspot_v3([HS_SECRET], now=NOW, **kwargs)  # type: ignore[arg-type]
    sig.verify_hubspot_v3(["new-secret", HS_SECRET], now=NOW, **kwargs)  # type: ignore[arg-type]
    assert _reason(lambda: sig.verify_hubspot_v3(["new-secret"], now=NOW, **kwargs)) == "mismatch"  # type: ignore[arg-type]


def test_hubspot_v3_tampered_stale_and_wrong_uri() -> None:
    ts_ms = int(NOW * 1000)
    headers = sig.hubspot_v3_headers(HS_SECRET, method="POST", uri=HS_URI, body=HS_BODY, timestamp_ms=ts_ms)

    def verify(uri: str = HS_URI, body: bytes = HS_BODY, now: float = NOW, method: str = "POST") -> None:
        sig.verify_hubspot_v3(
            [HS_SECRET],
            signature=headers["X-HubSpot-Signature-v3"],
            timestamp=headers["X-HubSpot-Request-Timestamp"],
            method=method,
            uri=uri,
            body=body,
            now=now,
        )

    verify()
    assert _reason(lambda: verify(body=HS_BODY.replace(b"123", b"124"))) == "mismatch"
    assert _reason(lambda: verify(uri=HS_URI.replace("https", "http"))) == "mismatch"
    assert _reason(lambda: verify(uri=HS_URI.replace("acme", "other"))) == "mismatch"
    assert _reason(lambda: verify(uri=HS_URI + "&x=1")) == "mismatch"
    assert _reason(lambda: verify(method="PUT")) == "mismatch"
    assert _reason(lambda: verify(now=NOW + 301)) == "stale"
    assert _reason(lambda: verify(now=NOW - 301)) == "stale"


def test_hubspot_v3_uri_decoding_follows_hubspots_table() -> None:
    # HubSpot decodes these escapes before signing; others (here %20 and %3D) stay encoded.
    encoded = "https://h.example.com/p?email=jane%40example.com&cb=a%3Ab%2Fc%2C%28x%29%20y%3D"
    assert sig.hubspot_v3_uri(encoded) == "https://h.example.com/p?email=jane@example.com&cb=a:b/c,(x)%20y%3D"
    ts_ms = int(NOW * 1000)
    # HubSpot signed the decoded form; we receive the encoded one: it must verify.
    value = _hubspot_recipe(HS_SECRET, "POST", sig.hubspot_v3_uri(encoded), HS_BODY, str(ts_ms))
    sig.verify_hubspot_v3(
        [HS_SECRET], signature=value, timestamp=str(ts_ms), method="POST", uri=encoded, body=HS_BODY, now=NOW
    )
    # A '+' turned into a space by a form-decoding hop still verifies; base64 never has spaces.
    spaced = value.replace("+", " ")
    sig.verify_hubspot_v3(
        [HS_SECRET], signature=spaced, timestamp=str(ts_ms), method="POST", uri=encoded, body=HS_BODY, now=NOW
    )


def test_hubspot_v3_seconds_instead_of_milliseconds_is_stale() -> None:
    value = sig.sign_hubspot_v3(HS_SECRET, method="POST", uri=HS_URI, body=HS_BODY, timestamp_ms=int(NOW))
    assert (
        _reason(
            lambda: sig.verify_hubspot_v3(
                [HS_SECRET],
                signature=value,
                timestamp=str(int(NOW)),
                method="POST",
                uri=HS_URI,
                body=HS_BODY,
                now=NOW,
            )
        )
        == "stale"
    )


# --- generic HMAC ----------------------------------------------------------------------------------


def test_generic_hmac_body_only_hex() -> None:
    scheme = HmacScheme(header="X-Sig", prefix="sha256=")
    value = sig.sign_generic_hmac("k1", BODY, scheme=scheme)
    assert value == "sha256=" + _hex_hmac("k1", BODY)
    sig.verify_generic_hmac(["k2", "k1"], signature=value, timestamp=None, body=BODY, scheme=scheme, now=NOW)
    assert (
        _reason(
            lambda: sig.verify_generic_hmac(
                ["k2"], signature=value, timestamp=None, body=BODY, scheme=scheme, now=NOW
            )
        )
        == "mismatch"
    )
    assert (
        _reason(
            lambda: sig.verify_generic_hmac(
                ["k1"], signature=value[7:], timestamp=None, body=BODY, scheme=scheme, now=NOW
            )
        )
        == "malformed"
    )


def test_generic_hmac_with_timestamp_base64_sha512_ms() -> None:
    scheme = HmacScheme(
        header="X-Sig",
        encoding="base64",
        algorithm="sha512",
        timestamp_header="X-Ts",
        timestamp_unit="ms",
        signed_payload="{timestamp}.{body}",
    )
    ts = int(NOW * 1000)
    value = sig.sign_generic_hmac("k", BODY, scheme=scheme, timestamp=ts)
    assert (
        value == base64.b64encode(hmac.new(b"k", f"{ts}.".encode() + BODY, hashlib.sha512).digest()).decode()
    )

    def verify(t: str = str(ts), body: bytes = BODY, now: float = NOW) -> None:
        sig.verify_generic_hmac(["k"], signature=value, timestamp=t, body=body, scheme=scheme, now=now)

    verify()
    assert _reason(lambda: verify(t=str(ts + 1))) == "mismatch"
    assert _reason(lambda: verify(body=BODY + b"\n")) == "mismatch"
    assert _reason(lambda: verify(now=NOW + 400)) == "stale"
    assert _reason(lambda: verify(t="")) == "missing"


def test_generic_hmac_scheme_rejects_templates_that_cannot_work() -> None:
    with pytest.raises(ValueError, match=r"\{body\}"):
        HmacScheme(signed_payload="{timestamp}")
    with pytest.raises(ValueError, match="timestamp_header"):
        HmacScheme(signed_payload="{timestamp}.{body}")
    with pytest.raises(ValueError, match="only"):
        HmacScheme(signed_payload="{id}.{body}")


# --- by kind ---------------------------------------------------------------------------------------

SECRETS_BY_KIND = {
    "shopbotly": SW_OLD,
    "standard_webhooks": SW_NEW,
    "stripe": STRIPE_OLD,
    "shopify": "shpss_x",
    "github": "gh",
    "intercom": "ic",
    "slack": "sl",
    "hubspot": HS_SECRET,
    "generic_hmac": "gen",
}


@pytest.mark.parametrize("kind", sources.SIGNATURE_KINDS)
def test_sign_webhook_and_verify_webhook_agree_for_every_kind(kind: str) -> None:
    secret = SECRETS_BY_KIND[kind]
    headers = sources.sign_webhook(kind, secret, BODY, now=NOW, msg_id="evt_1", url=HS_URI)
    lower = {k.lower(): v for k, v in headers.items()}
    sources.verify_webhook(kind, [secret], lower, BODY, now=NOW, url=HS_URI)
    assert (
        _reason(lambda: sources.verify_webhook(kind, [secret], lower, BODY + b" ", now=NOW, url=HS_URI))
        == "mismatch"
    )
    assert _reason(lambda: sources.verify_webhook(kind, [secret], {}, BODY, now=NOW, url=HS_URI)) == "missing"


def test_unknown_kind_and_a_lone_string_of_secrets_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="unknown source kind"):
        sources.verify_webhook("paypal", ["x"], {}, BODY, now=NOW)
    with pytest.raises(TypeError):
        sig.verify_shopify("secret", signature="x", body=BODY)
