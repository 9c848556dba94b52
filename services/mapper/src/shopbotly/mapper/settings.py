"""The mapper's settings: `SHOPBOTLY_*` environment variables on top of what every service shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from shopbotly.common.settings import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    """Probes and metrics on `port`; faust's consumer group and local data under `data_dir`."""

    port: Annotated[int, Field(ge=1, le=65535)] = 9101
    data_dir: Path = Path(".run/mapper")
    # faust app id = consumer group id; empty: "<topic prefix>mapper", so a topic prefix isolates it too.
    mapper_app_id: str = ""
    # Events mapped per batch; a batch's produces are awaited together before its events are acknowledged.
    mapper_batch_max: Annotated[int, Field(ge=1, le=10_000)] = 500
    # How long a batch waits to fill; the latency an event can pick up when traffic is light.
    mapper_batch_within_ms: Annotated[int, Field(ge=1, le=10_000)] = 20
    # Liveness: /healthz fails when a batch has been stuck (e.g. Kafka unreachable) for this long.
    mapper_stuck_after_s: Annotated[float, Field(gt=0)] = 120.0
    mapper_uvloop: bool = True

    @property
    def app_id(self) -> str:
        return self.mapper_app_id or f"{self.kafka.topic_prefix}mapper"
