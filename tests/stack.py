"""The whole stack as real processes, for end-to-end and fault-injection tests.

Each service runs from its console script with its own port, data dir and log file, against a real Kafka
broker and a topic prefix unique to the test run. Services can be killed with SIGKILL and restarted, which is
what the fault tests do. A private broker (`PrivateKafka`, deploy/local/kafka.sh on its own ports and run
folder) can be stopped and started without touching the shared one.

Every wait is a poll with a deadline (`poll`); when the deadline passes it fails with what it last saw and
the tail of every service's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from shopbotly.common.kafka import KafkaSettings, make_admin, make_consumer
from shopbotly.crm_emulator.domain import SALESFORCE_ORG_ID

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
KAFKA_SH = REPO_ROOT / "deploy" / "local" / "kafka.sh"

__all__ = [
    "REPO_ROOT",
    "SERVICES",
    "Message",
    "PrivateKafka",
    "Service",
    "Stack",
    "StackSecrets",
    "create_topics",
    "delete_topics",
    "free_port",
    "gauge_values",
    "group_lag",
    "histogram",
    "json_of",
    "poll",
    "read_topic",
    "run_cli",
    "stack_env",
    "tenants_yaml",
]

T = TypeVar("T")

# Ports handed out by this process: the OS may return a port again until someone binds it, and the stack
# binds late (each service binds its own port after it starts).
_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(preferred: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 and not handed out before by this process (`preferred` if it is)."""
    with _ports_lock:
        candidates: Iterable[int | None] = [preferred, *([None] * 50)] if preferred else [None] * 50
        for candidate in candidates:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", candidate or 0))
                except OSError:
                    continue
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found")


