"""Read-side settings of a tenant: the upstream order API for read-through, and the bot webhook.

Owned by the order-reader service (read-through) and crm-writer (bot webhook delivery).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shopbotly.common.config._base import SecretRef, StrictModel

__all__ = ["BotWebhookConfig", "OrderApiConfig"]


class OrderApiConfig(StrictModel):
    """Upstream order API used on a lookup miss. `{order_id}` is substituted in the URL."""

    url_template: str
    token: SecretRef | None = None
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    negative_ttl_s: Annotated[float, Field(ge=0)] = 30.0


class BotWebhookConfig(StrictModel):
    """Where CRM changes are pushed to the tenant's bot, signed with Standard Webhooks."""

    url: str
    secret: SecretRef
