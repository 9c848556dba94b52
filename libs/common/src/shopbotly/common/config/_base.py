"""Building blocks of the config file: strict models and secret references."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    model_validator,
)

__all__ = ["ApiKey", "Name", "SecretRef", "StrictModel", "union_by_kind"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class StrictModel(BaseModel):
    """Config models reject unknown keys, so a typo is an error and not a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(StrictModel):
    """A reference to a secret: `{env: NAME}` or `{file: /path}`. Inline secret values are refused."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "secrets are references, not values: write {env: VARIABLE_NAME} or {file: /path/to/secret}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference names exactly one of `env` or `file`")
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"file:{self.file}"

    def resolve(self) -> str:
        """The secret's value. Raises LookupError naming the reference (never the value) when absent."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise LookupError(f"secret {self.describe()} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as exc:
            raise LookupError(f"secret {self.describe()} cannot be read: {exc.strerror}") from None


class ApiKey(StrictModel):
    """A tenant's API key, stored as the SHA-256 of the key (keys are random, 32+ bytes: no KDF needed)."""

    id: Name
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    scopes: list[str] = Field(default_factory=lambda: ["leads", "orders", "tickets"])

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return hmac.compare_digest(digest, self.sha256)

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()


def union_by_kind(
    family: str,
    models: Mapping[str, type[BaseModel]],
    check: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
) -> Any:
    """The pydantic union of a kind registry's models (kind → model), keyed on `kind` and validated once:
    a missing or unknown kind fails naming the known ones (pydantic's own message is about "tags"), then
    `check(kind, data)` may refuse what the kind's model would only call an extra input."""

    def known_kind(data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("kind")
            if kind is None:
                raise ValueError(f"kind: required, one of: {', '.join(models)}")
            if not isinstance(kind, str) or kind not in models:
                raise ValueError(f"kind: unknown {family} kind {kind!r}; known kinds: {', '.join(models)}")
            check(kind, data)
        return data

    members: Iterable[type[BaseModel]] = models.values()
    return Annotated[
        Union[tuple(members)],  # noqa: UP007 - built from the registry at run time
        Discriminator("kind"),
        BeforeValidator(known_kind),
    ]
