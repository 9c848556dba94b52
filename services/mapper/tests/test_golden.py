"""Golden tests: every preset's sample events map to exactly the commands, orders and tickets on file.

The expected files are the reviewed specification of each preset. After an intended change, regenerate
them with `SHOPBOTLY_UPDATE_GOLDEN=1 pytest services/mapper/tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from shopbotly.common.config._mapping import PRESET_NAMES
from shopbotly.mapper.domain import Mappings, Outcome, Status, map_event
from shopbotly.mapper.presets import sample_events, sample_names
from shopbotly.mapper.state import StateStore

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 3, 2, 10, 15, 31, tzinfo=UTC)
UPDATE = os.environ.get("SHOPBOTLY_UPDATE_GOLDEN") == "1"
CASES = [(preset, name) for preset in PRESET_NAMES for name in sample_names(preset)]


def as_golden(outcome: Outcome) -> dict[str, Any]:
    """The outcome as JSON, with the mapping version masked (it fingerprints all presets; checked apart)."""

    def dump(models: list[Any]) -> list[Any]:
        return [orjson.loads(m.to_json()) for m in models]

    commands = dump(outcome.commands)
    for command in commands:
        assert re.fullmatch(r"2026-03\+[0-9a-f]{10}", command["mapping_version"])
        command["mapping_version"] = "<mapping_version>"
    return {
        "status": outcome.status.value,
        "rule_hits": outcome.rule_hits,
        "errors": outcome.errors,
        "commands": commands,
        "orders": dump(outcome.orders),
        "tickets": dump(outcome.tickets),
    }


def test_every_preset_has_samples() -> None:
    for preset in PRESET_NAMES:
        assert sample_names(preset), f"preset {preset} has no sample events"


@pytest.mark.parametrize(("preset", "name"), CASES, ids=[f"{p}/{n}" for p, n in CASES])
def test_preset_sample_matches_golden(preset: str, name: str, mappings: Mappings) -> None:
    event = sample_events(preset)[name]
    outcome = map_event(orjson.dumps(event), mappings, StateStore(), now=NOW)
    assert outcome.status == Status.MAPPED, outcome.errors
    got = as_golden(outcome)
    path = GOLDEN / preset / f"{name}.expected.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(got, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert path.exists(), f"no golden file {path}; run with SHOPBOTLY_UPDATE_GOLDEN=1 and review it"
    assert got == orjson.loads(path.read_bytes())
