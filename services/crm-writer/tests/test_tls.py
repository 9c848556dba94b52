"""HTTPS to a CRM: the writer verifies the server's certificate against the connection's CA bundle (or the
system's CAs), and a certificate it cannot trust is an auth failure: the bundle is read once more, then the
write is dead-lettered. It never holds or retries the partition for ever."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from shopbotly.common.config import parse_config, parse_connection
from shopbotly.common.errors import AuthError
from shopbotly.common.events import CommandOp, CrmCommand, decode_headers
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_emulator.tls import ServerTls, prepare_tls
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.clients import HttpClients
from shopbotly.crm_writer.connectors import make_connector
from shopbotly.crm_writer.delivery import Deliverer, Delivery
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.engine import Writer
from shopbotly.crm_writer.routing import Route
from shopbotly.crm_writer.runtime import BreakerSettings, ConnectionRuntime
from shopbotly.testkit import crm_writer as kit
from shopbotly.testkit.crm_emulator import HUBSPOT, serve


@pytest.fixture
async def https_crm(tmp_path: Path) -> AsyncIterator[tuple[str, ServerTls]]:
    tls = prepare_tls(tmp_path / "emulator" / "ca.pem", "127.0.0.1", [])
    server, task, port = await serve(create_app(EmulatorSettings(seed=7)), tls=tls)
    try:
        yield f"https://127.0.0.1:{port}", tls
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def clients(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HttpClients]:
    monkeypatch.setenv("SB_TLS_TOKEN", HUBSPOT["Authorization"].removeprefix("Bearer "))
    made = HttpClients(limits=httpx.Limits())
    yield made
    await made.aclose()


def _route(clients: HttpClients, base_url: str, ca_bundle: Path | None) -> Route:
    conn = parse_connection(
        {
            "kind": "hubspot",
            "base_url": base_url,
            "auth": {"kind": "bearer", "token": {"env": "SB_TLS_TOKEN"}},
            "tls": {"ca_bundle": str(ca_bundle)} if ca_bundle else {},
            "max_attempts": 5,
        }
    )
    runtime = ConnectionRuntime(
        "t:hs",
        conn,
        clients.for_connection(conn),
        breaker=BreakerSettings(),
        reload_trust=lambda: clients.reload_trust(conn),
    )
    return Route(runtime, make_connector(runtime))


def _command(email: str, connection: str = "hs") -> CrmCommand:
    return CrmCommand(
        command_id=f"c-{connection}-{email}",
        tenant="t",
        connection=connection,
        identity=email,
        op=CommandOp.UPSERT_CONTACT,
        fields={"email": email, "firstname": "Ada"},
        causation_event_id="e",
        rule_id="r",
        mapping_version="1",
    )


async def _upsert(route: Route, email: str) -> Delivery:
    write = Write(WriteKind.CONTACT, "t", "hs", email)
    write.absorb(_command(email), 0)
    deliverer = Deliverer(
        retry_base_s=0.001, retry_cap_s=0.002, throttle_outage_after=50, rng=random.Random(1)
    )
    return await deliverer.deliver(route, write, partition=0)


async def _contacts(url: str, tls: ServerTls) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=url, verify=ssl.create_default_context(cafile=tls.ca_path)
    ) as admin:
        state = (await admin.get("/_emulator/state", params={"system": "hubspot"})).json()
    return dict(state["records"].get("hubspot", {}))


async def test_with_the_ca_bundle_the_write_lands(
    https_crm: tuple[str, ServerTls], clients: HttpClients
) -> None:
    url, tls = https_crm
    delivery = await _upsert(_route(clients, url, tls.ca_path), "ada@example.com")
    assert delivery.ok, delivery.error
    assert (await _contacts(url, tls))["ada@example.com"]["properties"]["firstname"] == "Ada"


async def test_an_untrusted_certificate_is_an_auth_failure_dead_lettered_after_one_try(
    https_crm: tuple[str, ServerTls], clients: HttpClients
) -> None:
    url, tls = https_crm
    route = _route(clients, url, None)  # the system's CAs do not know the emulator's
    delivery = await _upsert(route, "eve@example.com")
    assert not delivery.ok and delivery.tries == 1
    assert isinstance(delivery.error, AuthError)
    assert "is not trusted" in str(delivery.error) and "tls.ca_bundle" in str(delivery.error)
    assert route.runtime.circuit_state is CircuitState.CLOSED  # not an outage: nothing is held back
    assert "eve@example.com" not in await _contacts(url, tls)


async def test_a_ca_bundle_rotated_on_disk_is_read_again_once(
    https_crm: tuple[str, ServerTls], clients: HttpClients, tmp_path: Path
) -> None:
    url, tls = https_crm
    bundle = tmp_path / "bundle.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))  # another CA: the emulator's is not in it yet
    route = _route(clients, url, bundle)
    bundle.write_bytes(tls.ca_path.read_bytes())  # the operator puts the right CA in place
    delivery = await _upsert(route, "rot@example.com")
    assert delivery.ok and delivery.tries == 1  # the refused handshake re-read the bundle and sent again


async def test_a_ca_bundle_that_cannot_be_read_names_the_file(clients: HttpClients, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ValueError, match=r"tls\.ca_bundle: .*nowhere\.pem cannot be read"):
        _route(clients, "https://127.0.0.1:1", missing)


@pytest.mark.integration
async def test_the_writer_dead_letters_an_untrusted_connections_writes_and_applies_the_trusted_ones(
    https_crm: tuple[str, ServerTls], kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Kafka, the real HTTPS emulator: a connection without the CA never holds its partition (its writes
    end in the DLQ as `auth` after one try each), and the connection with the CA beside it is applied."""
    url, tls = https_crm
    monkeypatch.setenv("SB_TLS_TOKEN", HUBSPOT["Authorization"].removeprefix("Bearer "))
    auth = {"kind": "bearer", "token": {"env": "SB_TLS_TOKEN"}}
    config = parse_config(
        {
            "tenants": {
                "t": {
                    "connections": {
                        "trusted": {
                            "kind": "hubspot",
                            "base_url": url,
                            "auth": auth,
                            "tls": {"ca_bundle": str(tls.ca_path)},
                        },
                        "untrusted": {"kind": "hubspot", "base_url": url, "auth": auth, "max_attempts": 8},
                    }
                }
            }
        }
    )
    emails = [f"p{i}@example.com" for i in range(10)]
    commands = [_command(e, c) for e in emails for c in ("trusted", "untrusted")]
    await kit.produce(kafka_settings, [kit.command_record(c) for c in commands])
    async with (
        kit.TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_RESULTS)) as results,
        kit.TopicReader(kafka_settings, kafka_settings.topic(Topic.CRM_COMMANDS_DLQ)) as dlq,
        kit.running(Writer(kit.settings_for(kafka_settings), config)),
    ):
        await results.wait_for(kit.count_results(len(commands)), timeout_s=60)
        await dlq.wait_for(lambda records: len(records) >= len(emails), timeout_s=10)
    outcome = kit.results_of(results)
    assert {outcome[c.command_id].outcome.value for c in commands if c.connection == "trusted"} == {"applied"}
    assert {outcome[c.command_id].outcome.value for c in commands if c.connection == "untrusted"} == {
        "dead_lettered"
    }
    for record in dlq.records:
        headers = decode_headers(record.headers)
        assert headers["error.class"] == "auth" and headers["error.attempts"] == "1"
        assert "is not trusted" in headers["error.message"]
    assert set(emails) <= set(await _contacts(url, tls))
