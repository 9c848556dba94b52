"""The config loader: valid files load, invalid ones fail naming the file, field path and expectation."""

from pathlib import Path

import pytest

from shopbotly.common.config import ApiKey, SecretRef, json_schema, load_config, parse_config
from shopbotly.common.errors import ConfigError

pytestmark = pytest.mark.unit

VALID = """
tenants:
  demo:
    api_keys:
      - id: demo
        sha256: "{sha}"
    sources:
      shop:
        kind: shopify
        secrets: [{{env: SHOP_SECRET}}]
    connections:
      hubspot:
        kind: hubspot
        base_url: http://127.0.0.1:8090
        auth: {{kind: bearer, token: {{env: HUBSPOT_TOKEN}}}}
    mapping:
      default_connection: hubspot
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shopbotly.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID.format(sha=ApiKey.hash_key("k-secret"))))
    assert cfg.tenants["demo"].sources["shop"].kind == "shopify"
    assert cfg.tenant_for_api_key("k-secret") is not None
    assert cfg.tenant_for_api_key("k-other") is None


def test_error_names_file_path_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.format(sha=ApiKey.hash_key("k")).replace("kind: shopify", "kind: shopfy"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "tenants.demo.sources.shop: kind: " in message
    assert "unknown source kind 'shopfy'; known kinds: " in message and ", shopify, " in message


def test_inline_secret_is_refused(tmp_path: Path) -> None:
    text = VALID.format(sha=ApiKey.hash_key("k")).replace("[{env: SHOP_SECRET}]", "[hunter2]")
    with pytest.raises(ConfigError, match=r"sources\.shop\.secrets\.0: secrets are references") as err:
        load_config(write(tmp_path, text))
    assert "hunter2" not in str(err.value)


def test_unknown_connection_reference(tmp_path: Path) -> None:
    text = VALID.format(sha=ApiKey.hash_key("k")).replace(
        "default_connection: hubspot", "default_connection: sf"
    )
    with pytest.raises(ConfigError, match="connection 'sf' is not defined"):
        load_config(write(tmp_path, text))


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_config(write(tmp_path, "tenants:\n  demo: [unclosed\n"))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent/shopbotly.yaml")


def test_secret_ref_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_SECRET", "s3cret")
    assert SecretRef(env="SB_TEST_SECRET").resolve() == "s3cret"
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    assert SecretRef(file=secret_file).resolve() == "from-file"
    with pytest.raises(LookupError, match="env:SB_TEST_MISSING"):
        SecretRef(env="SB_TEST_MISSING").resolve()


def test_empty_config_is_valid_and_schema_exports() -> None:
    assert parse_config(None).tenants == {}
    schema = json_schema()
    assert '"tenants"' in schema and "SecretRef" in schema


def test_the_exported_schema_is_up_to_date() -> None:
    exported = Path(__file__).resolve().parents[3] / "config" / "shopbotly.schema.json"
    assert exported.read_text() == json_schema(), "config/shopbotly.schema.json is stale: run `make schema`"
