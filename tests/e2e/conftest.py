"""The end-to-end stack: the four services and the CRM emulator as processes on the test broker, with a topic
prefix, a tenants file, secrets and a bot receiver of this run's own. Started once per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from shopbotly.cli.demo_cmd import BotReceiver
from tests.e2e.e2e_stack import E2EStack
from tests.stack import (
    SERVICES,
    Stack,
    StackSecrets,
    create_topics,
    delete_topics,
    free_port,
    stack_env,
    tenants_yaml,
)

BOT_PATH = "/shopbotly/notifications"


@pytest.fixture(scope="module")
def e2e(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    root = tmp_path_factory.mktemp("e2e-stack")
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    ports = {name: free_port() for name in SERVICES}
    bot_port = free_port()
    secrets = StackSecrets()
    config = root / "tenants.yaml"
    # The emulator serves HTTPS with a CA of its own, the only one alpha's connection trusts.
    emulator_ca = root / "crm-emulator-ca.pem"
    config.write_text(
        tenants_yaml(
            secrets,
            emulator_port=ports["crm-emulator"],
            bot_url=f"http://127.0.0.1:{bot_port}{BOT_PATH}",
            emulator_ca=emulator_ca,
        )
    )
    env = {
        **stack_env(bootstrap=kafka_bootstrap, prefix=prefix, config=config),
        **secrets.env(),
        # The emulator, playing HubSpot, sends its signed ticket/contact webhooks to alpha's hubspot source.
        "SHOPBOTLY_EMULATOR_WEBHOOKS__URL": f"http://127.0.0.1:{ports['ingest']}/v1/webhooks/alpha/hubspot",
        "SHOPBOTLY_EMULATOR_WEBHOOKS__CLIENT_SECRET": secrets.hubspot_app,
        # Its Salesforce org sends outbound messages to alpha's salesforce source, the token in the URL as an
        # admin would enter it; re-sent after 0.2 s (not Salesforce's minutes) when not acknowledged.
        "SHOPBOTLY_EMULATOR_SALESFORCE_OUTBOUND__URL": (
            f"http://127.0.0.1:{ports['ingest']}/v1/webhooks/alpha/salesforce?token={secrets.salesforce_url_token}"
        ),
        "SHOPBOTLY_EMULATOR_SALESFORCE_OUTBOUND__RETRY_INITIAL_MS": "200",
        "SHOPBOTLY_EMULATOR_SALESFORCE_OUTBOUND__RETRY_MAX_MS": "2000",
    }
    create_topics(env)
    stack = Stack.create(root, env, ports=ports, emulator_ca=emulator_ca)
    bot = BotReceiver(secrets.bot_notify, bot_port, BOT_PATH)
    bot.start()
    try:
        stack.start()
        with (
            httpx.Client(base_url=stack["ingest"].url, timeout=10) as ingest,
            httpx.Client(base_url=stack["order-reader"].url, timeout=10) as reader,
            stack["crm-emulator"].client(timeout=10) as emulator,
        ):
            yield E2EStack(stack, bot, secrets, env, kafka_bootstrap, prefix, ingest, reader, emulator)
    finally:
        bot.stop()
        stack.stop()
        delete_topics(kafka_bootstrap, prefix)
