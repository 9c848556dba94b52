"""Golden-JSON round trips: the wire format of every contract model is pinned."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shopbotly.common.events import CrmCommand, Order, RawEvent

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent / "golden"


def _normalize(doc: dict) -> dict:
    # Timestamps may be written with "Z" or "+00:00"; compare the parsed values.
    return json.loads(json.dumps(doc).replace("+00:00", "Z"))


@pytest.mark.parametrize(
    ("model", "file"),
    [(RawEvent, "raw_event.json"), (CrmCommand, "crm_command.json"), (Order, "order.json")],
)
def test_golden_round_trip(model: type, file: str) -> None:
    raw = (GOLDEN / file).read_text()
    parsed = model.from_json(raw)
    again = model.from_json(parsed.to_json())
    assert again == parsed
    assert _normalize(json.loads(parsed.to_json())) == _normalize(json.loads(raw))


def test_unknown_fields_are_refused() -> None:
    doc = json.loads((GOLDEN / "crm_command.json").read_text())
    doc["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        CrmCommand.model_validate(doc)


def test_raw_event_requires_cloudevents_version_1() -> None:
    doc = json.loads((GOLDEN / "raw_event.json").read_text())
    doc["specversion"] = "0.3"
    with pytest.raises(ValidationError, match="specversion"):
        RawEvent.model_validate(doc)


def test_order_merge_keeps_known_fields_and_applies_update() -> None:
    order = Order.from_json((GOLDEN / "order.json").read_text())
    merged = order.merged_with({"status": "cancelled", "cancelled_at": "2026-11-25T00:00:00Z", "total": None})
    assert merged.status == "cancelled"
    assert merged.cancelled_at is not None
    assert merged.total == "59.90"  # None in an update means "not given", not "erase"
    assert merged.lines == order.lines
