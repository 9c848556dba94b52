"""Mapping and trigger rules of a tenant: which events become which CRM commands.

Owned by the mapper service.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from shopbotly.common.config._base import Name, StrictModel
from shopbotly.common.events import CommandOp

__all__ = ["CommandTemplate", "MappingConfig", "RuleConfig"]


class CommandTemplate(StrictModel):
    op: CommandOp
    connection: Name | None = None
    identity: str | None = None
    # Field name -> JMESPath expression, or {expr: ..., transforms: [...], default: ...}.
    fields: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    body: str | None = None


class RuleConfig(StrictModel):
    id: Name
    when: str
    connection: Name | None = None
    commands: Annotated[list[CommandTemplate], Field(min_length=1)]


class MappingConfig(StrictModel):
    version: str = "1"
    presets: list[str] = Field(default_factory=list)
    default_connection: Name | None = None
    rules: list[RuleConfig] = Field(default_factory=list)
