"""console settings: `SHOPBOTLY_*` environment variables on top of the shared service settings.

Operators are configured here, not in the tenants file, so no tenant's API key can ever open the console:
`SHOPBOTLY_CONSOLE_OPERATORS` is a JSON list of `{"name", "sha256", "scopes", "tenants"}` (docs/console.md).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shopbotly.common.http import HttpServerSettings
from shopbotly.common.settings import ServiceSettings

__all__ = ["OperatorKey", "Settings"]

Scope = Literal["read", "admin"]


class OperatorKey(BaseModel):
    """One operator's key, stored as its SHA-256 (hex). `admin` may redrive; `read` only looks.
    `tenants` limits what the key sees; `["*"]` is every tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read"]))
    tenants: list[str] = Field(default_factory=lambda: ["*"])

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(presented.encode()).hexdigest(), self.sha256)

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def tenant_scope(self) -> frozenset[str] | None:
        """The tenants this key may see; None means every tenant."""
        return None if "*" in self.tenants else frozenset(self.tenants)


class Settings(ServiceSettings):
    """Everything the console reads from its environment (see docs/console.md)."""

    port: int = Field(default=8082, ge=0, le=65535)  # 0: any free port (tests)
    console_operators: list[OperatorKey] = Field(default_factory=list)
    # Signs the session cookie. Unset: a random one per process (sessions end when it restarts).
    console_session_secret: str | None = Field(default=None, min_length=32)
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    # Retention of the read model: what is older, or beyond the counts, is dropped oldest first.
    console_retention_hours: float = Field(default=7 * 24, gt=0)
    console_max_events: int = Field(default=100_000, ge=100)
    console_max_dead_letters: int = Field(default=100_000, ge=100)
    # Probe URLs of every crm-writer replica: the connections page merges their `GET /connections`.
    console_writer_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:9102"])
    # Seconds between refreshes of a page's live parts.
    console_poll_s: float = Field(default=3.0, gt=0, le=300)
    startup_retry_s: float = Field(default=2.0, gt=0)
    http: HttpServerSettings = Field(default_factory=HttpServerSettings)

    @model_validator(mode="after")
    def _operators_configured(self) -> Self:
        if not self.console_operators:
            raise ValueError(
                "no operator keys: set SHOPBOTLY_CONSOLE_OPERATORS to a JSON list of "
                '{"name": ..., "sha256": <hex of the key>, "scopes": ["read"|"admin"]} (docs/console.md)'
            )
        if self.environment == "production" and self.console_session_secret is None:
            raise ValueError("SHOPBOTLY_CONSOLE_SESSION_SECRET is required in production (32+ characters)")
        return self
