"""Durable accept under a broker outage, on a PRIVATE broker (127.0.0.1:19192) this test may stop:
broker down → 503 with Retry-After and never a 2xx; broker back → 202 again, and every event is stored."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from shopbotly.common.events import RawEvent
from shopbotly.common.kafka import KafkaSettings, make_admin
from shopbotly.common.topics import ensure_topics
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import Running, read_topic, running_app, signed_headers
from shopbotly.testkit.kafka import KAFKA_SH

pytestmark = [pytest.mark.integration, pytest.mark.fault]

PORT = 19192


class PrivateBroker:
    def __init__(self, run_dir: Path) -> None:
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(PORT),
            "KAFKA_CONTROLLER_PORT": str(PORT + 1),
            "SHOPBOTLY_RUN_DIR": str(run_dir),
            "KAFKA_START_TIMEOUT": "120",
        }
        self.bootstrap = f"127.0.0.1:{PORT}"

    def run(self, action: str) -> None:
        subprocess.run([str(KAFKA_SH), action], check=True, env=self.env, timeout=180)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path)
    try:
        try:
            broker.run("start")
        except subprocess.CalledProcessError:
            # kafka.sh can report a start as failed while the JVM is still exec'ing on a loaded machine; a
            # second `start` returns at once if it is in fact running, or starts it.
            broker.run("start")
        yield broker
    finally:
        # Also after a failed start: never leave a broker behind on the private port.
        subprocess.run([str(KAFKA_SH), "stop"], check=False, env=broker.env, timeout=120)


async def _wait_for(ingest: Running, status: int, within_s: float = 60.0) -> None:
    """Poll /readyz until it answers `status` (a bound on waiting, not a speed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (resp := await ingest.client.get("/readyz")).status_code != status:
        assert loop.time() < deadline, f"/readyz stayed {resp.status_code}: {resp.text}"
        await asyncio.sleep(0.2)


def _event(n: int) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps({"type": "order.paid", "data": {"email": f"c{n}@example.com"}})
    return body, signed_headers("shopbotly", body, msg_id=f"msg_{n}")


async def test_broker_down_gives_503_with_retry_after_and_back_gives_202(
    private_broker: PrivateBroker,
) -> None:
    kafka = KafkaSettings(bootstrap=private_broker.bootstrap, topic_prefix="outage.", partitions=1)
    admin = make_admin(kafka)
    await admin.start()
    try:
        await ensure_topics(admin, kafka.topics().values())
    finally:
        await admin.close()
    settings = Settings(kafka=kafka, publish_timeout_s=2.0, broker_check_interval_s=0.5, retry_after_s=7)
    url = "/v1/webhooks/acme/shopbotly"

    auth = {"authorization": "Bearer " + "sbk_test_" + "k" * 40}

    async def keyed_lead(key: str) -> httpx.Response:
        return await ingest.client.post(
            "/api/v1/leads", json={"email": "k@y.zz"}, headers={**auth, "idempotency-key": key}
        )

    async with running_app(settings) as ingest:
        body, headers = _event(0)
        assert (await ingest.client.post(url, content=body, headers=headers)).status_code == 202
        stored = await keyed_lead("before")
        assert stored.status_code == 202, stored.text

        private_broker.run("stop")
        # Right after the stop and once the monitor noticed: both must refuse, never accept.
        answers = []
        for n in range(1, 4):
            body, headers = _event(n)
            answers.append(await ingest.client.post(url, content=body, headers=headers))
        await _wait_for(ingest, 503)
        for n in range(4, 7):
            body, headers = _event(n)
            answers.append(await ingest.client.post(url, content=body, headers=headers))
        assert [a.status_code for a in answers] == [503] * 6
        assert all(a.headers["retry-after"] == "7" for a in answers)
        assert all(a.json()["code"] == "unavailable" for a in answers)
        lead = await ingest.client.post("/api/v1/leads", json={"email": "x@y.zz"}, headers=auth)
        assert lead.status_code == 503 and lead.headers["retry-after"] == "7"
        # A new Idempotency-Key cannot be claimed; one stored before is answered from memory.
        claimed = await keyed_lead("during")
        assert claimed.status_code == 503 and claimed.headers["retry-after"] == "7"
        repeat = await keyed_lead("before")
        assert (repeat.status_code, repeat.json()) == (202, stored.json())

        private_broker.run("start")
        await _wait_for(ingest, 200)
        # The senders retry: every refused event is accepted now (none was remembered as seen).
        for n in range(1, 7):
            body, headers = _event(n)
            resp = await ingest.client.post(url, content=body, headers=headers)
            assert resp.status_code == 202, resp.text

        # The client retries its keyed lead until the records' follower has reconnected too.
        async def until_accepted() -> httpx.Response:
            while (resp := await keyed_lead("during")).status_code == 503:
                await asyncio.sleep(0.5)
            return resp

        retried = await asyncio.wait_for(until_accepted(), 60)
        assert retried.status_code == 202, retried.text

    records = await read_topic(kafka, expected=9, timeout_s=30)
    # At least once: a publish that timed out may still have been delivered later, so ids can repeat.
    ids = {RawEvent.from_json(r.value).id for r in records}
    assert {i for i in ids if i.startswith("msg_")} == {f"msg_{n}" for n in range(7)}
    assert {i for i in ids if i.startswith("lead_")} == {
        stored.json()["event_id"],
        retried.json()["event_id"],
    }
