"""Read-side settings of a tenant: the upstream order API for read-through, and the bot webhook.

Owned by the order-reader service (read-through) and crm-writer (bot webhook delivery).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from shopbotly.common.config._base import SecretRef, StrictModel

__all__ = ["BotWebhookConfig", "OrderApiConfig"]


class OrderApiConfig(StrictModel):
    """Upstream order API used by the order-reader on a lookup miss (read-through).

    `{order_id}` in `url_template` is replaced by the percent-encoded order id. The upstream answers 200
    with order JSON (the fields of `shopbotly.order/1`; `tenant` may be left out, unknown fields are
    ignored), 404 or 410 for an unknown order. Found orders are kept `cache_ttl_s`, unknown ids
    `negative_ttl_s`; anything else (timeout, 5xx, invalid JSON) is an upstream failure, never cached.
    """

    url_template: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    token: SecretRef | None = None
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    negative_ttl_s: Annotated[float, Field(ge=0)] = 30.0
    cache_ttl_s: Annotated[float, Field(ge=0)] = 30.0

    @model_validator(mode="after")
    def _has_placeholder(self) -> OrderApiConfig:
        if self.url_template.count("{order_id}") != 1:
            raise ValueError(
                "url_template must contain {order_id} exactly once, e.g. https://shop.example/api/orders/{order_id}"
            )
        return self


class BotWebhookConfig(StrictModel):
    """Where CRM changes are pushed to the tenant's bot, signed with Standard Webhooks."""

    url: str
    secret: SecretRef
