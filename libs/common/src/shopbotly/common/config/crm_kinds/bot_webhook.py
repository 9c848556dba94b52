"""Signed notifications to a tenant's bot (Standard Webhooks): the reserved `bot` connection's options.

Its URL and secret are the tenant's `bot_webhook`; a connection named `bot` of this kind, if declared, only
sets the delivery limits.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from shopbotly.common.config._base import StrictModel
from shopbotly.common.config._connections import ConnectionConfig, FieldLimits

__all__ = ["BotWebhookConnection", "BotWebhookOptions"]


class BotWebhookOptions(StrictModel):
    """Options of the reserved `bot` connection (url and secret come from the tenant's `bot_webhook`)."""

    # `type` of a notification whose command has no event_type.
    default_type: str = "crm.notification"


class BotWebhookConnection(ConnectionConfig):
    """Limits of the reserved `bot` connection (no `base_url`: the tenant's `bot_webhook.url`)."""

    kind: Literal["bot_webhook"]
    options: BotWebhookOptions = Field(default_factory=BotWebhookOptions)

    title: ClassVar[str] = "bot webhook"
    max_batch_size: ClassVar[int] = 200  # one notification per request; the bound of every kind
    needs_base_url: ClassVar[bool] = False
    # The bot gets what the event had.
    field_limits: ClassVar[FieldLimits] = FieldLimits(per_field={}, default=None, body=None)
