"""CRM emulator: HubSpot, Salesforce and generic REST endpoints for tests and the demo."""
