"""`shopbotly connections check|setup` against the CRM emulator as a fresh HubSpot portal (nothing custom).

The emulator serves on a real port; the CLI runs in a worker thread (it calls asyncio.run itself).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import hubspot
import pytest
from hubspot.crm.properties import ApiException, PropertyCreate
from typer.testing import CliRunner, Result

from shopbotly.cli.app import app
from shopbotly.cli.connections_cmd import check_rows, plan_connections
from shopbotly.common.config import load_config
from shopbotly.common.config._mapping import PRESET_NAMES
from shopbotly.common.config.crm_kinds.hubspot import HubSpotOptions
from shopbotly.crm_emulator.hubspot_properties import standard_definitions
from shopbotly.crm_writer.schema import FetchedSchema
from shopbotly.crm_writer.schema.hubspot import (
    HubSpotSchema,
    hubspot_definition,
    owned_hubspot_properties,
)
from shopbotly.testkit.crm_emulator import served_emulators

TOKEN = "emulator-hubspot-token"
# A fresh portal: the standard schema only, nothing pre-provisioned.
FRESH = {"hubspot_custom_properties": [], "hubspot_unique_properties": {}}


def write_config(
    tmp_path: Path, base_url: str, *, presets: list[str], rules: str = "", api_version: str = "2026-03"
) -> Path:
    path = tmp_path / "shopbotly.yaml"
    path.write_text(
        f"""
tenants:
  acme:
    sources:
      shop: {{kind: shopify, secrets: [{{env: SB_TEST_SECRET}}]}}
    connections:
      hubspot:
        kind: hubspot
        base_url: {base_url}
        auth: {{kind: bearer, token: {{env: SB_TEST_HS_TOKEN}}}}
        options: {{api_version: "{api_version}"}}
    mapping:
      default_connection: hubspot
      presets: [{", ".join(presets)}]
      rules: {rules or "[]"}
"""
    )
    return path


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_HS_TOKEN", TOKEN)
    monkeypatch.setenv("SB_TEST_SECRET", "s3cret")
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line


@pytest.fixture
async def portal() -> AsyncIterator[str]:
    async with served_emulators() as start:
        yield await start(**FRESH)


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False)


def _rows(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if f" {status} " in line]


async def test_check_lists_what_a_fresh_portal_lacks_setup_creates_it_and_check_then_passes(
    portal: str, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, portal, presets=["shopbotly", "shopify", "stripe", "api"]))

    before = await cli("connections", "check", "--config", config)
    assert before.exit_code == 1, before.output
    missing = {
        name
        for name in (
            "shopbotly_tags",
            "shopbotly_command_id",
            "shopbotly_stripe_customer_id",
            "shopbotly_shopify_customer_id",
            "shopbotly_marketing_consent",
            "shopbotly_conversation_id",
            "shopbotly_last_message_at",
            "shopbotly_intent_score",
            "shopbotly_consent",
        )
        if any(name in line and "missing" in line for line in before.output.splitlines())
    }
    assert len(missing) == 9, before.output
    assert "firstname" in before.output and "ok" in before.output

    dry = await cli("connections", "setup", "--config", config)
    assert dry.exit_code == 0, dry.output
    assert "notes.shopbotly_command_id: create (string/text, unique values)" in dry.output
    assert "dry run:" in dry.output
    still = await cli("connections", "check", "--config", config)
    assert still.exit_code == 1  # a dry run wrote nothing

    applied = await cli("connections", "setup", "--config", config, "--apply")
    assert applied.exit_code == 0, applied.output
    assert "tickets.shopbotly_command_id: created (string/text, unique values)" in applied.output
    assert "contacts.shopbotly_stripe_customer_id: created" in applied.output

    again = await cli("connections", "setup", "--config", config, "--apply")
    assert again.exit_code == 0 and "created" not in again.output and "create " not in again.output
    assert "contacts.shopbotly_tags: exists" in again.output

    after = await cli("connections", "check", "--config", config)
    assert after.exit_code == 0, after.output
    assert "0 problem(s)" in after.output


@pytest.mark.parametrize(
    ("api_version", "family"), [("v3", "/crm/v3/properties/"), ("2026-09", "/crm/properties/{version}/")]
)
async def test_check_and_setup_read_and_write_the_properties_api_of_the_connections_version(
    portal: str, tmp_path: Path, api_version: str, family: str
) -> None:
    config = str(write_config(tmp_path, portal, presets=["shopbotly"], api_version=api_version))
    assert (await cli("connections", "check", "--config", config)).exit_code == 1
    applied = await cli("connections", "setup", "--config", config, "--apply")
    assert applied.exit_code == 0 and "tickets.shopbotly_command_id: created" in applied.output
    after = await cli("connections", "check", "--config", config)
    assert after.exit_code == 0 and "0 problem(s)" in after.output, after.output
    async with httpx.AsyncClient(base_url=portal) as client:
        counted = (await client.get("/_emulator/state")).json()["counters"]["by_endpoint"]
    used = {e.split(" ", 1)[1] for e in counted if "/properties" in e}
    assert used and all(e.startswith(family) for e in used), used
    assert {e.split(" ", 1)[0] for e in counted if "/properties" in e} == {"GET", "POST"}


async def test_check_finds_read_only_properties_bad_options_and_types(portal: str, tmp_path: Path) -> None:
    rules = """
        - id: own-rule
          types: [orders/create]
          identity: {expr: data.email, transforms: [email]}
          commands:
            - op: upsert_contact
              fields:
                lifecyclestage: {value: customerr}
                createdate: {value: "2024-01-01"}
                hs_lead_status:
                  expr: data.status
                  transforms: [{map: {values: {a: OPEN, b: WARM}, fallback: drop}}]
                firstname: {expr: data.name, transforms: [trim]}
            - op: create_ticket
              fields: {subject: {value: Help}, priority: {value: SOON}}
