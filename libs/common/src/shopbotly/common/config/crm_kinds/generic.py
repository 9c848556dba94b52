"""A self-hosted CRM targeted by configuration alone: a `generic` REST connection's options and limits."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, JsonValue, model_validator

from shopbotly.common.config._base import StrictModel
from shopbotly.common.config._connections import ConnectionConfig, FieldLimits
from shopbotly.common.config._mapping import Expression, Template, _check_template

__all__ = [
    "GenericConnection",
    "GenericOperation",
    "GenericOptions",
    "GenericRequest",
    "GenericResponseRule",
    "GenericResponses",
    "ResponseOutcome",
]

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


class GenericConnection(ConnectionConfig):
    """A REST CRM described by its `options.operations` (docs/configuration.md has recipes)."""

    kind: Literal["generic"]
    options: GenericOptions = Field(default_factory=GenericOptions)

    title: ClassVar[str] = "generic"
    max_batch_size: ClassVar[int] = 200
    # Whatever the event had: the CRM's limits are not known.
    field_limits: ClassVar[FieldLimits] = FieldLimits(per_field={}, default=None, body=None)
