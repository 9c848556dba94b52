"""`shopbotly connections check|setup` against the CRM emulator as a fresh Salesforce org (standard fields
only), and simple-salesforce (the official-style Python client) reading the emulator's describe over HTTPS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from simple_salesforce import Salesforce, SalesforceResourceNotFound
from typer.testing import CliRunner, Result

from shopbotly.cli.app import app
from shopbotly.cli.connections_cmd import check_rows, plan_connections
from shopbotly.common.config import load_config
from shopbotly.common.config._mapping import PRESET_NAMES
from shopbotly.common.config.crm_kinds.salesforce import SalesforceOptions
from shopbotly.crm_emulator import EmulatorSettings, create_app
from shopbotly.crm_emulator.salesforce_describe import standard_fields
from shopbotly.crm_emulator.salesforce_tooling import field_from_metadata
from shopbotly.crm_emulator.tls import prepare_tls
from shopbotly.crm_writer.schema import FetchedSchema
from shopbotly.crm_writer.schema.salesforce import (
    SalesforceSchema,
    owned_salesforce_fields,
    salesforce_definition,
)
from shopbotly.testkit.crm_emulator import free_port, serve, served_emulators

CLIENT_ID, CLIENT_SECRET = "emulator-sf-client", "emulator-sf-secret"
# What an admin creates in Setup for ShopBotly (`connections setup` says so); a fresh org has none of it.
SET_UP = {
    "salesforce_custom_fields": {
        sobject: [{"name": "ShopBotly_Email__c", "external_id": True, "unique": True}]
        for sobject in ("Lead", "Contact")
    }
}

Org = Callable[..., Awaitable[str]]


def write_config(
    tmp_path: Path, base_url: str, *, presets: list[str], options: str = "{}", tls: str = "{}"
) -> Path:
    path = tmp_path / "shopbotly.yaml"
    path.write_text(
        f"""
tenants:
  acme:
    sources:
      shop: {{kind: shopify, secrets: [{{env: SB_TEST_SECRET}}]}}
    connections:
      sf:
        kind: salesforce
        base_url: {base_url}
        auth:
          kind: oauth2_client_credentials
          token_url: {base_url}/services/oauth2/token
          client_id: {CLIENT_ID}
          client_secret: {{env: SB_TEST_SF_SECRET}}
        tls: {tls}
        options: {options}
    mapping:
      default_connection: sf
      presets: [{", ".join(presets)}]
