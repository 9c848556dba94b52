"""A self-hosted sender's HMAC: header, encoding, algorithm and signed payload come from the source's
`generic` options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopbotly.common import signatures as sig
from shopbotly.common.sources._base import (
    Delivery,
    ExtractionDefaults,
    InboundRequest,
    SourceKeys,
    WebhookSource,
)

if TYPE_CHECKING:
    from shopbotly.common.config._sources import SourceConfig

__all__ = ["SOURCES"]


class GenericHmac(WebhookSource):
    kind = "generic_hmac"
    scheme = (
        "an HMAC of the request in the configured header (algorithm, encoding and signed payload per source)"
    )
    options = frozenset({"generic"})
    defaults = ExtractionDefaults(
        "body.id || body.event_id",
        "body.type",
        "body.email || body.data.email || body.customer.email || body.contact.email",
        "body.customer_id || body.contact_id || body.customer.id || body.contact.id",
    )

    def prepare(self, config: SourceConfig) -> sig.HmacScheme:
        g: Any = getattr(config, "generic", None)  # the kind's own field (config._sources)
        if g is None:
            return sig.HmacScheme()
        return sig.HmacScheme(
            header=g.header,
            encoding=g.encoding,
            prefix=g.prefix,
            algorithm=g.algorithm,
            timestamp_header=g.timestamp_header,
            timestamp_unit=g.timestamp_unit,
            signed_payload=g.signed_payload,
        )

    def verify(self, keys: SourceKeys, request: InboundRequest, *, now: float) -> None:
        scheme = keys.options if isinstance(keys.options, sig.HmacScheme) else sig.HmacScheme()
        h = request.headers.get
        sig.verify_generic_hmac(
            keys.secrets,
            signature=h(scheme.header.lower()),
            timestamp=h(scheme.timestamp_header.lower()) if scheme.timestamp_header else None,
            body=request.body,
            scheme=scheme,
            now=now,
            tolerance_s=keys.tolerance_s,
        )

    def sign(self, d: Delivery) -> dict[str, str]:
        scheme = d.options if isinstance(d.options, sig.HmacScheme) else sig.HmacScheme()
        if scheme.timestamp_header is None:
            return {scheme.header: sig.sign_generic_hmac(d.secret, d.body, scheme=scheme)}
        ts = int(d.now * 1000) if scheme.timestamp_unit == "ms" else int(d.now)
        return {
            scheme.header: sig.sign_generic_hmac(d.secret, d.body, scheme=scheme, timestamp=ts),
            scheme.timestamp_header: str(ts),
        }


SOURCES = (GenericHmac(),)
