"""Preset rule sets shipped with the mapper (presets/<name>.yaml), and their sample payloads.

A preset is ordinary mapping rules, validated by the same config models as a tenant's own rules, limited to
events from sources of the preset's kind. Its rule ids start with the preset name, so they cannot collide
with each other; a collision with a tenant's own rule id is a config error.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from shopbotly.common.config import RuleConfig
from shopbotly.common.config._mapping import PRESET_NAMES

__all__ = ["load_preset", "preset_rules", "sample_events", "sample_names"]

_PACKAGE = "shopbotly.mapper"


@cache
def load_preset(name: str) -> tuple[RuleConfig, ...]:
    """The rules of one preset; each rule is limited to the preset's source kind unless it says otherwise."""
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESET_NAMES)}")
    text = resources.files(_PACKAGE).joinpath("presets", f"{name}.yaml").read_text()
    data: Any = yaml.safe_load(text)
    rules: list[RuleConfig] = []
    for i, raw in enumerate(data["rules"]):
        raw = {"kinds": [name], **raw}
        try:
            rule = RuleConfig.model_validate(raw)
        except ValidationError as exc:  # a broken preset is a bug in this package; say where
            raise ValueError(f"preset {name}: rules.{i}: {exc}") from None
        if not rule.id.startswith(f"{name}-"):
            raise ValueError(f"preset {name}: rule id {rule.id!r} must start with '{name}-'")
        rules.append(rule)
    return tuple(rules)


def preset_rules(name: str, *, disable: list[str]) -> list[RuleConfig]:
    rules = load_preset(name)
    unknown = sorted(set(disable) - {r.id for r in rules})
    if unknown:
        raise ValueError(
            f"preset {name}: cannot disable unknown rule(s) {unknown}; its rules: {[r.id for r in rules]}"
        )
    return [r for r in rules if r.id not in disable]


def sample_names(preset: str) -> list[str]:
    """Names of the sample events of a preset (presets/samples/<preset>/<name>.json)."""
    folder = resources.files(_PACKAGE).joinpath("presets", "samples", preset)
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def sample_events(preset: str) -> dict[str, dict[str, Any]]:
    """The sample events of a preset: full raw-event envelopes as ingest publishes them."""
    folder = resources.files(_PACKAGE).joinpath("presets", "samples", preset)
    return {name: orjson.loads(folder.joinpath(f"{name}.json").read_bytes()) for name in sample_names(preset)}
