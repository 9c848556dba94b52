"""The whole stack as real processes, for end-to-end and fault-injection tests.

Each service runs from its console script with its own port, data dir and log file, against the real Kafka
broker and a topic prefix unique to the test run. Services can be killed with SIGKILL and restarted, which is
what the fault tests do.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent

__all__ = ["SERVICES", "Service", "Stack", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# name -> console script
SERVICES: dict[str, str] = {
    "crm-emulator": "shopbotly-crm-emulator",
    "ingest": "shopbotly-ingest",
    "mapper": "shopbotly-mapper",
    "crm-writer": "shopbotly-crm-writer",
    "order-reader": "shopbotly-order-reader",
}


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(  # noqa: S603 - our own console script
            [str(VENV_BIN / self.script)],
            env={**self.env, "SHOPBOTLY_PORT": str(self.port), "SHOPBOTLY_EMULATOR_PORT": str(self.port),
                 "SHOPBOTLY_DATA_DIR": str(self.data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
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
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc and self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

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

    @classmethod
    def create(cls, root: Path, env: Mapping[str, str], names: list[str] | None = None,
               ports: Mapping[str, int] | None = None) -> Stack:
        stack = cls(root=root, env=dict(env))
        for name in names or list(SERVICES):
            port = (ports or {}).get(name) or free_port()
            stack.services[name] = Service(
                name=name,
                script=SERVICES[name],
                port=port,
                data_dir=root / "data" / name,
                log_path=root / f"{name}.log",
                env={**os.environ, **env},
            )
        return stack

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def start(self, timeout: float = 120.0) -> None:
        for svc in self.services.values():
            svc.start()
        for svc in self.services.values():
            svc.wait_ready(timeout)

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()

    def logs(self) -> str:
        return "\n\n".join(f"--- {s.name} ---\n{s.tail(60)}" for s in self.services.values())
