"""CRM connections of a tenant: where crm-writer applies commands, and within which limits.

Owned by the crm-writer service (reference: docs/services/crm-writer.md). What every connection has (auth,
rate limit, batch size, retries) is here; each kind's model (its `kind`, typed `options` and limits) is a
module of `crm_kinds`, and a tenant's connections are validated as the union of those, keyed on `kind`: a typo
in an option is an error at load time, not a silently ignored setting.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator

from shopbotly.common.config._base import SecretRef, StrictModel
from shopbotly.common.errors import ConfigError

__all__ = [
    "RESERVED_BOT_CONNECTION",
    "AuthConfig",
    "ConnectionConfig",
    "FieldLimits",
    "RateLimitConfig",
    "TlsConfig",
    "is_loopback",
]

# Commands for this connection name go to the tenant's `bot_webhook` (Standard Webhooks), through the same
# delivery machinery as CRM writes. A connection of this name, if declared, sets its limits and must be of
# kind bot_webhook.
RESERVED_BOT_CONNECTION = "bot"

AuthKind = Literal[
    "none", "bearer", "api_key_header", "oauth2_client_credentials", "oauth2_refresh_token", "jwt_bearer"
]

# What each auth kind cannot work without (checked at load time, with the field path in the error).
_AUTH_NEEDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "bearer": ("token",),
    "api_key_header": ("token", "header"),
    "oauth2_client_credentials": ("token_url", "client_id", "client_secret"),
    "oauth2_refresh_token": ("token_url", "client_id", "refresh_token"),
    "jwt_bearer": ("token_url", "client_id", "username", "private_key"),
}


class AuthConfig(StrictModel):
    """How crm-writer authenticates to a connection.

    - `bearer`: `Authorization: Bearer <token>` (HubSpot private app token).
    - `api_key_header`: `<header>: <token>` (e.g. `X-Api-Key`).
    - `oauth2_client_credentials`: client id and secret exchanged at `token_url` (Salesforce, generic).
    - `oauth2_refresh_token`: a refresh token exchanged at `token_url` (HubSpot public apps, generic).
    - `jwt_bearer`: an RS256 assertion (iss=client_id, sub=username, aud=audience) signed with `private_key`
      (Salesforce JWT bearer flow).
    """

    kind: AuthKind = "bearer"
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
    # Tokens are refreshed this long before they expire, so no request goes out with a token about to lapse.
    refresh_ahead_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # Lifetime assumed when the token endpoint does not say (Salesforce returns no `expires_in`).
    default_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0

    @model_validator(mode="after")
    def _complete_for_kind(self) -> AuthConfig:
        missing = [name for name in _AUTH_NEEDS[self.kind] if getattr(self, name) in (None, "")]
        if missing:
            raise ValueError(f"auth kind {self.kind!r} needs {', '.join(missing)}")
        return self


class RateLimitConfig(StrictModel):
    """The CRM's limit for this connection, shared by every replica of crm-writer.

    `requests` per `per_seconds` holds over any rolling window: each replica runs a token bucket with
    `burst` tokens refilled at `(requests - burst) / per_seconds`, scaled by its share of the partitions.
    """

    requests: Annotated[int, Field(ge=1)] = 100
    per_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Default: 5 % of `requests` (at least 1). A larger burst lowers the sustained rate by as much.
    burst: Annotated[int | None, Field(ge=1)] = None

    @model_validator(mode="after")
    def _burst_below_limit(self) -> RateLimitConfig:
        if self.burst is not None and self.burst >= self.requests and self.requests > 1:
            raise ValueError(f"burst ({self.burst}) must be below requests ({self.requests})")
        return self

    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, self.requests // 20)


class TlsConfig(StrictModel):
    """How crm-writer (and `shopbotly connections`) trust a connection's server. Certificates are always
    verified: against the system's CAs, or only against `ca_bundle` when it is set (a private CA, the CRM
    emulator's). Plain `http://` is refused at load unless the host is loopback or `allow_plain_http` is
    set."""

    # PEM file of the CA certificate(s) to verify the server against (read when the connection is first used;
    # it must hold the token endpoint's CA too when that is on another host).
    ca_bundle: Path | None = None
    # Allow `http://` to a host that is not loopback (a trusted cluster network; credentials travel in clear).
    allow_plain_http: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that verifies against `ca_bundle` only; None: the client's default trust store.
        Raises ConfigError naming the file when it cannot be read or holds no certificate."""
        if self.ca_bundle is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"tls.ca_bundle: {self.ca_bundle} cannot be read as a PEM CA bundle ({reason})"
            ) from None


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine (or the pod)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class FieldLimits:
    """Text length limits of a CRM kind: per canonical field, a default, and the note/ticket body."""

    per_field: Mapping[str, int]
    default: int | None
    body: int | None

    def for_field(self, name: str) -> int | None:
        return self.per_field.get(name, self.default)


