"""The tenants configuration file (`config/shopbotly.yaml`): models, loader and JSON Schema export.

Errors name the file, the field path and what was expected, e.g.
`config/shopbotly.yaml: tenants.demo.sources.shop: kind: unknown source kind 'shopfy'; known kinds: ...`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, model_validator

from shopbotly.common.config._base import ApiKey, Name, SecretRef, StrictModel
from shopbotly.common.config._connections import (
    AuthConfig,
    ConnectionConfig,
    FieldLimits,
    RateLimitConfig,
    TlsConfig,
)
from shopbotly.common.config._mapping import (
    CommandTemplate,
    FieldSpec,
    MappingConfig,
    OrderTemplate,
    PresetRef,
    RuleConfig,
    TicketTemplate,
    TransformSpec,
    mapping_problems,
)
from shopbotly.common.config._readside import BotWebhookConfig, OrderApiConfig
from shopbotly.common.config._sources import AnySource, GenericHmac, SourceConfig, SourceKind
from shopbotly.common.config.crm_kinds import CRM_KINDS, AnyConnection, crm_kind, parse_connection
from shopbotly.common.errors import ConfigError

__all__ = [
    "CRM_KINDS",
    "AnySource",
    "ApiKey",
    "AuthConfig",
    "BotWebhookConfig",
    "CommandTemplate",
    "ConfigError",
    "ConnectionConfig",
    "FieldLimits",
    "FieldSpec",
    "GenericHmac",
    "MappingConfig",
    "OrderApiConfig",
    "OrderTemplate",
    "PresetRef",
    "RateLimitConfig",
    "RuleConfig",
    "SecretRef",
    "ShopbotlyConfig",
    "SourceConfig",
    "SourceKind",
    "TenantConfig",
    "TicketTemplate",
    "TlsConfig",
    "TransformSpec",
    "crm_kind",
    "json_schema",
    "load_config",
    "parse_config",
    "parse_config_text",
    "parse_connection",
]


class TenantConfig(StrictModel):
    display_name: str | None = None
    api_keys: list[ApiKey] = Field(default_factory=list)
    # Each validated as its kind's model (the kind's own fields only on it).
    sources: dict[Name, AnySource] = Field(default_factory=dict)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    # Each validated as its kind's model (config/crm_kinds/<kind>.py).
    connections: dict[Name, AnyConnection] = Field(default_factory=dict)
    order_api: OrderApiConfig | None = None
    bot_webhook: BotWebhookConfig | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> TenantConfig:
        problems = mapping_problems(
            self.mapping, connections=set(self.connections), has_bot_webhook=self.bot_webhook is not None
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def api_key_for(self, presented: str) -> ApiKey | None:
        return next((k for k in self.api_keys if k.matches(presented)), None)


class ShopbotlyConfig(StrictModel):
    version: Annotated[int, Field(ge=1, le=1)] = 1
    tenants: dict[Name, TenantConfig] = Field(default_factory=dict)

    def tenant_for_api_key(self, presented: str) -> tuple[str, TenantConfig] | None:
        """The tenant owning a bearer key; every tenant is checked so timing does not tell which matched."""
        found: tuple[str, TenantConfig] | None = None
        for name, tenant in self.tenants.items():
            if tenant.api_key_for(presented) is not None and found is None:
                found = (name, tenant)
        return found


_SECRETISH = re.compile(r"(secret|token|password|private_key)", re.I)


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """The loc as the file spells it: without the kind pydantic adds where a union is keyed on `kind`."""
    parts: list[str] = []
    node = data
    for step in loc:
        if isinstance(node, dict) and step not in node and node.get("kind") == step:
            continue
        parts.append(str(step))
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        else:
            node = None
    return ".".join(parts)


def _format_errors(origin: str, exc: ValidationError, data: Any = None) -> str:
    lines = []
    for err in exc.errors():
        path = _field_path(err["loc"], data) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        # Never echo what may be a secret: anything under a secret-like key is left out.
        secretish = _SECRETISH.search(path) is not None or "secret" in msg
        shown = "" if secretish or isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{origin}: {path}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, *, origin: str = "<config>") -> ShopbotlyConfig:
    try:
        return ShopbotlyConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(_format_errors(origin, exc, data)) from None


def load_config(path: str | Path) -> ShopbotlyConfig:
    """Read and validate the YAML config; ConfigError names the file, field path and expectation."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    return parse_config_text(text, origin=str(path))


def parse_config_text(text: str, *, origin: str = "<config>") -> ShopbotlyConfig:
    """Validate a config given as YAML text; ConfigError names `origin`, the line or field, the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{origin}: {where}invalid YAML: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: (top level): expected a mapping with `tenants`, got {type(data).__name__}"
        )
    return parse_config(data, origin=origin)


def json_schema() -> str:
    """JSON Schema of the config file, for editors (yaml-language-server) and CI."""
    schema = ShopbotlyConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ShopBotly configuration"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
