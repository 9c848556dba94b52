"""order-reader settings: `SHOPBOTLY_*` environment variables on top of the shared service settings."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from shopbotly.common.http import HttpServerSettings
from shopbotly.common.settings import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    """Everything the order-reader reads from its environment (see docs/services/order-reader.md)."""

    port: int = Field(default=8081, ge=1, le=65535)
    # The SQLite store (data and per-partition offsets). Keep it on a volume that survives restarts,
    # or every start is a cold rebuild from the compacted topics.
    data_dir: Path = Path(".run/data/order-reader")
    # Ready once every partition is within this many messages of the high watermark seen at start.
    ready_max_lag: int = Field(default=0, ge=0)
    # Responses kept in memory in front of SQLite (each entry is one encoded order or ticket, ~0.5-1 KB).
    cache_entries: int = Field(default=200_000, ge=0)
    # Cache-Control max-age of lookup answers: short, since an order changes while the customer chats.
    cache_max_age_s: int = Field(default=5, ge=0, le=3600)
    # SQLite page cache per connection, in MiB. Enough for both indexes of ~1M orders (~100 MB) keeps a
    # rebuild's random index inserts in memory.
    sqlite_cache_mb: int = Field(default=128, ge=1)
    # How much of the store file the lookup connection reads through a memory map (0: none, every page is
    # copied in with a read). Mapped pages are the OS page cache itself, so a lookup outside SQLite's own
    # cache costs no system call and no copy: a third less CPU per read over 1M orders (measured).
    sqlite_mmap_mb: int = Field(default=1024, ge=0)
    # Most records handed to one store transaction. Only a backlog fills it (a rebuild: larger is faster);
    # in steady state a batch is whatever arrived since the last poll.
    fetch_max_records: int = Field(default=20_000, ge=1)
    # Liveness fails when the consumer loop has not come round for this long.
    liveness_max_age_s: float = Field(default=60.0, gt=0)
    # Seconds between rebuild progress log lines while catching up.
    progress_log_interval_s: float = Field(default=5.0, gt=0)
    # Seconds between attempts while the broker or the topics are not there yet.
    startup_retry_s: float = Field(default=2.0, gt=0)
    # Read deadlines and the connection cap of the HTTP server (`SHOPBOTLY_HTTP_*`).
    http: HttpServerSettings = Field(default_factory=HttpServerSettings)

    @model_validator(mode="after")
    def _production_data_dir(self) -> Self:
        if self.environment == "production" and not self.data_dir.is_absolute():
            raise ValueError("SHOPBOTLY_DATA_DIR must be an absolute path (a mounted volume) in production")
        return self

    @property
    def store_path(self) -> Path:
        return self.data_dir / "order-reader.sqlite3"
