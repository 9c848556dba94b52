"""Fixtures for the live observability test: the stack as processes on topics of its own, and a real
Prometheus server (the Debian package's `prometheus` binary) scraping it with the repository's config."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shopbotly.common.kafka import KafkaSettings, make_admin
from shopbotly.common.topics import ensure_topics
from shopbotly.testkit.console import operators_json
from tests.stack import OPTIONAL_SERVICES, SERVICES, Stack, free_port

from .catalogue import PROMETHEUS_YML, RULES, load_yaml

TENANT = "acme"
HUBSPOT_TOKEN = "emulator-hubspot-token"  # the emulator's public default token
BOT_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a test-only Standard Webhooks key
PARTITIONS = 2


@dataclass(frozen=True)
class ObservedStack:
    stack: Stack
    api_key: str
    topic_prefix: str

    def url(self, service: str) -> str:
        return self.stack[service].url


@dataclass(frozen=True)
class Prometheus:
    url: str
    config: dict[str, Any]
    log_path: Path

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _tenants_yaml(emulator_port: int, api_key: str, emulator_ca: Path) -> str:
    config = {
        "version": 1,
        "tenants": {
            TENANT: {
                "api_keys": [
                    {
                        "id": "observability-test",
                        "sha256": hashlib.sha256(api_key.encode()).hexdigest(),
                        "scopes": ["leads", "orders", "tickets"],
                    }
                ],
                "sources": {
                    "shopbotly": {"kind": "shopbotly", "secrets": [{"env": "OBS_BOT_WEBHOOK_SECRET"}]},
                },
                "connections": {
                    "hubspot": {
                        "kind": "hubspot",
                        "base_url": f"https://127.0.0.1:{emulator_port}",
                        "auth": {"kind": "bearer", "token": {"env": "OBS_HUBSPOT_TOKEN"}},
                        "tls": {"ca_bundle": str(emulator_ca)},
                        "rate_limit": {"requests": 100, "per_seconds": 10},
                    }
                },
                "mapping": {"version": "1", "default_connection": "hubspot", "presets": ["shopbotly", "api"]},
            }
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


async def _topics(settings: KafkaSettings, *, create: bool) -> None:
    admin = make_admin(settings)
    await admin.start()
    try:
        if create:
            await ensure_topics(admin, settings.topics().values())
        else:
            await admin.delete_topics([spec.name for spec in settings.topics().values()])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def observed_stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedStack]:
    """ingest, mapper, crm-writer, order-reader, the console and the CRM emulator on topics of their own, all
    ready."""
    root = tmp_path_factory.mktemp("stack")
    prefix = f"obs{uuid.uuid4().hex[:10]}."
    api_key = f"sbk_obs_{uuid.uuid4().hex}"
    emulator_port = free_port()
    config = root / "tenants.yaml"
    # The emulator serves HTTPS, as in `make up` and compose (whose Prometheus scrape config this test runs).
    emulator_ca = root / "tls" / "crm-emulator-ca.pem"
    config.write_text(_tenants_yaml(emulator_port, api_key, emulator_ca))
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    asyncio.run(_topics(kafka, create=True))
    env = {
        "SHOPBOTLY_ENVIRONMENT": "test",
        "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SHOPBOTLY_KAFKA_TOPIC_PREFIX": prefix,
        "SHOPBOTLY_KAFKA_PARTITIONS": str(PARTITIONS),
        "SHOPBOTLY_CONFIG": str(config),
        "SHOPBOTLY_CONSUMER_GROUP": f"{prefix}crm-writer",
        "OBS_BOT_WEBHOOK_SECRET": BOT_SECRET,
        "OBS_HUBSPOT_TOKEN": HUBSPOT_TOKEN,
        "SHOPBOTLY_CONSOLE_OPERATORS": operators_json(),
    }
    stack = Stack.create(
        root,
        env,
        [*SERVICES, *OPTIONAL_SERVICES],
        ports={"crm-emulator": emulator_port},
        emulator_ca=emulator_ca,
    )
    try:
        stack.start(timeout=60)
        yield ObservedStack(stack, api_key, prefix)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        try:
            asyncio.run(_topics(kafka, create=False))
        except Exception as exc:  # unique names: leftovers are harmless
            print(f"topic cleanup failed: {exc!r}")


def scrape_config(observed: ObservedStack, own_port: int) -> dict[str, Any]:
    """deploy/observability/prometheus.yml with the compose targets (`pod:<port>`) pointed at the test stack.

    Targets are matched by their `service` label (job `prometheus` by name), so a target of the repository's
    configuration that the stack does not run fails here.
    """
    config: dict[str, Any] = load_yaml(PROMETHEUS_YML)
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            service = static.get("labels", {}).get("service")
            if job["job_name"] == "prometheus":
                static["targets"] = [f"127.0.0.1:{own_port}"]
                continue
            assert service in observed.stack.services, f"{job['job_name']}: the stack runs no {service!r}"
            assert len(static["targets"]) == 1, static
            static["targets"] = [f"127.0.0.1:{observed.stack[service].port}"]
    return config


@pytest.fixture(scope="module")
def prometheus(
    observed_stack: ObservedStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: install the Debian package (apt-get install -y prometheus)"
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = scrape_config(observed_stack, port)
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", config, log_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"prometheus exited with {proc.returncode}:\n{server.log()}"
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready after 20 s:\n{server.log()}"
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
