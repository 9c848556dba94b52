"""ingest benchmark: accepted signed 1 KiB webhooks/s against a bare FastAPI 202, and p99 at half the rate.

Runs the real `python -m shopbotly.ingest` process (uvloop, httptools, one process, no access log) against
the Kafka broker at SHOPBOTLY_KAFKA_BOOTSTRAP, on topics with a private prefix (created here, deleted at
the end), and the baseline app under the same uvicorn settings. Load comes from `wrk` with a Lua script
that sends pre-signed Standard Webhooks deliveries, each with its own `webhook-id` (so each one is a new
event, verified with HMAC-SHA256 and acknowledged by Kafka with acks=all), and counts the 202 answers.
Both servers get the same script, connections and duration. Nothing is asserted; figures come back as a dict.

    python -m shopbotly.bench.ingest [--duration 10] [--connections 32] [--rounds 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import yaml
from aiokafka import TopicPartition
from fastapi import FastAPI, Request, Response

from shopbotly.bench.targets import target
from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer
from shopbotly.common.signatures import sign_standard_webhooks
from shopbotly.common.topics import Topic, ensure_topics

__all__ = ["baseline_app", "bench_ingest", "ingest_topics", "main"]

TENANT = "bench"
SOURCE = "bot"
PATH = f"/v1/webhooks/{TENANT}/{SOURCE}"
# A benchmark-only secret, public on purpose (like config/demo.env).
SECRET = "whsec_" + "YmVuY2gtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="  # base64("bench-secret-0123456789abcdef")
SECRET_ENV = "SHOPBOTLY_BENCH_INGEST_SECRET"  # noqa: S105 - the variable's name, not a secret

# wrk: each thread reads its share of pre-signed (id, signature) pairs; `response` counts statuses;
# `delay` (when RATE_DELAY_MS > 0) paces each connection for the fixed-rate run.
_LUA = r"""
local body = __BODY__
local data_file = "__DATA__"
local delay_ms = __DELAY__
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  ids, sigs = {}, {}
  local n, i = tonumber(__THREADS__), 0
  for line in io.lines(data_file) do
    if i % n == tid then
      local sp = line:find(" ")
      ids[#ids + 1] = line:sub(1, sp - 1)
      sigs[#sigs + 1] = line:sub(sp + 1)
    end
    i = i + 1
  end
  idx, accepted, other = 0, 0, 0
  ts = "__TS__"
end

function request()
  idx = idx + 1
  local k = ((idx - 1) % #ids) + 1
  return wrk.format("POST", "__PATH__", {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = ids[k],
    ["webhook-timestamp"] = ts,
    ["webhook-signature"] = sigs[k],
  }, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end

if delay_ms > 0 then
  function delay() return delay_ms end
end

function done(summary, latency, requests)
  local acc, oth = 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    oth = oth + t:get("other")
  end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"accepted":%d,"other":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_timeout":%d,"err_status":%d}\n',
    summary.requests, summary.duration, acc, oth, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status))
end
"""


def baseline_app() -> FastAPI:
    """The reference: a bare FastAPI POST that reads the body and answers 202 (`uvicorn --factory`)."""
    app = FastAPI()

    @app.post(PATH.replace(TENANT, "{tenant}").replace(SOURCE, "{source}"), status_code=202)
    async def receive(request: Request) -> Response:
        await request.body()
        return Response(b'{"event_id":"x"}', status_code=202, media_type="application/json")

    return app


def _body(size: int) -> bytes:
    """A realistic bot event padded to `size` bytes of JSON."""

    def event(text: str) -> bytes:
        data = {"email": "jane.doe@example.com", "text": text}
        return json.dumps({"type": "conversation.message", "data": data}, separators=(",", ":")).encode()

    return event("x" * max(0, size - len(event(""))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_signed(path: Path, body: bytes, count: int, timestamp: int) -> None:
    prefix = uuid.uuid4().hex[:10]
    with path.open("w") as out:
        for i in range(count):
            msg_id = f"msg_{prefix}_{i}"
            out.write(f"{msg_id} {sign_standard_webhooks(SECRET, msg_id, timestamp, body)}\n")


def _lua(script: Path, data: Path, body: bytes, timestamp: int, threads: int, delay_ms: float) -> None:
    text = (
        _LUA.replace("__BODY__", json.dumps(body.decode()))
        .replace("__DATA__", str(data))
        .replace("__DELAY__", f"{delay_ms:.3f}")
        .replace("__THREADS__", str(threads))
        .replace("__TS__", str(timestamp))
        .replace("__PATH__", PATH)
    )
    script.write_text(text)


def _run_wrk(
    url: str,
    workdir: Path,
    body: bytes,
    *,
    count: int,
    duration_s: int,
    connections: int,
    threads: int,
    delay_ms: float,
) -> dict[str, Any]:
    timestamp = int(time.time())
    data = workdir / f"signed-{uuid.uuid4().hex[:6]}.txt"
    script = workdir / f"load-{uuid.uuid4().hex[:6]}.lua"
    # Fresh ids every run: a repeated id would be a duplicate, answered from memory (not what we measure).
    _write_signed(data, body, count, timestamp)
    _lua(script, data, body, timestamp, threads, delay_ms)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration_s + 120).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH "))
    seconds = raw["duration_us"] / 1e6
    data.unlink()
    return {
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "accepted_per_s": round(raw["accepted"] / seconds, 1),
        "requests": raw["requests"],
        "accepted_202": raw["accepted"],
        "not_202": raw["other"],
        "latency_ms": {
            "p50": raw["p50_us"] / 1000,
            "p90": raw["p90_us"] / 1000,
            "p99": raw["p99_us"] / 1000,
            "max": raw["max_us"] / 1000,
            "mean": round(raw["mean_us"] / 1000, 3),
        },
        "socket_errors": {k.removeprefix("err_"): v for k, v in raw.items() if k.startswith("err_")},
        "duration_s": round(seconds, 2),
    }


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return float(times.user + times.system)


async def ingest_topics(kafka: KafkaSettings, create: bool) -> None:
    """Create (or delete) the topics an ingest process needs under `kafka.topic_prefix`."""
    admin = make_admin(kafka, client_role="bench")
    await admin.start()
    # ingest writes raw events and is ready only once it has read its Idempotency-Key records.
    used = (Topic.RAW_EVENTS, Topic.LEAD_IDEMPOTENCY)
    try:
        if create:
            await ensure_topics(admin, [kafka.topics()[t] for t in used])
        else:
            await admin.delete_topics([kafka.topic(t) for t in used])
    finally:
        await admin.close()


async def _stored(kafka: KafkaSettings) -> int:
    """Records on the raw-events topic: what Kafka holds, to compare with the 202s counted by wrk."""
    consumer = make_consumer(kafka, group_id=None, client_role="bench-count")
    await consumer.start()
    try:
        topic = kafka.topic(Topic.RAW_EVENTS)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(kafka.partitions)])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


def _measure(
    results: dict[str, Any],
    kafka: KafkaSettings,
    body: bytes,
    count: int,
    duration_s: int,
    connections: int,
    threads: int,
    rounds: int,
) -> None:
    """The blocking part: both servers as processes, wrk against each (runs in a worker thread)."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        config = {
            "tenants": {
                TENANT: {"sources": {SOURCE: {"kind": "shopbotly", "secrets": [{"env": SECRET_ENV}]}}}
            }
        }
        (workdir / "shopbotly.yaml").write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            SECRET_ENV: SECRET,
            "SHOPBOTLY_CONFIG": str(workdir / "shopbotly.yaml"),
            "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SHOPBOTLY_LOG_LEVEL": "warning",
        }

        bare_port, ingest_port = _free_port(), _free_port()
        bare = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "shopbotly.bench.ingest:baseline_app", "--factory",
                "--host", "127.0.0.1", "--port", str(bare_port), "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning",
            ],
            env=env,
        )  # fmt: skip
        ingest = subprocess.Popen(
            [sys.executable, "-m", "shopbotly.ingest"], env={**env, "SHOPBOTLY_PORT": str(ingest_port)}
        )
        try:
            _wait_http(f"http://127.0.0.1:{bare_port}/docs", bare)
            _wait_http(f"http://127.0.0.1:{ingest_port}/readyz", ingest)
            servers = {"bare": (bare, bare_port), "ingest": (ingest, ingest_port)}
            # Alternate the two, round after round, so a load change on the machine hits both alike.
            for round_no in range(rounds):
                for name, (proc, port) in servers.items():
                    cpu0 = _cpu_seconds(proc)
                    run = _run_wrk(
                        f"http://127.0.0.1:{port}", workdir, body,
                        count=count, duration_s=duration_s, connections=connections, threads=threads,
                        delay_ms=0,
                    )  # fmt: skip
                    run["server_cpu_s"] = round(_cpu_seconds(proc) - cpu0, 2)
                    run["round"] = round_no + 1
                    results.setdefault(f"{name}_runs", []).append(run)
            for name in servers:
                runs = results[f"{name}_runs"]
                results[name] = {
                    "accepted_per_s_median": statistics.median(r["accepted_per_s"] for r in runs),
                    "p99_ms_median": statistics.median(r["latency_ms"]["p99"] for r in runs),
                    "cpu_ms_per_request": round(
                        1000
                        * sum(r["server_cpu_s"] for r in runs)
                        / max(1, sum(r["requests"] for r in runs)),
                        3,
                    ),
                }

            # Half the maximum accepted rate, paced per connection by wrk's delay(). A connection sends its
            # next request `delay` after the previous answer, so the pause is the per-connection period minus
            # the latency measured in a short calibration run at the first guess.
            target = results["ingest"]["accepted_per_s_median"] / 2
            paced_connections = max(1, min(connections, 16))
            period_ms = paced_connections * 1000 / target
            url = f"http://127.0.0.1:{ingest_port}"
            calibration = _run_wrk(
                url, workdir, body,
                count=count, duration_s=3, connections=paced_connections, threads=threads, delay_ms=period_ms,
            )  # fmt: skip
            results["ingest_half_rate_calibration"] = calibration
            delay_ms = max(0.0, period_ms - calibration["latency_ms"]["mean"])
            half = _run_wrk(
                url, workdir, body,
                count=count, duration_s=duration_s, connections=paced_connections, threads=threads,
                delay_ms=delay_ms,
            )  # fmt: skip
            half["connections"] = paced_connections
            half["delay_ms"] = round(delay_ms, 2)
            half["target_per_s"] = round(target, 1)
            results["ingest_half_rate"] = half
        finally:
            _stop(bare)
            _stop(ingest)


