"""End-to-end benchmark against the running local stack (`make up`): signed bot webhooks at a fixed rate, and
the latency from ingest accepting an event to the CRM write applied, read from crm-writer's histogram.

Each event is a `conversation.started` for a new e-mail, which the `shopbotly` preset maps to exactly one
`upsert_contact`; loss is checked by counting the run's contacts in the CRM emulator afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from shopbotly.common.signatures import standard_webhooks_headers

INGEST = "http://127.0.0.1:8080"
WRITER = "http://127.0.0.1:9102"
E2E_METRIC = "shopbotly_crm_writer_e2e_latency_seconds"


def histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram, summed over label sets."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(f"{name}_bucket{{"):
            continue
        labels, value = line.rsplit(" ", 1)
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        bound = float("inf") if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The q-quantile of the observations between two scrapes, interpolated within buckets as PromQL does."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 1.0)
        prev_bound, prev_count = bound, count
    return prev_bound


def _secret(env_file: Path, name: str) -> str:
    for line in env_file.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise LookupError(f"{name} not in {env_file}")


async def bench_e2e(
    *,
    rate: int = 500,
    seconds: float = 60.0,
    env_file: Path = Path("config/demo.env"),
    settle_timeout_s: float = 300.0,
) -> dict[str, Any]:
    secret = _secret(env_file, "DEMO_BOT_WEBHOOK_SECRET")
    run = uuid.uuid4().hex[:8]
    total = int(rate * seconds)
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as client:
        before = histogram((await client.get(f"{WRITER}/metrics")).text, E2E_METRIC)
        statuses: dict[int, int] = {}
        accepted = 0

        async def send(i: int) -> None:
            nonlocal accepted
            body = json.dumps(
                {
                    "type": "conversation.started",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "data": {
                        "conversation_id": f"c-{run}-{i}",
                        "customer": {"email": f"bench-{run}-{i}@example.com", "name": f"Bench User{i}"},
                    },
                }
            ).encode()
            headers = standard_webhooks_headers(secret, f"msg_{run}_{i}", int(time.time()), body)
            for attempt in range(5):  # a platform retries 503s; so does the bench
                resp = await client.post(
                    f"{INGEST}/v1/webhooks/demo/shopbotly",
                    content=body,
                    headers={**headers, "content-type": "application/json"},
                )
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                if resp.status_code == 202:
                    accepted += 1
                    return
                await asyncio.sleep(0.2 * (attempt + 1))

        started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        for i in range(total):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
        send_s = time.monotonic() - started

        deadline = time.monotonic() + settle_timeout_s
        while time.monotonic() < deadline:
            after = histogram((await client.get(f"{WRITER}/metrics")).text, E2E_METRIC)
            observed = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
            if observed >= accepted:
                break
            await asyncio.sleep(1.0)
        after = histogram((await client.get(f"{WRITER}/metrics")).text, E2E_METRIC)
    observed = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    p50, p99 = quantile(before, after, 0.5), quantile(before, after, 0.99)
    return {
        "rate_target_per_s": rate,
        "seconds": seconds,
        "events": total,
        "achieved_send_rate_per_s": round(total / send_s, 1),
        "accepted_202": accepted,
        "answers_by_status": statuses,
        "applied_observed_in_histogram": int(observed),
        "lost": max(0, accepted - int(observed)),
        "e2e_p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
        "e2e_p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        "targets": {
            "p50_le_50ms": p50 is not None and p50 <= 0.050,
            "p99_le_250ms": p99 is not None and p99 <= 0.250,
            "zero_loss": accepted == total and int(observed) >= accepted,
        },
        "note": "quantiles interpolated within histogram buckets (E2E_BUCKETS), as histogram_quantile does",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="end-to-end latency against the running local stack")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = asyncio.run(bench_e2e(rate=args.rate, seconds=args.seconds))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
