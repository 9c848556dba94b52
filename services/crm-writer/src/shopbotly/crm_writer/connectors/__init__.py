"""CRM connectors, one module each behind one interface (`Connector`)."""

from __future__ import annotations

from shopbotly.common.config import BotWebhookConfig, ConnectionConfig
from shopbotly.common.errors import PermanentError
from shopbotly.crm_writer.connectors.base import Connector
from shopbotly.crm_writer.connectors.bot import BotConnector
from shopbotly.crm_writer.connectors.generic import GenericConnector
from shopbotly.crm_writer.connectors.hubspot import HubSpotConnector
from shopbotly.crm_writer.connectors.salesforce import SalesforceConnector
from shopbotly.crm_writer.runtime import ConnectionRuntime

__all__ = [
    "BotConnector",
    "Connector",
    "GenericConnector",
    "HubSpotConnector",
    "SalesforceConnector",
    "make_connector",
]


def make_connector(runtime: ConnectionRuntime, *, bot_webhook: BotWebhookConfig | None = None) -> Connector:
    config: ConnectionConfig = runtime.config
    if config.kind == "hubspot":
        return HubSpotConnector(runtime)
    if config.kind == "salesforce":
        return SalesforceConnector(runtime)
    if config.kind == "generic":
        return GenericConnector(runtime)
    if config.kind == "bot_webhook":
        if bot_webhook is None:
            raise PermanentError(f"connection {runtime.name} is a bot webhook but its tenant has none")
        return BotConnector(runtime, bot_webhook)
    raise PermanentError(f"connection {runtime.name} has kind {config.kind!r}, which no connector implements")
