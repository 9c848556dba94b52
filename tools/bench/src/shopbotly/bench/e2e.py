"""End-to-end benchmark against the running local stack (`make up`): signed bot webhooks at a fixed rate, and
the latency from ingest accepting an event to the CRM write applied, read from crm-writer's histogram.

Each event is a `conversation.started` for a new e-mail, which the `shopbotly` preset maps to exactly one
`upsert_contact`; loss is checked by counting the run's contacts in the CRM emulator afterwards (its admin
API, `/_emulator/state`), so other traffic on the stack does not hide a loss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from shopbotly.bench.targets import target
from shopbotly.common.signatures import standard_webhooks_headers

INGEST = "http://127.0.0.1:8080"
WRITER = "http://127.0.0.1:9102"
EMULATOR = "https://127.0.0.1:8090"
# make up's emulator serves HTTPS with this CA (deploy/local/stack.sh, STACK_EMULATOR_CA).
EMULATOR_CA = Path(
    os.environ.get("STACK_EMULATOR_CA")
    or Path(__file__).resolve().parents[5] / ".run/tls/crm-emulator-ca.pem"
)
# The sender is a client on the same machine; within 2 % of the asked rate counts as holding it.
RATE_TOLERANCE = 0.98
E2E_METRIC = "shopbotly_crm_writer_e2e_latency_seconds"
# Concurrent senders, each with a client of one connection of its own: httpcore scans every connection of a
# pool for each request (with a syscall each), so one pool of many connections costs the sender more CPU than
# the request itself. At 500/s and ingest's ~10 ms per request, ~5 senders are busy.
SENDERS = 16


def histogram(text: str, name: str, *, connection: str | None = None) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram, summed over label sets (of one `connection`)."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(f"{name}_bucket{{"):
            continue
        if connection is not None and f'connection="{connection}"' not in line:
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
    connection: str = "demo:hubspot",
) -> dict[str, Any]:
    secret = _secret(env_file, "DEMO_BOT_WEBHOOK_SECRET")
    run = uuid.uuid4().hex[:8]
    total = int(rate * seconds)
    async with httpx.AsyncClient(timeout=10) as client:
        before = histogram((await client.get(f"{WRITER}/metrics")).text, E2E_METRIC, connection=connection)
        statuses: dict[int, int] = {}
        accepted = 0

        async def send(client: httpx.AsyncClient, i: int) -> None:
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

        # A fixed pool of senders, each taking the next event when it is due: a task per event would queue
        # thousands of requests in httpx's pool, whose request assignment is quadratic in the queue length,
        # and the sender (not the stack) would become what is measured.
        started = time.monotonic()
        upcoming = iter(range(total))

        async def sender() -> None:
            async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=1)) as own:
                for i in upcoming:
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await send(own, i)

        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        send_s = time.monotonic() - started

        deadline = time.monotonic() + settle_timeout_s
        while time.monotonic() < deadline:
            after = histogram((await client.get(f"{WRITER}/metrics")).text, E2E_METRIC, connection=connection)
            observed = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
            if observed >= accepted:
                break
            await asyncio.sleep(1.0)
        after = histogram((await client.get(f"{WRITER}/metrics")).text, E2E_METRIC, connection=connection)
        settled_s = time.monotonic() - started - send_s
        # Loss is counted in the CRM itself: the histogram is shared with anything else the stack applies.
        admin = _emulator_admin(env_file)
        in_crm = await _contacts_in_crm(f"bench-{run}-", admin)
        while in_crm < accepted and time.monotonic() < deadline:
            await asyncio.sleep(5.0)
            in_crm = await _contacts_in_crm(f"bench-{run}-", admin)
    observed = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    p50, p99 = quantile(before, after, 0.5), quantile(before, after, 0.99)
    p50_ms = round(p50 * 1000, 1) if p50 is not None else None
    p99_ms = round(p99 * 1000, 1) if p99 is not None else None
    achieved = round(accepted / send_s, 1) if send_s > 0 else None
    lost = max(0, accepted - in_crm)
    return {
        "rate_target_per_s": rate,
        "seconds": seconds,
        "events": total,
        "achieved_rate_per_s": achieved,
        "send_s": round(send_s, 2),
        "accepted_202": accepted,
        "answers_by_status": statuses,
        "applied_observed_in_histogram": int(observed),
        "contacts_in_crm": in_crm,
        "lost": lost,
        "settle_s": round(settled_s, 1),
        "e2e_p50_ms": p50_ms,
        "e2e_p99_ms": p99_ms,
        "targets": {
            "rate": target(
                achieved,
                ">=",
                round(rate * RATE_TOLERANCE, 1),
                unit="events/s",
                what=f"202s per second over the {seconds:g} s run ({rate}/s asked, within 2 %)",
            ),
            "p50": target(p50_ms, "<=", 50, unit="ms", what="p50, ingest accept → CRM applied"),
            "p99": target(p99_ms, "<=", 250, unit="ms", what="p99, ingest accept → CRM applied"),
            "all_accepted": target(
                accepted, "==", total, unit="events", what="events answered 202 (up to 5 tries each)"
            ),
            "zero_loss": target(
                lost, "==", 0, unit="events", what="events answered 202 but not a contact in the CRM"
            ),
        },
        "note": "quantiles interpolated within histogram buckets (E2E_BUCKETS), as histogram_quantile does",
    }


def _emulator_admin(env_file: Path) -> dict[str, str]:
    """The emulator's admin API header, when the stack sets an admin token (the demo stack does not)."""
    token = os.environ.get("SHOPBOTLY_EMULATOR_ADMIN_TOKEN")
    if token is None:
        try:
            token = _secret(env_file, "SHOPBOTLY_EMULATOR_ADMIN_TOKEN")
        except LookupError:
            return {}
    return {"Authorization": f"Bearer {token}"}


