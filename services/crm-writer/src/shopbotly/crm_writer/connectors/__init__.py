"""CRM connectors, one module per CRM kind behind one interface (`Connector`), found by kind.

Each `<kind>.py` declares `class XConnector(Connector[XOptions], kind="<kind>", schema=XSchema)` (or
`schema=None`); importing this package imports every module, so a new kind's connector is one module and no
list here changes.
"""

from __future__ import annotations

from typing import Any

from shopbotly.common.config import BotWebhookConfig
from shopbotly.common.registry import import_submodules
from shopbotly.crm_writer.connectors.base import Connector, connector_class, connector_kinds, schema_of
from shopbotly.crm_writer.runtime import ConnectionRuntime

__all__ = ["Connector", "connector_class", "connector_kinds", "make_connector", "schema_of"]

import_submodules(__name__, __path__)


def make_connector(
    runtime: ConnectionRuntime, *, bot_webhook: BotWebhookConfig | None = None
) -> Connector[Any]:
    """The connector of a connection, by its kind; PermanentError when the kind has none."""
    return connector_class(runtime.config.kind).create(runtime, bot_webhook=bot_webhook)