def poll(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    context: Callable[[], str] | None = None,
) -> T:
    """Call `check` until it returns something truthy (not None, False, empty); fail after `timeout` s.

    The failure names `what`, the last value or exception seen, and `context()` (the stack's logs).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except Exception as exc:  # a peer may be restarting; keep polling and report the last error
            result, last = None, f"{type(exc).__name__}: {exc}"
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            details = context() if context else ""
            raise AssertionError(f"{what}: not reached after {timeout:g}s (last: {last})\n{details}")
        time.sleep(interval)


# name -> console script
SERVICES: dict[str, str] = {
    "crm-emulator": "shopbotly-crm-emulator",
    "ingest": "shopbotly-ingest",
    "mapper": "shopbotly-mapper",
    "crm-writer": "shopbotly-crm-writer",
    "order-reader": "shopbotly-order-reader",
}
# Started only when a stack names them (Stack.create(names=...)).
OPTIONAL_SERVICES: dict[str, str] = {"console": "shopbotly-console"}


@dataclass
class Service:
    name: str
    script: str
    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # Served over HTTPS, its CA's PEM here (the CRM emulator with `--tls`).
    ca_bundle: Path | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_bundle else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client trusts to reach this service (httpx's `verify`)."""
        return ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else True

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for this service: its base URL, trusting its CA when it serves HTTPS."""
        return httpx.Client(base_url=self.url, verify=self.verify, **kwargs)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(VENV_BIN / self.script)],
                env={
                    **self.env,
                    "SHOPBOTLY_PORT": str(self.port),
                    "SHOPBOTLY_EMULATOR_PORT": str(self.port),
                    "SHOPBOTLY_DATA_DIR": str(self.data_dir),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO_ROOT,
            )

    def kill9(self) -> None:
        """SIGKILL the service's whole process group, as a crashed node would die."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait; SIGKILL after `timeout`. The exit status (None if it had to be killed)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if self.ca_bundle is not None and not self.ca_bundle.exists():
            return False  # written when the emulator starts
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2, verify=self.verify).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise AssertionError(f"{self.name} exited with {code}:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def metrics(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=5, verify=self.verify)
        response.raise_for_status()
        return response.text

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Stack:
    """A set of services sharing one environment (Kafka bootstrap, topic prefix, config file)."""

    root: Path
    env: Mapping[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    # What `shopbotly connections setup --apply` printed at start (empty without the emulator).
    setup: str = ""

    @classmethod
    def create(
        cls,
        root: Path,
        env: Mapping[str, str],
        names: list[str] | None = None,
        ports: Mapping[str, int] | None = None,
        *,
        emulator_ca: Path | None = None,
    ) -> Stack:
        """`emulator_ca`: the CRM emulator serves HTTPS and writes its CA's PEM there (`tenants_yaml`'s
        `emulator_ca` points the connections at it)."""
        stack = cls(root=root, env=dict(env))
        for name in names or list(SERVICES):
            svc = stack.add(name, name, (ports or {}).get(name))
            if name == "crm-emulator" and emulator_ca is not None:
                svc.ca_bundle = emulator_ca
                svc.env |= {
                    "SHOPBOTLY_EMULATOR_TLS": "true",
                    "SHOPBOTLY_EMULATOR_TLS_CA_PATH": str(emulator_ca),
                }
        return stack

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def add(self, name: str, kind: str, port: int | None = None) -> Service:
        """One more process of service `kind` (a replica: `mapper-2`), with its own port, data dir and log;
        not started."""
        assert name not in self.services, f"{name} exists"
        svc = Service(
            name=name,
            script=SERVICES.get(kind) or OPTIONAL_SERVICES[kind],
            port=port or free_port(),
            data_dir=self.root / "data" / name,
            log_path=self.root / f"{name}.log",
            env={**os.environ, **self.env},
        )
        self.services[name] = svc
        return svc

    def of_kind(self, kind: str) -> list[Service]:
        """The processes of service `kind`, running or not."""
        script = SERVICES.get(kind) or OPTIONAL_SERVICES[kind]
        return [s for s in self.services.values() if s.script == script]

    def start(self, timeout: float = 120.0) -> None:
        """Start every service and wait for each /readyz. With the CRM emulator in the stack (a fresh portal),
        then run `shopbotly connections setup --apply` as `make up` does, before any traffic."""
        for svc in self.services.values():
            svc.start()
        for svc in self.services.values():
            try:
                svc.wait_ready(timeout)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n\n{self.logs()}") from None
        if "crm-emulator" in self.services and "SHOPBOTLY_CONFIG" in self.env:
            self.setup = run_cli("connections", "setup", "--apply", env=self.env).stdout

    def restart(self, name: str, timeout: float = 120.0) -> None:
        """Start a stopped or killed service again and wait for its /readyz."""
        svc = self.services[name]
        svc.start()
        try:
            svc.wait_ready(timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n\n{self.logs()}") from None

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()

    def logs(self, lines: int = 60) -> str:
        return "\n\n".join(
            f"--- {s.name} ({s.log_path}) ---\n{s.tail(lines)}" for s in self.services.values()
        )

    def poll(self, check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
        """`poll` that fails with this stack's logs."""
        return poll(check, timeout=timeout, what=what, interval=interval, context=self.logs)


@dataclass
class PrivateKafka:
    """A broker of this test's own (deploy/local/kafka.sh on other ports and another run folder).

    Stopping it disturbs nobody else; the shared broker on 9092 is never touched. While it is stopped its
    ports stay reserved (a placeholder socket binds each), so no other process takes them meanwhile.
    """

    run_dir: Path
    port: int
    controller_port: int
    _held: list[socket.socket] = field(default_factory=list, repr=False)

    @classmethod
    def create(cls, run_dir: Path) -> PrivateKafka:
        return cls(run_dir, free_port(19592), free_port(19593))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"kafka-{self.port}" / "kafka.log"

    def _run(self, action: str, timeout: float = 120.0) -> None:
        env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "SHOPBOTLY_RUN_DIR": str(self.run_dir),
        }
        done = subprocess.run(
            [str(KAFKA_SH), action], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(
                f"kafka.sh {action} failed ({done.returncode}):\n{done.stderr}\n{self.tail()}"
            )

    def _hold_ports(self) -> None:
        for port in (self.port, self.controller_port):
            # SO_REUSEADDR: the stopped broker's connections may still be in TIME_WAIT. Bound but not
            # listening: clients still get "connection refused", as from a stopped broker.
            placeholder = socket.socket()
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            placeholder.bind(("127.0.0.1", port))
            self._held.append(placeholder)

    def _release_ports(self) -> None:
        while self._held:
            self._held.pop().close()

    def start(self) -> None:
        self._release_ports()
        self._run("start")

    def stop(self, *, hold_ports: bool = False) -> None:
        """A clean stop (SIGTERM, then SIGKILL after 30 s), keeping the data folder for the next start.

        `hold_ports`: keep the ports reserved until `start()` (a restart)."""
        self._release_ports()
        self._run("stop")
        if hold_ports:
            self._hold_ports()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the operator CLI (`shopbotly ...`) as an operator would; fails with its output unless exit 0."""
    done = subprocess.run(
        [str(VENV_BIN / "shopbotly"), *args],
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"shopbotly {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def create_topics(env: Mapping[str, str]) -> None:
    """`shopbotly topics create` with the stack's Kafka settings (bootstrap, prefix, partitions)."""
    run_cli("topics", "create", "--strict", env=env)


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]


async def _partitions(settings: KafkaSettings, topic: str) -> list[int]:
    admin = make_admin(settings, client_role="e2e-reader")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0].get("error_code", 0) != 0:
        raise AssertionError(f"topic {topic} does not exist: {described}")
    return sorted(p["partition"] for p in described[0]["partitions"])


async def _read_topic(settings: KafkaSettings, topic: str) -> list[Message]:
    partitions = await _partitions(settings, topic)
    consumer = make_consumer(settings, group_id=None, client_role="e2e-reader")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        out: list[Message] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(
                            Message(
                                topic,
                                r.partition,
                                r.offset,
                                r.key.decode() if r.key is not None else None,
                                r.value,
                                {k: v.decode(errors="replace") for k, v in r.headers},
                            )
                        )
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return out
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every message of `topic` up to its end at the time of the call (no consumer group, no commit)."""
    settings = KafkaSettings(bootstrap=bootstrap)

    async def bounded() -> list[Message]:
        return await asyncio.wait_for(_read_topic(settings, topic), timeout)

    return asyncio.run(bounded())


def json_of(response: httpx.Response) -> Any:
    """The JSON body, or an AssertionError naming the status and body when there is none."""
    try:
        return response.json()
    except ValueError:
        raise AssertionError(
            f"{response.request.url}: {response.status_code} {response.text[:500]}"
        ) from None


# --- the test tenants ------------------------------------------------------------------------------------


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class StackSecrets:
    """Fresh secrets per test run, handed to the services as environment variables (never in the YAML)."""

    bot_source: str = field(default_factory=_whsec)  # the chatbot's Standard Webhooks secret (ingest)
    shopify: str = field(default_factory=lambda: "shpss_" + secrets.token_hex(16))
    hubspot_app: str = field(default_factory=lambda: secrets.token_hex(20))  # HubSpot app client secret
    hubspot_token: str = field(default_factory=lambda: "pat-e2e-" + secrets.token_hex(16))
    bot_notify: str = field(default_factory=_whsec)  # signs ShopBotly's notifications to the bot
    # The token in the Salesforce outbound messages' endpoint URL (`?token=`).
    salesforce_url_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    api_keys: dict[str, str] = field(
        default_factory=lambda: {t: f"sbk_{t}_{secrets.token_urlsafe(24)}" for t in ("alpha", "beta")}
    )

    def env(self) -> dict[str, str]:
        return {
            "E2E_BOT_SECRET": self.bot_source,
            "E2E_SHOPIFY_SECRET": self.shopify,
            "E2E_HUBSPOT_APP_SECRET": self.hubspot_app,
            "E2E_HUBSPOT_TOKEN": self.hubspot_token,
            "E2E_BOT_NOTIFY_SECRET": self.bot_notify,
            "E2E_SALESFORCE_URL_TOKEN": self.salesforce_url_token,
            # The emulator plays HubSpot: it accepts the token crm-writer sends.
            "SHOPBOTLY_EMULATOR_HUBSPOT_TOKENS": json.dumps([self.hubspot_token]),
        }


def tenants_yaml(
    secrets_: StackSecrets,
    *,
    emulator_port: int,
    bot_url: str | None,
    bot_attempts: int = 3,
    emulator_ca: Path | None = None,
) -> str:
    """Two tenants: `alpha` (bot, Shopify, HubSpot and Salesforce sources; the emulator as its HubSpot and its
    Salesforce org; optionally a bot webhook) and `beta` (an API key only, for isolation checks).

    `emulator_ca`: the emulator serves HTTPS (`Stack.create(emulator_ca=...)`) and alpha's connection trusts
    that CA bundle only."""
    keys = {t: hashlib.sha256(k.encode()).hexdigest() for t, k in secrets_.api_keys.items()}
    alpha: dict[str, Any] = {
        "display_name": "E2E shop",
        "api_keys": [{"id": "main", "sha256": keys["alpha"], "scopes": ["leads", "orders", "tickets"]}],
        "sources": {
            "bot": {"kind": "shopbotly", "secrets": [{"env": "E2E_BOT_SECRET"}]},
            "shop": {"kind": "shopify", "secrets": [{"env": "E2E_SHOPIFY_SECRET"}]},
            "hubspot": {"kind": "hubspot", "secrets": [{"env": "E2E_HUBSPOT_APP_SECRET"}]},
            # The emulator's org sends its outbound messages here (e2e conftest).
            "salesforce": {
                "kind": "salesforce",
                "organization_ids": [SALESFORCE_ORG_ID],
                "secrets": [{"env": "E2E_SALESFORCE_URL_TOKEN"}],
            },
        },
        "connections": {
            "hubspot": {
                "kind": "hubspot",
                "base_url": f"{'https' if emulator_ca else 'http'}://127.0.0.1:{emulator_port}",
                "auth": {"kind": "bearer", "token": {"env": "E2E_HUBSPOT_TOKEN"}},
                "rate_limit": {"requests": 100, "per_seconds": 10},
                "batch_size": 100,
                **({"tls": {"ca_bundle": str(emulator_ca)}} if emulator_ca else {}),
            },
        },
        "mapping": {
            "version": "e2e",
            "default_connection": "hubspot",
            "presets": ["shopbotly", "shopify", "hubspot", "salesforce", "api"],
        },
    }
    if bot_url is not None:
        alpha["connections"]["bot"] = {"kind": "bot_webhook", "max_attempts": bot_attempts}
        alpha["bot_webhook"] = {"url": bot_url, "secret": {"env": "E2E_BOT_NOTIFY_SECRET"}}
    beta = {"api_keys": [{"id": "main", "sha256": keys["beta"], "scopes": ["leads", "orders", "tickets"]}]}
    return yaml.safe_dump({"version": 1, "tenants": {"alpha": alpha, "beta": beta}}, sort_keys=False)


def stack_env(*, bootstrap: str, prefix: str, config: Path, partitions: int = 3) -> dict[str, str]:
    """What every process of one test stack shares (the CLI included)."""
    return {
        "SHOPBOTLY_CONFIG": str(config),
        "SHOPBOTLY_KAFKA_BOOTSTRAP": bootstrap,
        "SHOPBOTLY_KAFKA_TOPIC_PREFIX": prefix,
        "SHOPBOTLY_KAFKA_PARTITIONS": str(partitions),
        # crm-writer's group id is not derived from the prefix: one per stack, so stacks never share a group.
        "SHOPBOTLY_CONSUMER_GROUP": f"{prefix}crm-writer",
        "SHOPBOTLY_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Remove a test run's topics (best effort: their names are unique, so leftovers harm nobody)."""
    settings = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix)

    async def go() -> None:
        admin = make_admin(settings, client_role="e2e-cleanup")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            names = [s.name for s in settings.topics().values() if s.name in existing]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    with contextlib.suppress(Exception):
        asyncio.run(asyncio.wait_for(go(), 30))


# --- metrics -----------------------------------------------------------------------------------------------


def histogram(metrics_text: str, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A Prometheus histogram from /metrics: count, sum, mean and p50/p90/p99 estimated from the buckets the
    way PromQL's histogram_quantile does (linear within a bucket)."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    buckets.sort()

    def quantile(q: float) -> float | None:
        if count == 0:
            return None
        rank, lower, below = q * count, 0.0, 0.0
        for upper, cumulative in buckets:
            if cumulative >= rank:
                if upper == float("inf"):
                    return lower
                width = cumulative - below
                return lower + (upper - lower) * ((rank - below) / width if width else 1.0)
            lower, below = upper, cumulative
        return None

    return {
        "count": count,
        "sum_s": total,
        "mean_s": total / count if count else None,
        "p50_s": quantile(0.5),
        "p90_s": quantile(0.9),
        "p99_s": quantile(0.99),
    }


def gauge_values(metrics_text: str, name: str) -> list[float]:
    """Every sample of a gauge (all label sets)."""
    return [
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == name
        for sample in family.samples
    ]


# --- consumer groups ---------------------------------------------------------------------------------------


async def _group_lag(settings: KafkaSettings, group: str, topics: Iterable[str]) -> dict[str, int]:
    admin = make_admin(settings, client_role="e2e-lag")
    consumer = make_consumer(settings, group_id=None, client_role="e2e-lag")
    await admin.start()
    await consumer.start()
    try:
        out: dict[str, int] = {}
        for topic in topics:
            tps = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            out[topic] = sum(
                ends[tp] - (max(0, committed[tp].offset) if tp in committed else 0) for tp in tps
            )
        return out
    finally:
        await consumer.stop()
        await admin.close()


def group_lag(bootstrap: str, group: str, topics: Iterable[str], timeout: float = 30.0) -> dict[str, int]:
    """Per topic: messages past the consumer group's committed offsets (end minus committed, summed over the
    partitions; a partition with no commit counts from 0)."""
    settings = KafkaSettings(bootstrap=bootstrap)
    return asyncio.run(asyncio.wait_for(_group_lag(settings, group, list(topics)), timeout))
