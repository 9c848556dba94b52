"""Delivery isolation through the whole stack: one failing destination never delays another.

Two tenants on one stack: `alpha` (HubSpot on one emulator, a bot webhook) and `beta` (HubSpot on a second
emulator: another portal). Leads come in through the Sync Lead API at a steady rate; each new alpha contact
makes the emulator send a lifecycle webhook, which becomes a bot notification. Then alpha's bot endpoint
goes down for two minutes, and alpha's CRM has an outage: the other destinations keep their latency, the
held work is delivered once afterwards, and nothing is dead-lettered.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import yaml

from shopbotly.cli.demo_cmd import BotReceiver
from shopbotly.common.topics import Topic
from tests.e2e.e2e_stack import E2EStack, unique
from tests.stack import (
    SERVICES,
    Service,
    Stack,
    StackSecrets,
    create_topics,
    delete_topics,
    free_port,
    gauge_values,
    run_cli,
    stack_env,
    tenants_yaml,
)

pytestmark = pytest.mark.e2e

BOT_PATH = "/shopbotly/notifications"
BOT_DOWN_S = 120
RATE_PER_S = 2.0


class _Isolation:
    def __init__(self, e2e: E2EStack, beta_emulator: Service) -> None:
        self.e2e = e2e
        self.beta = httpx.Client(base_url=beta_emulator.url, timeout=10)

    def send_leads(self, tenant: str, count: int, *, rate: float = RATE_PER_S) -> dict[str, float]:
        """Sync Leads at a steady rate; {email: time accepted}."""
        accepted: dict[str, float] = {}
        for i in range(count):
            email = f"{unique(f'{tenant}{i}')}@example.com"
            response = self.e2e.ingest.post(
                "/api/v1/leads", json={"email": email, "first_name": "Iso"}, headers=self.e2e.api_key(tenant)
            )
            assert response.status_code == 202, response.text
            accepted[email] = time.time()
            time.sleep(1 / rate)
        return accepted

    def latencies(self, emulator: httpx.Client, accepted: dict[str, float], timeout: float) -> list[float]:
        """Seconds from each lead's 202 to its creation in the CRM, once all are there."""

        def all_there() -> dict[str, Any] | None:
            response = emulator.get("/_emulator/state", params={"system": "hubspot"})
            records = response.json()["records"]["hubspot"]
            return records if all(e in records for e in accepted) else None

        records = self.e2e.stack.poll(all_there, timeout=timeout, what=f"{len(accepted)} leads in the CRM")
        return sorted(_created(records[e]) - t for e, t in accepted.items())


def _created(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["created_at"]).replace("Z", "+00:00")).timestamp()


def _p99(values: list[float]) -> float:
    return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


@pytest.fixture(scope="module")
def iso(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Isolation]:
    root = tmp_path_factory.mktemp("isolation-stack")
    prefix = f"iso{uuid.uuid4().hex[:8]}."
    ports = {name: free_port() for name in SERVICES}
    beta_port, bot_port = free_port(), free_port()
    secrets = StackSecrets()
    tenants = yaml.safe_load(
        tenants_yaml(
            secrets, emulator_port=ports["crm-emulator"], bot_url=f"http://127.0.0.1:{bot_port}{BOT_PATH}"
        )
    )
    beta = tenants["tenants"]["beta"]
    alpha_crm = tenants["tenants"]["alpha"]["connections"]["hubspot"]
    beta["connections"] = {"hubspot": dict(alpha_crm, base_url=f"http://127.0.0.1:{beta_port}")}
    beta["mapping"] = {"version": "iso", "default_connection": "hubspot", "presets": ["api"]}
    config = root / "tenants.yaml"
    config.write_text(yaml.safe_dump(tenants, sort_keys=False))
    env = {
        **stack_env(bootstrap=kafka_bootstrap, prefix=prefix, config=config),
        **secrets.env(),
        "SHOPBOTLY_EMULATOR_WEBHOOKS__URL": f"http://127.0.0.1:{ports['ingest']}/v1/webhooks/alpha/hubspot",
        "SHOPBOTLY_EMULATOR_WEBHOOKS__CLIENT_SECRET": secrets.hubspot_app,
    }
    create_topics(env)
    stack = Stack.create(root, env, ports=ports)
    # The second portal sends no webhooks (alpha's hubspot source is the first portal's).
    quiet = {
        k: v for k, v in stack["crm-emulator"].env.items() if not k.startswith("SHOPBOTLY_EMULATOR_WEBHOOKS")
    }
    second = Service(
        "crm-emulator-beta", SERVICES["crm-emulator"], beta_port, root / "beta", root / "beta.log", quiet
    )
    stack.services[second.name] = second
    bot = BotReceiver(secrets.bot_notify, bot_port, BOT_PATH)
    bot.start()
    try:
        stack.start()
        with (
            httpx.Client(base_url=stack["ingest"].url, timeout=10) as ingest,
            httpx.Client(base_url=stack["order-reader"].url, timeout=10) as reader,
            httpx.Client(base_url=stack["crm-emulator"].url, timeout=10) as emulator,
        ):
            e2e = E2EStack(stack, bot, secrets, env, kafka_bootstrap, prefix, ingest, reader, emulator)
            yield _Isolation(e2e, second)
    finally:
        bot.stop()
        stack.stop()
        delete_topics(kafka_bootstrap, prefix)


