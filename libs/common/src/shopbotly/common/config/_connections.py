"""CRM connections of a tenant: where crm-writer applies commands, and within which limits.

Owned by the crm-writer service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from shopbotly.common.config._base import SecretRef, StrictModel

__all__ = ["AuthConfig", "ConnectionConfig", "RateLimitConfig"]


class AuthConfig(StrictModel):
    kind: Literal[
        "none", "bearer", "api_key_header", "oauth2_client_credentials", "oauth2_refresh_token", "jwt_bearer"
    ] = "bearer"
    token: SecretRef | None = None
    header: str = "Authorization"
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = None
    refresh_token: SecretRef | None = None
    private_key: SecretRef | None = None
    username: str | None = None
    audience: str | None = None
    scope: str | None = None


class RateLimitConfig(StrictModel):
    requests: Annotated[int, Field(ge=1)] = 100
    per_seconds: Annotated[float, Field(gt=0)] = 10.0


class ConnectionConfig(StrictModel):
    kind: Literal["hubspot", "salesforce", "generic", "bot_webhook"]
    base_url: str
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    batch_size: Annotated[int, Field(ge=1, le=200)] = 100
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    max_retry_after_s: Annotated[float, Field(gt=0)] = 60.0
    # Kind-specific settings (HubSpot tag property, Salesforce sObject/external id field, generic templates).
    options: dict[str, Any] = Field(default_factory=dict)
