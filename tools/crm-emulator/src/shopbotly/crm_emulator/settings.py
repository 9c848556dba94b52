"""Emulator settings: `SHOPBOTLY_EMULATOR_*` environment variables (lists and objects as JSON).

Secrets (accepted tokens, client secrets, public keys) are either literal values — the emulator is a
test double and its defaults are public — or `{"env": NAME}` / `{"file": PATH}` references resolved
with the shared `SecretRef`, so the emulator and crm-writer can read the same secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shopbotly.common.config import SecretRef

__all__ = [
    "EmulatorSettings",
    "OAuthClient",
    "OutboundMessageSettings",
    "SalesforceCustomField",
    "Secret",
    "WebhookSettings",
    "reveal",
]

Secret = str | SecretRef


def _secrets(*values: str) -> list[Secret]:
    return list(values)


def reveal(secret: Secret) -> str:
    return secret if isinstance(secret, str) else secret.resolve()


class OAuthClient(BaseModel):
    """A connected app: client credentials, and for Salesforce's JWT bearer flow a PEM public key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str
    client_secret: Secret | None = None
    jwt_public_key: Secret | None = None
    # JWT `sub` values (usernames) pre-approved for this app; None accepts any.
    usernames: list[str] | None = None


class SalesforceCustomField(BaseModel):
    """A custom field of the emulated org, as an admin creates it in Setup (a fresh org has none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$")]
    # The describe `type`: string, multipicklist, picklist, email, phone, double, boolean, date, datetime, ...
    type: str = "string"
    external_id: bool = False
    unique: bool = False
    picklist_values: list[str] = Field(default_factory=list)


class WebhookSettings(BaseModel):
    """Where and how the emulator sends HubSpot-style webhooks. Changeable at run time by the admin API."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    # Public defaults: the emulator is a test double; real secrets come as {"env": ...} references.
    client_secret: Secret = "emulator-hubspot-client-secret"  # noqa: S105
    batch_window_ms: int = Field(default=100, ge=0, le=60_000)
    max_batch_size: int = Field(default=100, ge=1, le=100)
    max_attempts: int = Field(default=10, ge=1, le=50)
    retry_initial_ms: int = Field(default=1_000, ge=1)
    retry_max_ms: int = Field(default=60_000, ge=1)
    timeout_ms: int = Field(default=5_000, ge=1)
    max_concurrency: int = Field(default=10, ge=1, le=100)
    app_id: int = 54321
    # (subscription type, property name) pairs; property names only for propertyChange types.
    subscriptions: list[tuple[str, str | None]] = Field(
        default_factory=lambda: [
            ("ticket.creation", None),
            ("ticket.propertyChange", "hs_pipeline_stage"),
            ("ticket.propertyChange", "content"),
            ("ticket.propertyChange", "hs_ticket_priority"),
            ("ticket.propertyChange", "shopbotly_last_reply"),
            ("contact.propertyChange", "lifecyclestage"),
            ("contact.propertyChange", "hs_lead_status"),
        ]
    )


class OutboundMessageSettings(BaseModel):
    """Salesforce Outbound Messages the emulated org sends (a flow's "Send outbound message" action per
    sObject type). Changeable at run time by the admin API."""

    model_config = ConfigDict(extra="forbid")

    # The endpoint URL as an admin enters it, a shared token included (e.g. `...?token=<secret>`).
    url: str | None = None
    action_id: str = "04k5g0000000001AAA"
    instance_url: str = "https://emulator.my.salesforce.com"
    # sObject type -> the fields the outbound message sends (Id always); types not listed send nothing.
    fields: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "Case": [
                "CaseNumber",
                "Subject",
                "Status",
                "Priority",
                "IsClosed",
                "ContactEmail",
                "SuppliedEmail",
                "CreatedDate",
                "LastModifiedDate",
            ],
            "CaseComment": ["ParentId", "IsPublished", "CommentBody", "CreatedDate"],
            "Contact": ["Email", "FirstName", "LastName", "LastModifiedDate"],
        }
    )
    batch_window_ms: int = Field(default=100, ge=0, le=60_000)
    max_batch_size: int = Field(default=100, ge=1, le=100)
    # Salesforce retries for 24 hours with delays growing up to two hours; tests shorten both.
    max_attempts: int = Field(default=1000, ge=1)
    max_age_s: float = Field(default=86_400.0, gt=0)
    retry_initial_ms: int = Field(default=1_000, ge=1)
    retry_max_ms: int = Field(default=7_200_000, ge=1)
    # Salesforce gives a listener 60 seconds.
    timeout_ms: int = Field(default=60_000, ge=1)


class EmulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SHOPBOTLY_EMULATOR_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    environment: Literal["development", "test", "production"] = Field(
        default="development",
        validation_alias=AliasChoices("SHOPBOTLY_EMULATOR_ENVIRONMENT", "SHOPBOTLY_ENVIRONMENT"),
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=AliasChoices("SHOPBOTLY_EMULATOR_LOG_LEVEL", "SHOPBOTLY_LOG_LEVEL")
    )
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias=AliasChoices("SHOPBOTLY_EMULATOR_LOG_FORMAT", "SHOPBOTLY_LOG_FORMAT")
    )
    # SQLite file; else `<SHOPBOTLY_DATA_DIR>/crm-emulator.sqlite3`; else in memory.
    db_path: Path | None = None
    data_dir: Path | None = Field(default=None, validation_alias=AliasChoices("SHOPBOTLY_DATA_DIR"))
    # Seed of the fault injector's random numbers, for reproducible error rates.
    seed: int | None = None
    # HTTPS (`--tls`): a local CA made at first start (kept beside `tls_ca_path`, reused after a restart, so
    # clients that loaded it keep trusting the emulator) signs a server certificate for localhost, 127.0.0.1,
    # ::1, `host` (unless a wildcard) and `tls_names`. Clients trust the CA's PEM at `tls_ca_path` (default
    # `<SHOPBOTLY_DATA_DIR>/crm-emulator-ca.pem`).
    tls: bool = False
    tls_ca_path: Path | None = None
    # More DNS names or IP addresses the certificate is valid for (a compose service name, a pod's name).
    tls_names: list[str] = Field(default_factory=list)
    # When set, the admin API (`/_emulator/*`) wants `Authorization: Bearer <admin_token>`.
    admin_token: Secret | None = None

    hubspot_tokens: list[Secret] = Field(default_factory=lambda: _secrets("emulator-hubspot-token"))
    hubspot_portal_id: int = 62515
    hubspot_rate_limit_max: int | None = Field(default=100, ge=1)
    hubspot_rate_limit_interval_ms: int = Field(default=10_000, ge=1)
    hubspot_daily_limit: int | None = Field(default=250_000, ge=1)
    hubspot_batch_limit: int = Field(default=100, ge=1)
    hubspot_tag_property: str = "shopbotly_tags"
    hubspot_strict_properties: bool = True
    # Custom contact properties that exist without a definition (fnmatch patterns), for a portal modelled as
    # pre-provisioned. Default: none, a fresh portal; custom properties exist once created through the
    # Properties API (`shopbotly connections setup --apply` creates ShopBotly's own).
    hubspot_custom_properties: list[str] = Field(default_factory=list)
    # Properties with unique values (`hasUniqueValue: true`) per object type besides contacts' e-mail that
    # exist from the start: the keys `batch/upsert` accepts for notes and tickets (crm-writer keys them by
    # `shopbotly_command_id`). Default: none, a fresh portal (`connections setup` creates them).
    hubspot_unique_properties: dict[str, list[str]] = Field(default_factory=dict)
    # Properties the portal's admin made required on record creation, per object type (e.g. contacts:
    # [lastname]). HubSpot enforces them on API writes from the 2026-09 API version on: a create without one
    # answers VALIDATION_ERROR (REQUIRED_FIELD) there, and succeeds on v3 and 2026-03. Default: none.
    hubspot_required_properties: dict[str, list[str]] = Field(default_factory=dict)
    # Where an agent reply is written on a ticket (a custom ticket property).
    hubspot_reply_property: str = "shopbotly_last_reply"

    salesforce_clients: list[OAuthClient] = Field(
        default_factory=lambda: [
            OAuthClient(client_id="emulator-sf-client", client_secret="emulator-sf-secret")  # noqa: S106
        ]
    )
    salesforce_token_lifetime_s: float = Field(default=7200.0, gt=0)
    salesforce_daily_limit: int = Field(default=15_000, ge=1)
    salesforce_batch_limit: int = Field(default=200, ge=1)
    # Custom text fields marked External ID the org has from the start, per sObject (a fresh org has none;
    # upserts by a field that is not one answer 404 NOT_FOUND).
    salesforce_external_id_fields: dict[str, list[str]] = Field(default_factory=dict)
    # Custom fields with a unique constraint per sObject: a second record with a value fails DUPLICATE_VALUE.
    salesforce_unique_fields: dict[str, list[str]] = Field(default_factory=dict)
    # Custom fields the org has from the start, per sObject, as an admin created them in Setup; fields named
    # in the two settings above exist too (text, External ID/Unique). Default: none, a fresh org. Others are
    # created through the Tooling API (`POST .../tooling/sobjects/CustomField`; `connections setup --apply`).
    # Writes to a custom field the org lacks fail: 400 INVALID_FIELD "No such column ...".
    salesforce_custom_fields: dict[str, list[SalesforceCustomField]] = Field(default_factory=dict)
    # Multi-picklist field shown as the record's tags in the admin state.
    salesforce_tag_field: str = "ShopBotly_Tags__c"
    # JWT `aud` values accepted besides the emulator's own base URL.
    salesforce_audiences: list[str] = Field(
        default_factory=lambda: ["https://login.salesforce.com", "https://test.salesforce.com"]
    )

    generic_tokens: list[Secret] = Field(default_factory=lambda: _secrets("emulator-generic-token"))
    generic_api_keys: list[Secret] = Field(default_factory=list)
    generic_clients: list[OAuthClient] = Field(
        default_factory=lambda: [
            OAuthClient(client_id="emulator-generic-client", client_secret="emulator-generic-secret")  # noqa: S106
        ]
    )
    generic_token_lifetime_s: float = Field(default=3600.0, gt=0)
    generic_rate_limit_max: int | None = Field(default=100, ge=1)
    generic_rate_limit_interval_ms: int = Field(default=10_000, ge=1)

    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    salesforce_outbound: OutboundMessageSettings = Field(default_factory=OutboundMessageSettings)

    @model_validator(mode="after")
    def _not_in_production(self) -> Self:
        if self.environment == "production":
            raise ValueError("the CRM emulator is a test double and refuses SHOPBOTLY_ENVIRONMENT=production")
        if self.tls and self.tls_ca_path is None and self.data_dir is None:
            raise ValueError(
                "tls: where should the CA bundle go? "
                "Set SHOPBOTLY_EMULATOR_TLS_CA_PATH (or SHOPBOTLY_DATA_DIR)"
            )
        return self

    def ca_path(self) -> Path:
        """Where the CA's PEM (what clients trust) is written with `tls`."""
        if self.tls_ca_path is not None:
            return self.tls_ca_path
        assert self.data_dir is not None, "checked at load"
        return self.data_dir / "crm-emulator-ca.pem"

    def database(self) -> str:
        if self.db_path is not None:
            return str(self.db_path)
        if self.data_dir is not None:
            return str(self.data_dir / "crm-emulator.sqlite3")
        return ":memory:"