async def _contacts_in_crm(prefix: str, headers: dict[str, str]) -> int:
    """HubSpot contacts in the CRM emulator whose identity (the e-mail) starts with `prefix`."""
    trust = ssl.create_default_context(cafile=EMULATOR_CA)
    async with httpx.AsyncClient(verify=trust) as emulator:
        response = await emulator.get(
            f"{EMULATOR}/_emulator/state", params={"system": "hubspot"}, headers=headers, timeout=120
        )
    response.raise_for_status()
    records: dict[str, Any] = response.json()["records"]["hubspot"]
    return sum(1 for identity in records if identity.startswith(prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description="end-to-end latency against the running local stack")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = asyncio.run(bench_e2e(rate=args.rate, seconds=args.seconds))
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()


def isolation(healthy: dict[str, Any], one_down: dict[str, Any]) -> dict[str, Any]:
    """The healthy connection's latency with another connection down, against the all-healthy run."""

    def ratio(key: str) -> float | None:
        up, down = healthy.get(key), one_down.get(key)
        return (
            round(down / up, 3)
            if isinstance(up, int | float) and isinstance(down, int | float) and up
            else None
        )

    p50, p99 = ratio("e2e_p50_ms"), ratio("e2e_p99_ms")
    return {
        "healthy_p50_ms": healthy.get("e2e_p50_ms"),
        "healthy_p99_ms": healthy.get("e2e_p99_ms"),
        "one_down_p50_ms": one_down.get("e2e_p50_ms"),
        "one_down_p99_ms": one_down.get("e2e_p99_ms"),
        "one_down_lost": one_down.get("lost"),
        "targets": {
            "p50_ratio": target(
                p50, "<=", 1.2, unit="x", what="HubSpot p50 with the bot endpoint down / all up"
            ),
            "p99_ratio": target(
                p99, "<=", 1.2, unit="x", what="HubSpot p99 with the bot endpoint down / all up"
            ),
        },
    }
