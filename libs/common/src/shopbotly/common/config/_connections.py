"""CRM connections of a tenant: where crm-writer applies commands, and within which limits.

Owned by the crm-writer service (reference: docs/services/crm-writer.md). `options` are kind-specific and
validated per kind, so a typo in an option is an error at load time, not a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, JsonValue, ValidationError, model_validator

from shopbotly.common.config._base import SecretRef, StrictModel
from shopbotly.common.config._mapping import Expression, Template, _check_template

__all__ = [
    "RESERVED_BOT_CONNECTION",
    "AuthConfig",
    "BotWebhookOptions",
    "ConnectionConfig",
    "GenericOperation",
    "GenericOptions",
    "GenericRequest",
    "GenericResponseRule",
    "GenericResponses",
    "HubSpotOptions",
    "RateLimitConfig",
    "SalesforceOptions",
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


class HubSpotOptions(StrictModel):
    """Options of a `hubspot` connection (CRM v3 objects API)."""

    # Multi-select contact property that holds tags; values are `;`-separated, merged as a union.
    tags_property: str = "shopbotly_tags"
    # When the writer reads a contact (batched `batch/read`, once per identity while cached) before its
    # upsert: `when_tags` (the tag union needs the CRM's current tags), `always` (every upsert carries the
    # full property set, for CRMs that replace what is not sent), `never`.
    read_before_write: Literal["when_tags", "always", "never"] = "when_tags"
    # Contact properties read (and so carried forward) besides those a command writes.
    contact_properties: list[str] = Field(
        default_factory=lambda: ["email", "firstname", "lastname", "phone", "company", "lifecyclestage"]
    )
    # How long a contact read or written stays authoritative in the writer's cache.
    state_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    # Not sent any more (notes and tickets get v4's default association, which is these); kept so configs
    # that set them still load.
    note_association_type_id: int = 202  # note → contact (HUBSPOT_DEFINED)
    ticket_association_type_id: int = 16  # ticket → contact (HUBSPOT_DEFINED)
    # Custom note and ticket property with unique values (`hasUniqueValue: true`) holding the command id:
    # notes and tickets are created by batch upsert on it, so a retry updates the record it created instead
    # of creating a second one. Create it once per portal (docs/services/crm-writer.md).
    command_id_property: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "shopbotly_command_id"
    ticket_pipeline: str = "0"
    ticket_stage: str = "1"
    # Command field → ticket property, for fields whose HubSpot name differs.
    ticket_field_map: dict[str, str] = Field(
        default_factory=lambda: {"priority": "hs_ticket_priority", "category": "hs_ticket_category"}
    )
    # Ticket properties that exist in the account. Other command fields are not sent as properties (HubSpot
    # would refuse the ticket); they are appended to the ticket's content as `name: value` lines instead.
    ticket_properties: list[str] = Field(
        default_factory=lambda: [
            "subject",
            "content",
            "hs_pipeline",
            "hs_pipeline_stage",
            "hs_ticket_priority",
            "hs_ticket_category",
            "hubspot_owner_id",
            "source_type",
        ]
    )
    # Concurrent HTTP requests on this connection (the rate limit still applies).
    max_concurrent_requests: Annotated[int, Field(ge=1, le=64)] = 4
    # A contact property the portal refuses (PROPERTY_DOESNT_EXIST, INVALID_OPTION, READ_ONLY_VALUE): `drop`
    # writes the record without it (counted, logged once, named in the result's `dropped_properties`);
    # `dead_letter` refuses the whole command. `shopbotly connections check` finds these before they happen.
    unknown_properties: Literal["drop", "dead_letter"] = "drop"


class SalesforceOptions(StrictModel):
    """Options of a `salesforce` connection (REST API, sObject Collections)."""

    api_version: Annotated[str, Field(pattern=r"^v\d+\.\d$")] = "v61.0"
    contact_sobject: str = "Contact"
    lead_sobject: str = "Lead"
    # External-id field holding the identity (normalized e-mail) on both sObjects. Standard fields such as
    # Email cannot be marked External ID in Salesforce, hence a custom field.
    external_id_field: str = "ShopBotly_Email__c"
    # Command field → Salesforce field, per sObject. Custom fields (`…__c`) are sent under their own name;
    # other fields a map does not name are not sent (the sObject has no such column).
    contact_field_map: dict[str, str] = Field(
        default_factory=lambda: {
            "email": "Email",
            "firstname": "FirstName",
            "lastname": "LastName",
            "phone": "Phone",
        }
    )
    lead_field_map: dict[str, str] = Field(
        default_factory=lambda: {
            "email": "Email",
            "firstname": "FirstName",
            "lastname": "LastName",
            "phone": "Phone",
            "company": "Company",
        }
    )
    # Multi-select picklist on the contact sObject that holds tags (union, read-modify-write); None: tags
    # are refused as a permanent error rather than silently dropped.
    tags_field: str | None = None
    note_sobject: str = "Task"
    ticket_sobject: str = "Case"
    ticket_field_map: dict[str, str] = Field(
        default_factory=lambda: {"priority": "Priority", "subject": "Subject"}
    )
    # External-id field on the ticket sObject that receives the command id: ticket creation becomes an
    # upsert, so a replay can never create a second case.
    ticket_external_id_field: str | None = None
    # Use the `instance_url` returned by the token endpoint instead of `base_url` for API calls.
    use_instance_url: bool = False
    state_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    max_concurrent_requests: Annotated[int, Field(ge=1, le=64)] = 4
    # A field the org refuses (no such column, not writable, not a value of its restricted picklist), or
    # tags without `tags_field`: `drop` writes the record without it (counted, logged once, named in the
    # result's `dropped_properties`); `dead_letter` refuses the whole command. As for HubSpot.
    unknown_properties: Literal["drop", "dead_letter"] = "drop"


_DEFAULT_GENERIC_BODY: dict[str, JsonValue] = {
    "command_id": "{command_id}",
    "op": "{op}",
    "identity": "{identity}",
    "fields": "{fields}",
    "tags": "{tags}",
    "body": "{body}",
}

_Status = Annotated[int, Field(ge=100, le=599)]
_Success = Annotated[int, Field(ge=200, le=299)]
# What an answer means, as a per-connection response rule can say (DESIGN.md error classes, plus `applied`).
ResponseOutcome = Literal["applied", "duplicate", "retryable", "permanent", "auth"]


def _checked_body(value: JsonValue) -> JsonValue:
    """Every string in a body template must be a valid template (JMESPath placeholders)."""
    if isinstance(value, str):
        _check_template(value)
    elif isinstance(value, list):
        for item in value:
            _checked_body(item)
    elif isinstance(value, dict):
        for item in value.values():
            _checked_body(item)
    return value


BodyTemplate = Annotated[JsonValue, AfterValidator(_checked_body)]


class GenericRequest(StrictModel):
    """One HTTP call of a generic connection: `find`, `update` and `then` steps of an operation.

    `path`, `query` values and `body` are templates whose `{…}` placeholders are JMESPath expressions over
    the context (see `GenericOperation`); `body: null` sends no body.
    """

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: Template
    query: dict[str, Template] = Field(default_factory=dict)
    body: BodyTemplate = None
    success_codes: list[_Success] = Field(default_factory=lambda: [200, 201, 202, 204])
    # JMESPath over the JSON answer giving the record's id (`id`, `data.id`, `results[0].id`); for `find`,
    # null (no match) means the identity has no record yet.
    id_field: Expression | None = "id"


class GenericOperation(StrictModel):
    """What one command op does on a generic REST connection: one HTTP call, or a short recipe.

    Context of every template (`{…}` is a JMESPath expression, e.g. `{fields.phone || 'n/a'}`): command_id,
    op, identity, tenant, connection, body, tags, fields, event_type; `record_id`, the CRM id of the
    identity's record (remembered, or found by `find`); `steps.find`, `steps.call`, `steps.update`, the JSON
    answers of earlier steps. A string that is exactly `{expr}` takes the value with its JSON type, and a
    body key whose value is null is left out; `{expr}` inside text becomes its text (URL-encoded in `path`).

    Recipe: when `record_id` is not known, `find` looks it up (before the call, or with
    `lookup: on_duplicate` only when the CRM says the record already exists); when it is known and `update`
    is given, `update` runs instead of the call; `then` steps follow. `noop: true` applies the op without
    any request (an op the CRM has no equivalent for).
    """

    noop: bool = False
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: Template = "/api/v1/leads"
    query: dict[str, Template] = Field(default_factory=dict)
    body: BodyTemplate = Field(default_factory=lambda: dict(_DEFAULT_GENERIC_BODY))
    success_codes: list[_Success] = Field(default_factory=lambda: [200, 201, 202, 204])
    # JMESPath over the JSON answer giving the created/updated record's id (e.g. `id` or `data.id`).
    id_field: Expression | None = "id"
    find: GenericRequest | None = None
    # Answers of `find` that mean "no such record" (besides a 2xx whose id_field is null).
    not_found_codes: list[_Status] = Field(default_factory=lambda: [404])
    update: GenericRequest | None = None
    # `before_create`: find first, then update or create (a retry after a timed-out create finds the record).
    # `on_duplicate`: create first; a `duplicate` answer (see `responses`) finds the record, then updates it.
    lookup: Literal["before_create", "on_duplicate"] = "before_create"
    then: list[GenericRequest] = Field(default_factory=list)
    # Value maps applied before rendering: `tags` or `fields.<name>` → {command value: CRM value}, e.g. tag
    # names to the CRM's tag ids. `unmapped` says what happens to a value a map lacks.
    value_maps: dict[
        Annotated[str, Field(pattern=r"^(tags|fields\.[A-Za-z0-9_]+)$")], dict[str, JsonValue]
    ] = Field(default_factory=dict)
    unmapped: Literal["error", "drop", "keep"] = "error"

    @model_validator(mode="after")
    def _recipe_is_complete(self) -> GenericOperation:
        if self.lookup == "on_duplicate" and (self.find is None or self.update is None):
            raise ValueError(
                "lookup: on_duplicate needs both `find` and `update` (to converge on the record)"
            )
        if self.update is not None and self.find is None:
            raise ValueError("update: needs `find` too (the record id must be found when it is not known)")
        return self


class GenericResponseRule(StrictModel):
    """Classifies an answer: the first rule whose `status` and `when` match decides its outcome."""

    status: Annotated[list[_Status], Field(min_length=1)]
    # JMESPath over the JSON answer; the rule matches when it is truthy (no `when`: the status is enough).
    when: Expression | None = None
    outcome: ResponseOutcome


class GenericResponses(StrictModel):
    """How a connection's answers are read, before the default classes (DESIGN.md error classes)."""

    rules: list[GenericResponseRule] = Field(default_factory=list)
    # JMESPath over an error answer giving the CRM's reason, kept verbatim in DLQ headers, results and logs.
    # Unset: `error.message`, `message`, `errors`, `error`, `detail`, in that order.
    message: Expression | None = None


