"""pytest plugin: a real Kafka broker for integration tests, and per-test unique topics.

Uses the broker at `SHOPBOTLY_KAFKA_BOOTSTRAP` when one answers; otherwise starts the project's local
broker (deploy/local/kafka.sh) once for the session and stops it at the end if it started it.
Loaded from the repository's root conftest.py. It also gives in-process services a log renderer with plain
tracebacks: structlog's default renders each local variable of every frame, which took seconds per error
under load, stalled the event loop past a consumer's session timeout and got the test's writer fenced.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from shopbotly.common.kafka import KafkaSettings, make_admin
from shopbotly.common.topics import ensure_topics

__all__ = ["REPO_ROOT", "broker_answers", "kafka_bootstrap", "kafka_settings", "topic_prefix"]

REPO_ROOT = Path(__file__).resolve().parents[5]
KAFKA_SH = REPO_ROOT / "deploy" / "local" / "kafka.sh"


def pytest_configure(config: pytest.Config) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ]
    )


def broker_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    bootstrap = os.environ.get("SHOPBOTLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    if broker_answers(bootstrap):
        yield bootstrap
        return
    port = bootstrap.rsplit(":", 1)[1]
    env = {**os.environ, "KAFKA_PORT": port}
    subprocess.run([str(KAFKA_SH), "start"], check=True, env=env)
    try:
        yield bootstrap
    finally:
        subprocess.run([str(KAFKA_SH), "stop"], check=False, env=env)


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to this test, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[KafkaSettings]:
    """Settings for this test's own topics, all created (3 partitions each) before the test runs."""
    settings = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, partitions=3)
    admin = make_admin(settings)
    await admin.start()
    try:
        await ensure_topics(admin, settings.topics().values())
    finally:
        await admin.close()
    yield settings
    admin = make_admin(settings)
    await admin.start()
    try:
        await admin.delete_topics([s.name for s in settings.topics().values()])
    except Exception:  # noqa: S110 - best effort cleanup; unique names mean leftovers are harmless
        pass
    finally:
        await admin.close()
