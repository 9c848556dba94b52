"""CRM emulator: HubSpot, Salesforce and generic REST endpoints for tests and the demo.

`create_app(settings)` builds the FastAPI app (no side effects at import); `EmulatorSettings` reads
`SHOPBOTLY_EMULATOR_*`. See docs/services/crm-emulator.md.
"""

from shopbotly.crm_emulator.app import create_app, runtime_of
from shopbotly.crm_emulator.settings import EmulatorSettings, OAuthClient, WebhookSettings

__all__ = ["EmulatorSettings", "OAuthClient", "WebhookSettings", "create_app", "runtime_of"]