"""
    )
    return path


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_SF_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SB_TEST_SECRET", "s3cret")
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line


@pytest.fixture
async def org() -> AsyncIterator[Org]:
    """Start emulated orgs (each on its own port) with setting overrides; all stop after the test."""
    async with served_emulators() as start:
        yield start


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), catch_exceptions=False)


def row(output: str, sobject: str, name: str) -> str:
    [line] = [ln for ln in output.splitlines() if f" {sobject} " in ln and f" {name} " in ln]
    return line


async def test_check_on_a_fresh_org_lists_the_missing_external_id_setup_creates_it_and_check_then_passes(
    org: Org, tmp_path: Path
) -> None:
    fresh = await org()
    config = str(write_config(tmp_path, fresh, presets=["shopbotly", "shopify", "api"]))

    before = await cli("connections", "check", "--config", config)
    assert before.exit_code == 1, before.output
    for sobject in ("Lead", "Contact"):
        assert " missing " in row(before.output, sobject, "ShopBotly_Email__c")
        assert "`shopbotly connections setup --apply` creates it" in row(
            before.output, sobject, "ShopBotly_Email__c"
        )
        for name in ("Email", "FirstName", "LastName", "Phone"):
            assert " ok " in row(before.output, sobject, name), before.output
    for name in ("Subject", "Description", "WhoId", "Status"):
        assert " ok " in row(before.output, "Task", name)
    for name in ("Subject", "Description", "ContactId", "Origin", "Priority"):
        assert " ok " in row(before.output, "Case", name)
    assert "2 problem(s)" in before.output

    dry = await cli("connections", "setup", "--config", config)
    assert dry.exit_code == 0, dry.output
    assert (
        "acme:sf  Lead.ShopBotly_Email__c: create (Setup > Object Manager > Lead > Fields & "
        "Relationships > New: Text(255), Field Name ShopBotly_Email, External ID, Unique)"
    ) in dry.output
    assert "Contact.ShopBotly_Email__c: create" in dry.output and "dry run: 2 to create" in dry.output

    applied = await cli("connections", "setup", "--config", config, "--apply")
    assert applied.exit_code == 0, applied.output
    assert "Lead.ShopBotly_Email__c: created (Tooling API" in applied.output
    assert "Contact.ShopBotly_Email__c: created (Tooling API" in applied.output

    after = await cli("connections", "check", "--config", config)
    assert after.exit_code == 0, after.output
    assert " ok " in row(after.output, "Lead", "ShopBotly_Email__c")
    assert "0 problem(s)" in after.output
    again = await cli("connections", "setup", "--config", config, "--apply")
    assert again.exit_code == 0, again.output
    assert "Lead.ShopBotly_Email__c: exists" in again.output and "created" not in again.output

    # An org where an admin created the field in Setup instead: setup finds it.
    set_up = await org(**SET_UP)
    config = str(write_config(tmp_path, set_up, presets=["shopbotly", "shopify", "api"]))
    assert (await cli("connections", "check", "--config", config)).exit_code == 0


async def test_setup_waits_for_an_org_that_is_not_up_yet(org: Org, tmp_path: Path) -> None:
    port = free_port()
    config = str(write_config(tmp_path, f"http://127.0.0.1:{port}", presets=["api"]))
    unreachable = await cli("connections", "setup", "--config", config, "--apply")
    assert unreachable.exit_code == 1 and "failed" in unreachable.output

    async def start_later() -> tuple[uvicorn.Server, asyncio.Task[None], int]:
        await asyncio.sleep(1.5)
        return await serve(create_app(EmulatorSettings(port=port)), port)

    later = asyncio.create_task(start_later())
    waited = await cli("connections", "setup", "--config", config, "--apply", "--wait", "60")
    server, task, _ = await later
    server.should_exit = True
    await task
    assert waited.exit_code == 0, waited.output
    assert "Contact.ShopBotly_Email__c: created" in waited.output


async def test_check_reads_salesforce_types_read_only_fields_and_custom_fields(
    org: Org, tmp_path: Path
) -> None:
    """Field maps onto a read-only field (Name), an int field fed text, and a tags field the org lacks."""
    url = await org(**SET_UP)
    options = (
        "{tags_field: ShopBotly_Tags__c, "
        "lead_field_map: {email: Email, lastname: LastName, company: NumberOfEmployees, firstname: Name}}"
    )
    config = str(write_config(tmp_path, url, presets=["api"], options=options))
    result = await cli("connections", "check", "--config", config)
    assert result.exit_code == 1, result.output
    assert " read-only " in row(result.output, "Lead", "Name")
    assert " missing " in row(result.output, "Contact", "ShopBotly_Tags__c")
    assert "setup --apply` creates it" in row(result.output, "Contact", "ShopBotly_Tags__c")
    assert " ok " in row(result.output, "Lead", "LastName")

    dry = await cli("connections", "setup", "--config", config)
    assert "New: Picklist (Multi-Select), Field Name ShopBotly_Tags" in dry.output
    assert "create it in Setup" not in result.output

    tags = {"name": "ShopBotly_Tags__c", "type": "multipicklist", "picklist_values": ["vip"]}
    with_tags = await org(
        salesforce_custom_fields={
            "Lead": SET_UP["salesforce_custom_fields"]["Lead"],
            "Contact": [*SET_UP["salesforce_custom_fields"]["Contact"], tags],
        }
    )
    config = str(write_config(tmp_path, with_tags, presets=["api"], options=options))
    result = await cli("connections", "check", "--config", config)
    assert " ok " in row(result.output, "Contact", "ShopBotly_Tags__c")


SETUP_OPTIONS = "{tags_field: ShopBotly_Tags__c, ticket_external_id_field: ShopBotly_Command_Id__c}"


@pytest.mark.parametrize("options", ["{}", SETUP_OPTIONS])
# The presets of CRM event sources (hubspot, salesforce) never write to a CRM: they feed tickets and the bot.
@pytest.mark.parametrize("preset", [p for p in PRESET_NAMES if p not in ("hubspot", "salesforce")])
def test_every_preset_fits_a_fresh_org_once_setup_ran(preset: str, options: str, tmp_path: Path) -> None:
    """Each field a preset writes to Salesforce is standard in a fresh org or created by `connections setup`
    (its Tooling API definitions, read by the emulator's own parser); tags go to `tags_field` or are dropped;
    a preset that creates Leads sends a Company."""
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:1", presets=[preset], options=options))
    [plan] = plan_connections(cfg)
    schema = FetchedSchema()
    for sobject, fields in standard_fields().items():
        schema.objects[sobject] = SalesforceSchema.parse({"fields": fields})
    sent = [key for key, w in plan.written.items() if w.target.not_sent is None]
    options = cfg.tenants["acme"].connections["sf"].options
    assert isinstance(options, SalesforceOptions)
    for prop in owned_salesforce_fields(options, sent):
        sobject, described = field_from_metadata(salesforce_definition(prop))
        schema.objects[sobject].update(SalesforceSchema.parse({"fields": [described]}))
    rows = check_rows(plan, schema)
    assert [r for r in rows if r.failed] == []
    assert plan.written, f"preset {preset} writes nothing through Salesforce"
    leads = {name for sobject, name in plan.written if sobject == "Lead"}
    if leads:
        assert {"LastName", "Company"} <= leads, f"preset {preset}: a new Lead needs LastName and Company"
    tags = [r for r in rows if r.name == "(tags)"]
    assert all(r.status == "not sent" and "dropped" in r.detail for r in tags)
    if options == "{}" and preset in ("shopbotly", "shopify", "api"):
        assert tags, f"preset {preset} tags contacts: check must say the tags are dropped"


# -- simple-salesforce against the emulator over HTTPS --------------------------------------------------


@pytest.fixture
async def https_org(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The emulator over HTTPS (its own CA): simple-salesforce builds https URLs whatever it is given."""
    tls = prepare_tls(tmp_path / "ca.pem", "127.0.0.1", [])
    server, task, port = await serve(create_app(EmulatorSettings(**SET_UP)), tls=tls)
    try:
        yield f"https://127.0.0.1:{port}", tls.ca_path
    finally:
        server.should_exit = True
        await task


async def test_simple_salesforce_describes_upserts_and_reads_by_external_id(
    https_org: tuple[str, Path],
) -> None:
    url, cert = https_org

    def calls() -> dict[str, Any]:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
        session.verify = str(cert)
        token = session.post(
            f"{url}/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        )
        session_id = token.json()["access_token"]
        sf = Salesforce(instance_url=url, session_id=session_id, session=session, version="61.0")
        out: dict[str, Any] = {
            name: getattr(sf, name).describe() for name in ("Lead", "Contact", "Task", "Case")
        }
        # The writer's path: upsert on the external id, read back by it, sObject Collections upsert.
        out["created"] = sf.Lead.upsert(
            "ShopBotly_Email__c/ada@example.com", {"LastName": "Lovelace", "Company": "Analytical"}
        )
        out["updated"] = sf.Lead.upsert("ShopBotly_Email__c/ada@example.com", {"FirstName": "Ada"})
        out["read"] = sf.Lead.get_by_custom_id("ShopBotly_Email__c", "ada@example.com")
        out["collection"] = sf.restful(
            "composite/sobjects/Contact/ShopBotly_Email__c",
            method="PATCH",
            json={
                "allOrNone": False,
                "records": [
                    {
                        "attributes": {"type": "Contact"},
                        "ShopBotly_Email__c": "b@example.com",
                        "LastName": "B",
                    }
                ],
            },
        )
        try:
            sf.Opportunity.describe()
        except SalesforceResourceNotFound as exc:
            out["unknown"] = exc.content
        return out

    got = await asyncio.to_thread(calls)
    lead = {f["name"]: f for f in got["Lead"]["fields"]}
    assert got["Lead"]["name"] == "Lead" and got["Lead"]["keyPrefix"] == "00Q"
    assert lead["Id"]["type"] == "id" and not lead["Id"]["createable"] and not lead["Id"]["updateable"]
    assert lead["LastName"]["nillable"] is False and lead["Company"]["nillable"] is False
    assert lead["Email"]["type"] == "email" and lead["Email"]["createable"] and lead["Email"]["updateable"]
    assert lead["Status"]["type"] == "picklist"
    assert "Open - Not Contacted" in [v["value"] for v in lead["Status"]["picklistValues"]]
    assert lead["ShopBotly_Email__c"]["custom"] and lead["ShopBotly_Email__c"]["externalId"]
    assert lead["ShopBotly_Email__c"]["unique"]
    assert [f["name"] for f in lead.values() if f["custom"]] == ["ShopBotly_Email__c"]
    task = {f["name"]: f for f in got["Task"]["fields"]}
    assert task["WhoId"]["type"] == "reference" and task["WhoId"]["referenceTo"] == ["Contact", "Lead"]
    case = {f["name"]: f for f in got["Case"]["fields"]}
    assert not case["CaseNumber"]["createable"] and case["Origin"]["type"] == "picklist"
    assert got["created"] == 201 and got["updated"] == 200  # v46.0+: 200 with a body on update
    assert got["read"]["FirstName"] == "Ada" and got["read"]["LastName"] == "Lovelace"
    assert got["collection"][0]["success"] is True and got["collection"][0]["created"] is True
    assert got["unknown"][0]["errorCode"] == "NOT_FOUND"


async def test_check_verifies_the_org_against_the_connections_ca_bundle(
    https_org: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = https_org
    trusted = str(write_config(tmp_path, url, presets=["api"], tls=f"{{ca_bundle: {ca}}}"))
    result = await cli("connections", "check", "--config", trusted)
    assert result.exit_code == 0, result.output

    untrusted = str(write_config(tmp_path, url, presets=["api"]))  # the system's CAs only
    refused = await cli("connections", "check", "--config", untrusted)
    assert refused.exit_code == 1
    assert " unreadable " in refused.output and "certificate is not trusted" in refused.output
