"""A connection's TLS part: plain http only to loopback unless allowed, and a CA bundle read with a clear
error."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopbotly.common.config import ConfigError, TlsConfig, parse_config_text


def config(connection: str) -> str:
    return f"""
version: 1
tenants:
  acme:
    connections:
      crm:
        kind: hubspot
{connection}
"""


def test_plain_http_to_a_host_that_is_not_loopback_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config_text(config("        base_url: http://crm.internal.acme.com"), origin="shopbotly.yaml")
    message = str(refused.value)
    assert "shopbotly.yaml" in message and "tenants.acme.connections.crm" in message
    assert "http://crm.internal.acme.com is plain http" in message
    assert "https://" in message and "tls.allow_plain_http: true" in message


def test_a_token_url_in_plain_http_off_loopback_is_refused_too() -> None:
    auth = (
        "        base_url: https://crm.example.com\n"
        "        auth: {kind: oauth2_client_credentials, token_url: 'http://10.1.2.3/token', client_id: c,"
        " client_secret: {env: S}}"
    )
    with pytest.raises(ConfigError, match=r"auth\.token_url: http://10\.1\.2\.3/token is plain http"):
        parse_config_text(config(auth))


def test_plain_http_is_allowed_with_the_flag() -> None:
    cfg = parse_config_text(
        config(
            "        base_url: http://crm-emulator.shopbotly.svc:8090\n        tls: {allow_plain_http: true}"
        )
    )
    assert cfg.tenants["acme"].connections["crm"].tls.allow_plain_http


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8090",
        "http://127.9.8.7",
        "http://localhost:8090/api",
        "http://[::1]:8090",
        "https://x.io",
    ],
)
def test_loopback_and_https_need_no_flag(url: str) -> None:
    cfg = parse_config_text(config(f"        base_url: {url}"))
    assert cfg.tenants["acme"].connections["crm"].tls == TlsConfig()


def test_a_ca_bundle_that_is_not_a_pem_names_the_file(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"tls\.ca_bundle: .*ca\.pem cannot be read as a PEM CA bundle"):
        TlsConfig(ca_bundle=bundle).ssl_context()
    assert TlsConfig().ssl_context() is None  # the client's default trust


def test_the_documented_example_loads() -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    section = doc.read_text().split("## TLS to CRMs", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    connections = "\n".join("    " + line for line in block.splitlines())
    cfg = parse_config_text(f"version: 1\ntenants:\n  acme:\n{connections}\n")
    tls = cfg.tenants["acme"].connections["crm"].tls
    assert tls == TlsConfig(ca_bundle=Path("/etc/shopbotly/tls/acme-ca.pem"))