async def bench_ingest(
    *,
    duration_s: int = 10,
    connections: int = 32,
    threads: int = 1,
    body_bytes: int = 1024,
    rounds: int = 2,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    """Accepted signed webhooks/s of ingest vs a bare FastAPI 202 (same uvicorn settings, same wrk load),
    then ingest's latency at half its maximum rate. Returns the figures; asserts nothing."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    kafka = KafkaSettings(
        bootstrap=bootstrap or os.environ.get("SHOPBOTLY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=6,
    )
    await ingest_topics(kafka, create=True)
    body = _body(body_bytes)
    # Enough distinct pre-signed deliveries that none repeats within a run, even at 10k/s.
    count = max(50_000, duration_s * 12_000)
    results: dict[str, Any] = {
        "settings": {
            "duration_s": duration_s,
            "connections": connections,
            "wrk_threads": threads,
            "body_bytes": len(body),
            "scheme": "standard_webhooks (HMAC-SHA256)",
            "server": "uvicorn, uvloop, httptools, 1 process, no access log",
            "rounds": rounds,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    try:
        await asyncio.to_thread(
            _measure, results, kafka, body, count, duration_s, connections, threads, rounds
        )
        results["stored_on_topic"] = await _stored(kafka)
    finally:
        await ingest_topics(kafka, create=False)

    # Every 202 wrk counted; `stored_on_topic` should be at least this (answers still in flight when a wrk
    # run ended are stored but not counted).
    runs = [*results["ingest_runs"], results["ingest_half_rate_calibration"], results["ingest_half_rate"]]
    results["ingest_accepted_total"] = sum(r["accepted_202"] for r in runs)
    results["ratio_vs_bare"] = round(
        results["ingest"]["accepted_per_s_median"] / results["bare"]["accepted_per_s_median"], 3
    )
    results["targets"] = {
        "ratio_vs_bare": target(
            results["ratio_vs_bare"], ">=", 0.6, what="accepted/s, ingest ÷ bare FastAPI 202 (medians)"
        ),
        "p99_at_half_rate": target(
            results["ingest_half_rate"]["latency_ms"]["p99"],
            "<=",
            20,
            unit="ms",
            what=f"p99 at half the maximum rate ({results['ingest_half_rate']['target_per_s']:.0f}/s)",
        ),
        # Every 202 is on the topic (acks=all before the answer): what Kafka holds covers what wrk counted.
        "accepted_stored": target(
            results["stored_on_topic"],
            ">=",
            results["ingest_accepted_total"],
            unit="records",
            what="records on raw-events vs 202 answers counted by wrk",
        ),
    }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/ingest rounds")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = asyncio.run(
        bench_ingest(
            duration_s=args.duration,
            connections=args.connections,
            threads=args.threads,
            body_bytes=args.body_bytes,
            rounds=args.rounds,
        )
    )
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
