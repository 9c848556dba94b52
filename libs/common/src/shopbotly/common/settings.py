"""Settings base for every service: `SHOPBOTLY_*` environment variables, failing fast with a clear message."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shopbotly.common.kafka import KafkaSettings

__all__ = ["ServiceSettings", "load_settings"]


class ServiceSettings(BaseSettings):
    """What every service shares. Services subclass it and add their own fields."""

    model_config = SettingsConfigDict(env_prefix="SHOPBOTLY_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"
    config: Path = Path("config/shopbotly.yaml")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    host: str = "127.0.0.1"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    shutdown_grace_s: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        if self.environment == "production" and self.kafka.security_protocol == "PLAINTEXT":
            raise ValueError(
                "SHOPBOTLY_KAFKA_SECURITY_PROTOCOL=PLAINTEXT is refused in production; use SSL or SASL_SSL"
            )
        if self.environment == "production" and self.kafka.replication_factor < 3:
            raise ValueError("SHOPBOTLY_KAFKA_REPLICATION_FACTOR must be at least 3 in production")
        return self


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment (`overrides`, e.g. command-line options, win) or exit with one line
    per invalid variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid settings for {cls.__name__}:"]
        for err in exc.errors():
            name = prefix + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else prefix.rstrip("_")
            secret = any(w in name for w in ("PASSWORD", "SECRET", "TOKEN"))
            shown = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"  {name}: {err['msg']}{shown}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
