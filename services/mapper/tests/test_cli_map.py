"""`shopbotly map`: the dry run prints what an event becomes and signals dead letters by exit code."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from shopbotly.cli.app import app
from shopbotly.mapper.presets import sample_events

pytestmark = pytest.mark.unit

CONFIG = Path(__file__).parent / "golden" / "shopbotly.yaml"
runner = CliRunner()


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(document))
    return path


def test_envelope_prints_commands_and_order_state(tmp_path: Path) -> None:
    event = write(tmp_path, sample_events("shopify")["orders.create"])
    result = runner.invoke(app, ["map", "--event", str(event), "--config", str(CONFIG)])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["status"] == "mapped"
    assert [c["value"]["op"] for c in report["crm_commands"]] == ["upsert_contact", "attach_order"]
    assert report["crm_commands"][0]["key"] == "demo:hubspot:jane.doe@example.com"
    assert report["orders"][0]["key"] == "demo:820982911946154508"


def test_bare_body_with_type_and_source(tmp_path: Path) -> None:
    body = sample_events("stripe")["checkout.session.completed"]["data"]
    event = write(tmp_path, body)
    args = ["map", "--event", str(event), "--config", str(CONFIG), "--tenant", "demo"]
    result = runner.invoke(app, [*args, "--type", "checkout.session.completed", "--source", "stripe"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["orders"][0]["value"]["total"] == "49.99"
    missing = runner.invoke(app, args)
    said = " ".join(missing.output.replace("│", " ").split())  # rich draws a box around usage errors
    assert missing.exit_code == 2 and "give --tenant, --type and --source" in said


def test_dead_letter_exits_3_with_the_reason(tmp_path: Path) -> None:
    event = sample_events("api")["lead.submitted"]
    event["data"]["email"] = "not-an-address"
    result = runner.invoke(app, ["map", "--event", str(write(tmp_path, event)), "--config", str(CONFIG)])
    assert result.exit_code == 3
    said = " ".join(result.output.split())  # rich wraps long lines
    assert (
        "would be dead-lettered: rule api-lead-submitted: command 0 (upsert_lead): identity: email: "
        "not a valid e-mail address"
    ) in said


def test_unknown_tenant_and_bad_config(tmp_path: Path) -> None:
    event = write(tmp_path, sample_events("api")["lead.submitted"])
    result = runner.invoke(app, ["map", "--event", str(event), "--config", str(CONFIG), "--tenant", "nope"])
    assert result.exit_code == 3 and "tenant 'nope' is not configured" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: {demo: {mapping: {presets: [magento]}}}\n")
    result = runner.invoke(app, ["map", "--event", str(event), "--config", str(bad)])
    assert result.exit_code == 1 and "tenants.demo.mapping.presets.0" in result.output