class GenericOptions(StrictModel):
    """Options of a `generic` REST connection (a self-hosted CRM targeted by configuration alone)."""

    # Per command op; `default` serves every op not listed.
    operations: dict[str, GenericOperation] = Field(default_factory=lambda: {"default": GenericOperation()})
    # Header that carries the command id (the write's key) so the CRM can deduplicate; None: not sent.
    idempotency_header: str | None = "Idempotency-Key"
    # Merge queued commands of one identity (last write wins per field, tags as a union). Turn off when
    # the endpoint is not an upsert.
    coalesce: bool = True
    responses: GenericResponses = Field(default_factory=GenericResponses)
    # How long a record id found or created stays remembered for its identity (0: find every time).
    record_id_ttl_s: Annotated[float, Field(ge=0)] = 300.0

    @model_validator(mode="after")
    def _known_ops(self) -> GenericOptions:
        known = {
            "default",
            "upsert_contact",
            "upsert_lead",
            "add_tags",
            "add_note",
            "create_ticket",
            "attach_order",
            "notify_bot",
        }
        unknown = sorted(set(self.operations) - known)
        if unknown:
            raise ValueError(f"operations: unknown op(s) {unknown}; expected some of {sorted(known)}")
        return self


class BotWebhookOptions(StrictModel):
    """Options of the reserved `bot` connection (url and secret come from the tenant's `bot_webhook`)."""

    # `type` of a notification whose command has no event_type.
    default_type: str = "crm.notification"