class ConnectionConfig(StrictModel):
    """What every connection has. Each kind subclasses it in `crm_kinds/<kind>.py` with `kind` (a Literal, the
    union's tag), its typed `options`, and its limits below; `parse_connection` picks the subclass by kind."""

    # Set by each kind's model.
    kind: str
    options: StrictModel
    # The kind's name in messages ("HubSpot").
    title: ClassVar[str]
    # Records per batch request the CRM accepts at most.
    max_batch_size: ClassVar[int]
    # Text limits the mapper truncates a command's fields to (docs/services/mapper.md).
    field_limits: ClassVar[FieldLimits]
    # False for kinds whose URL comes from elsewhere (bot_webhook: the tenant's `bot_webhook.url`).
    needs_base_url: ClassVar[bool] = True

    base_url: Annotated[str | None, Field(pattern=r"^https?://[^\s/]+\S*$")] = None
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig(kind="none"))
    tls: TlsConfig = Field(default_factory=TlsConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    # Records per batch request (at most the kind's `max_batch_size`: HubSpot 100, Salesforce 200).
    batch_size: Annotated[int, Field(ge=1, le=200)] = 100
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    max_retry_after_s: Annotated[float, Field(gt=0)] = 60.0

    def _refuse_plain_http(self, field_name: str, url: str | None) -> None:
        if url is None or self.tls.allow_plain_http:
            return
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"{field_name}: {url} is plain http to {parts.hostname}, which is not loopback: credentials "
                "and customer data would cross the network unencrypted. Use https:// (with tls.ca_bundle for "
                "a private CA), or set tls.allow_plain_http: true for a network you trust"
            )

    @classmethod
    def options_model(cls) -> type[StrictModel]:
        """The kind's options class (the annotation of its `options` field)."""
        annotation = cls.model_fields["options"].annotation
        assert isinstance(annotation, type) and issubclass(annotation, StrictModel), annotation
        return annotation

    @model_validator(mode="before")
    @classmethod
    def _options_of_kind(cls, data: Any) -> Any:
        # Validated here, once, so an error lists the kind's valid option names (a typo is then obvious); the
        # field then takes the validated object as it is.
        if cls is ConnectionConfig:
            raise ValueError("a connection is validated as its kind's model: use parse_connection()")
        if not isinstance(data, dict) or not isinstance(data.get("options", {}), dict):
            return data
        model = cls.options_model()
        try:
            options = model.model_validate(data.get("options", {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(
                f"options.{where}: {first['msg']} (valid options for kind {data.get('kind')!r}: "
                f"{sorted(model.model_fields)})"
            ) from None
        return {**data, "options": options}

    @model_validator(mode="after")
    def _fits_kind(self) -> ConnectionConfig:
        if self.base_url is None and self.needs_base_url:
            raise ValueError(f"base_url: required for kind {self.kind!r} (e.g. https://api.hubapi.com)")
        for field_name, url in (("base_url", self.base_url), ("auth.token_url", self.auth.token_url)):
            self._refuse_plain_http(field_name, url)
        if self.batch_size > self.max_batch_size:
            raise ValueError(
                f"batch_size: {self.title} batch endpoints take at most {self.max_batch_size} inputs "
                f"(got {self.batch_size})"
            )
        return self