"""
    config = str(write_config(tmp_path, portal, presets=[], rules=rules))
    result = await cli("connections", "check", "--config", config)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()

    def status(name: str) -> str:
        [line] = [ln for ln in lines if f" {name} " in ln]
        return line

    assert "option" in status("lifecyclestage") and "customerr" in status("lifecyclestage")
    assert "read-only" in status("createdate")
    assert "option" in status("hs_lead_status") and "WARM" in status("hs_lead_status")
    assert "option" in status("hs_ticket_priority") and "SOON" in status("hs_ticket_priority")
    assert " ok " in status("firstname")


async def test_an_unknown_tenant_is_a_usage_error(portal: str, tmp_path: Path) -> None:
    config = str(write_config(tmp_path, portal, presets=[]))
    result = await cli("connections", "check", "--config", config, "--tenant", "nobody")
    assert result.exit_code == 2


# The presets of CRM event sources (hubspot, salesforce) never write to a CRM: they feed tickets and the bot.
@pytest.mark.parametrize("preset", [p for p in PRESET_NAMES if p not in ("hubspot", "salesforce")])
def test_every_preset_fits_a_fresh_portal_once_setup_ran(preset: str, tmp_path: Path) -> None:
    """Each property a preset writes is standard in a fresh portal or created by `connections setup`."""
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:1", presets=[preset]))
    [plan] = plan_connections(cfg)
    schema = FetchedSchema()
    for object_type, props in standard_definitions().items():
        schema.objects[object_type] = HubSpotSchema.parse({"results": list(props.values())})
    options = cfg.tenants["acme"].connections["hubspot"].options
    assert isinstance(options, HubSpotOptions)
    created = owned_hubspot_properties(options, plan.written)
    for prop in created:
        body = {**hubspot_definition(prop), "modificationMetadata": {"readOnlyValue": False}}
        schema.objects[prop.object_type].update(HubSpotSchema.parse({"results": [body]}))
    problems = [r for r in check_rows(plan, schema) if r.failed]
    assert problems == []
    assert plan.written, f"preset {preset} writes nothing through HubSpot"


async def test_the_official_hubspot_client_reads_and_creates_properties(portal: str) -> None:
    def calls() -> dict[str, Any]:
        client = hubspot.HubSpot(access_token=TOKEN, host=portal)
        props = client.crm.properties.core_api
        listed = props.get_all("contacts")
        lifecycle = props.get_by_name("contacts", "lifecyclestage")
        body = PropertyCreate(
            name="shopbotly_plan",
            label="Plan",
            type="string",
            field_type="text",
            group_name="contactinformation",
        )
        created = props.create("contacts", body)
        try:
            props.create("contacts", body)
        except ApiException as exc:
            conflict: Any = (exc.status, exc.body)
        try:
            props.get_by_name("contacts", "no_such_property")
        except ApiException as exc:
            missing: Any = exc.status
        return {
            "listed": listed,
            "lifecycle": lifecycle,
            "created": created,
            "conflict": conflict,
            "missing": missing,
        }

    got = await asyncio.to_thread(calls)
    names = {p.name for p in got["listed"].results}
    assert {"email", "firstname", "lifecyclestage"} <= names and not any(
        n.startswith("shopbotly_") for n in names
    )
    assert got["lifecycle"].type == "enumeration" and "lead" in {o.value for o in got["lifecycle"].options}
    assert got["lifecycle"].modification_metadata.read_only_value is False
    assert got["created"].name == "shopbotly_plan" and got["created"].hubspot_defined is False
    status, body = got["conflict"]
    assert status == 409 and '"category":"OBJECT_ALREADY_EXISTS"' in body.replace(" ", "")
    assert got["missing"] == 404


DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "crm-writer.md"
CONFIG = Path(__file__).resolve().parents[3] / "config" / "shopbotly.yaml"


def doc_commands() -> list[tuple[list[str], int]]:
    """The commands of the 'HubSpot one-time setup' example, with the exit code its comment promises."""
    section = DOC.read_text().split("#### HubSpot one-time setup", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        expected = 1 if "exit 1" in comment else 0
        out.append((shlex.split(command)[1:], expected))
    return out


async def test_the_documented_setup_runs_against_a_fresh_portal(
    portal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/services/crm-writer.md's example, with the shipped config pointed at a fresh emulator."""
    monkeypatch.setenv("DEMO_HUBSPOT_TOKEN", TOKEN)
    config = tmp_path / "shopbotly.yaml"
    # The shipped config reaches make up's emulator over HTTPS with its CA; this portal: plain http, loopback.
    shipped = CONFIG.read_text().replace("https://127.0.0.1:8090", portal)
    config.write_text(shipped.replace("tls: {ca_bundle: .run/tls/crm-emulator-ca.pem}", "tls: {}"))
    commands = doc_commands()
    assert len(commands) == 4
    for args, expected in commands:
        args = [str(config) if a == "config/shopbotly.yaml" else a for a in args]
        result = await cli(*args)
        assert result.exit_code == expected, (args, result.output)


async def test_a_kind_without_a_schema_is_not_checked_and_the_kinds_that_have_one_are_named(
    tmp_path: Path,
) -> None:
    config = tmp_path / "shopbotly.yaml"
    config.write_text(
        """
tenants:
  acme:
    connections:
      crm: {kind: generic, base_url: "http://127.0.0.1:1"}
    mapping: {default_connection: crm}
"""
    )
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["connections", "check", "--config", str(config)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "no connection to check: only kinds with a schema have one (hubspot, salesforce)" in result.output
    assert "0 properties checked" in result.output