_OPTIONS_BY_KIND: dict[str, type[BaseModel]] = {
    "hubspot": HubSpotOptions,
    "salesforce": SalesforceOptions,
    "generic": GenericOptions,
    "bot_webhook": BotWebhookOptions,
}


class ConnectionConfig(StrictModel):
    kind: Literal["hubspot", "salesforce", "generic", "bot_webhook"]
    # Required for every kind but bot_webhook, whose URL is the tenant's `bot_webhook.url`.
    base_url: Annotated[str | None, Field(pattern=r"^https?://[^\s/]+\S*$")] = None
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig(kind="none"))
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    # Records per batch request (HubSpot at most 100, Salesforce at most 200).
    batch_size: Annotated[int, Field(ge=1, le=200)] = 100
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    max_retry_after_s: Annotated[float, Field(gt=0)] = 60.0
    # Kind-specific settings: see HubSpotOptions, SalesforceOptions, GenericOptions, BotWebhookOptions.
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options_and_limits_fit_kind(self) -> ConnectionConfig:
        if self.base_url is None and self.kind != "bot_webhook":
            raise ValueError(f"base_url: required for kind {self.kind!r} (e.g. https://api.hubapi.com)")
        if self.kind == "hubspot" and self.batch_size > 100:
            raise ValueError(
                f"batch_size: HubSpot batch endpoints take at most 100 inputs (got {self.batch_size})"
            )
        try:
            _OPTIONS_BY_KIND[self.kind].model_validate(self.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(
                f"options.{where}: {first['msg']} (valid options for kind {self.kind!r}: "
                f"{sorted(_OPTIONS_BY_KIND[self.kind].model_fields)})"
            ) from None
        return self

    def hubspot_options(self) -> HubSpotOptions:
        return HubSpotOptions.model_validate(self.options)

    def salesforce_options(self) -> SalesforceOptions:
        return SalesforceOptions.model_validate(self.options)

    def generic_options(self) -> GenericOptions:
        return GenericOptions.model_validate(self.options)

    def bot_options(self) -> BotWebhookOptions:
        return BotWebhookOptions.model_validate(self.options)