def _dead_letters(iso: _Isolation) -> list[Any]:
    return iso.e2e.topic(Topic.CRM_COMMANDS_DLQ)


def test_a_bot_endpoint_down_for_two_minutes_delays_no_crm_write(iso: _Isolation) -> None:
    e2e = iso.e2e
    up = iso.send_leads("alpha", 20)
    lat_up = iso.latencies(e2e.emulator, up, timeout=60)
    e2e.stack.poll(lambda: len(e2e.bot.received) >= len(up), timeout=60, what="a notification per lead")
    delivered_before = {n.webhook_id for n in e2e.bot.received}

    e2e.bot.stop()  # nothing listens on the bot URL now
    down = iso.send_leads("alpha", int(BOT_DOWN_S * RATE_PER_S))
    lat_down = iso.latencies(e2e.emulator, down, timeout=60)
    writer = e2e.stack["crm-writer"].metrics()
    held = sum(v for v in gauge_values(writer, "shopbotly_crm_writer_held_commands"))
    oldest = max(gauge_values(writer, "shopbotly_crm_writer_held_oldest_age_seconds"))
    # docs/operations.md#crm-held-back: what the operator runs (the writer's URL from the environment).
    env = {**e2e.env, "SHOPBOTLY_WRITER_URLS": e2e.stack["crm-writer"].url}
    table = run_cli("connections", "status", env=env)
    assert table.returncode == 0 and "alpha:bot" in table.stdout and "cannot connect" in table.stdout
    status = run_cli("connections", "status", "--json", env=env)
    rows = {r["connection"]: r for r in json.loads(status.stdout)["connections"]}
    assert rows["alpha:bot"]["held"] > 0 and rows["alpha:bot"]["circuit"] != "closed"
    assert rows["alpha:hubspot"]["circuit"] == "closed"
    e2e.bot.start()
    e2e.stack.poll(
        lambda: len(e2e.bot.received) >= len(up) + len(down),
        timeout=90,
        what="every held notification delivered after the bot endpoint came back",
    )
    time.sleep(2.0)  # a repeat would arrive now
    ids = [n.webhook_id for n in e2e.bot.received]
    print(
        f"\nbot down {BOT_DOWN_S} s: HubSpot p99 {_p99(lat_down):.3f} s (up: {_p99(lat_up):.3f} s), "
        f"{held:.0f} notifications held, oldest {oldest:.0f} s; "
        f"{len(ids) - len(delivered_before)} delivered after"
    )
    assert len(ids) == len(set(ids)) == len(up) + len(down)  # each once
    assert held > 0 and oldest > 0  # the held work was visible while it waited
    assert _p99(lat_down) <= max(2 * _p99(lat_up), 1.0)
    assert _dead_letters(iso) == []


def test_one_tenants_crm_outage_leaves_the_other_tenant_unaffected(iso: _Isolation) -> None:
    e2e = iso.e2e
    before = iso.send_leads("beta", 20)
    lat_before = iso.latencies(iso.beta, before, timeout=60)
    e2e.emulator.post("/_emulator/faults", json={"systems": ["hubspot"], "outage": True}).raise_for_status()
    try:
        alpha_during = iso.send_leads("alpha", 20, rate=4.0)
        beta_during = iso.send_leads("beta", 40)
        lat_during = iso.latencies(iso.beta, beta_during, timeout=60)
    finally:
        e2e.emulator.post(
            "/_emulator/faults", json={"systems": ["hubspot"], "clear": True}
        ).raise_for_status()
    iso.latencies(e2e.emulator, alpha_during, timeout=60)  # alpha's writes land once its CRM is back
    print(f"\nalpha's CRM down: beta p99 {_p99(lat_during):.3f} s (before: {_p99(lat_before):.3f} s)")
    assert _p99(lat_during) <= max(2 * _p99(lat_before), 1.0)
    assert _dead_letters(iso) == []
