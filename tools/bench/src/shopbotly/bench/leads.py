"""Lead API latency with and without Idempotency-Key, measured side by side in one ingest app.

Each round sends one lead without a key, one with a new key (claim on `lead-idempotency`, read back, then the
publish) and the same keyed lead again (answered from memory), in that order, sequentially, so the three share
the machine's load; the figures to read are the ratios of the medians. The app runs in-process (no socket)
against the broker at SHOPBOTLY_KAFKA_BOOTSTRAP on topics with a private prefix (created here, deleted at the
end). Not part of `make bench`; nothing is asserted.

    python -m shopbotly.bench.leads [--requests 400] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from shopbotly.bench.ingest import ingest_topics
from shopbotly.common.kafka import KafkaSettings
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import API_KEY, running_app, set_secret_env

__all__ = ["run"]

KINDS = ("no key", "new key", "repeat")


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
    }


async def run(requests: int) -> dict[str, Any]:
    set_secret_env()
    kafka = KafkaSettings(topic_prefix=f"benchlead{uuid.uuid4().hex[:6]}.")
    await ingest_topics(kafka, create=True)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    auth = {"authorization": f"Bearer {API_KEY}"}
    try:
        async with running_app(Settings(kafka=kafka)) as app:
            for i in range(requests):
                body = {"email": f"lead{i}@example.com", "first_name": "Lead"}
                for kind in KINDS:
                    headers = auth if kind == "no key" else {**auth, "idempotency-key": f"bench-{i}"}
                    started = time.perf_counter()
                    resp = await app.client.post("/api/v1/leads", json=body, headers=headers)
                    times[kind].append(time.perf_counter() - started)
                    if resp.status_code != 202:
                        raise RuntimeError(f"{kind}: {resp.status_code} {resp.text}")
    finally:
        await ingest_topics(kafka, create=False)
    base = statistics.median(times["no key"])
    return {
        "requests": requests,
        **{kind: _summary(ts) for kind, ts in times.items()},
        "new_key_vs_no_key": round(statistics.median(times["new key"]) / base, 2),
        "repeat_vs_no_key": round(statistics.median(times["repeat"]) / base, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="rounds (three requests each)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    text = json.dumps(asyncio.run(run(args.requests)), indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
