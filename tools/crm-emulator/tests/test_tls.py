"""The emulator over HTTPS: its own local CA, reused after a restart, trusted by the official SDKs as they are
(simple-salesforce builds https URLs whatever it is given; hubspot-api-client takes a CA bundle)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hubspot
import pytest
import requests
from cryptography import x509
from simple_salesforce import Salesforce

from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_emulator.__main__ import main
from shopbotly.crm_emulator.tls import ServerTls, certificate_names, prepare_tls
from shopbotly.testkit.crm_emulator import serve


@pytest.fixture
async def https_emulator(tmp_path: Path) -> AsyncIterator[tuple[str, ServerTls]]:
    tls = prepare_tls(tmp_path / "ca.pem", "127.0.0.1", [])
    server, task, port = await serve(create_app(EmulatorSettings()), tls=tls)
    try:
        yield f"https://127.0.0.1:{port}", tls
    finally:
        server.should_exit = True
        await task


def test_the_ca_is_made_once_and_reused_and_the_certificate_names_the_hosts(tmp_path: Path) -> None:
    first = prepare_tls(tmp_path / "tls" / "ca.pem", "0.0.0.0", ["crm-emulator"])
    ca_pem = first.ca_path.read_bytes()
    assert (tmp_path / "tls" / "ca.pem.key").stat().st_mode & 0o077 == 0
    second = prepare_tls(first.ca_path, "0.0.0.0", ["crm-emulator"])
    assert second.ca_path.read_bytes() == ca_pem  # clients that loaded it still trust a restarted emulator
    leaf = x509.load_pem_x509_certificates(second.chain.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))]
    assert sorted(names) == sorted(["localhost", "127.0.0.1", "::1", "crm-emulator"])
    assert certificate_names("10.0.0.5", ["10.0.0.5"]) == ["localhost", "127.0.0.1", "::1", "10.0.0.5"]


def test_tls_without_a_place_for_the_ca_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SHOPBOTLY_DATA_DIR", raising=False)
    monkeypatch.delenv("SHOPBOTLY_EMULATOR_TLS_CA_PATH", raising=False)
    with pytest.raises(SystemExit):
        main(["--tls", "--port", "0"])
    assert "SHOPBOTLY_EMULATOR_TLS_CA_PATH" in capsys.readouterr().err


async def test_simple_salesforce_unmodified_against_the_https_emulator(
    https_emulator: tuple[str, ServerTls], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, tls = https_emulator
    # The CA as any requests user trusts one: no session or URL patching.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_path))

    def calls() -> dict[str, Any]:
        token = requests.post(
            f"{url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "emulator-sf-client",
                "client_secret": "emulator-sf-secret",
            },
            timeout=10,
        ).json()
        # The token's instance_url, as simple-salesforce's users pass it (it keeps host and port and builds
        # https URLs whatever the scheme was: the emulator must speak https to be reachable at all).
        assert token["instance_url"] == url
        sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"])
        created = sf.Contact.create({"LastName": "Lovelace", "Email": "ada@example.com"})
        return {"created": created, "read": sf.Contact.get(created["id"])}

    got = await asyncio.to_thread(calls)
    assert got["created"]["success"] is True
    assert got["read"]["LastName"] == "Lovelace" and got["read"]["Email"] == "ada@example.com"


async def test_hubspot_api_client_trusts_the_emulator_with_its_ca_bundle(
    https_emulator: tuple[str, ServerTls],
) -> None:
    url, tls = https_emulator

    def calls() -> tuple[Any, str]:
        client = hubspot.HubSpot(
            access_token="emulator-hubspot-token",
            host=url,
            ssl_ca_cert=str(tls.ca_path),
        )
        lifecycle = client.crm.properties.core_api.get_by_name("contacts", "lifecyclestage")
        untrusting = hubspot.HubSpot(access_token="emulator-hubspot-token", host=url)
        try:
            untrusting.crm.properties.core_api.get_by_name("contacts", "lifecyclestage")
        except Exception as exc:  # urllib3's MaxRetryError wrapping the SSL error
            return lifecycle, repr(exc)
        return lifecycle, "trusted without the CA"

    lifecycle, refused = await asyncio.to_thread(calls)
    assert lifecycle.name == "lifecyclestage"
    assert "CERTIFICATE_VERIFY_FAILED" in refused
