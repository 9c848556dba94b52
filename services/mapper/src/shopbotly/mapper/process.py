"""Run the real mapper worker as a child process, for integration tests and the benchmark.

Start-up waits for the worker's own `mapper.ready` log line (it is logged once the state is loaded and the
consumer group has its partitions), not for a fixed time; so the log level stays at `info` at least.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from shopbotly.common.kafka import KafkaSettings

__all__ = ["MapperProcess", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MapperProcess:
    def __init__(
        self,
        *,
        config: Path,
        kafka: KafkaSettings,
        workdir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.log_path = workdir / "mapper.log"
        self.env = {
            **os.environ,
            "SHOPBOTLY_CONFIG": str(config),
            "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "SHOPBOTLY_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SHOPBOTLY_KAFKA_PARTITIONS": str(kafka.partitions),
            "SHOPBOTLY_PORT": str(self.port),
            "SHOPBOTLY_DATA_DIR": str(workdir / "data"),
            "SHOPBOTLY_LOG_LEVEL": "info",
            "SHOPBOTLY_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: list[dict[str, object]] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with self.log_path.open("ab") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    self.events.append(record)
                    if record.get("event") == "mapper.ready":
                        self._ready.set()
        self._ready.set()  # the process ended: wake a waiter so it can report the exit

    def start(self, timeout: float = 60.0) -> None:
        """Start the worker and return once it logged `mapper.ready`; RuntimeError with its log otherwise."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shopbotly.mapper"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            code = self.proc.poll()
            self.kill()
            tail = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
            raise RuntimeError(f"mapper not ready (exit code {code}); log tail:\n{tail}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: the graceful path (the batch in flight finishes, offsets are committed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            if self._reader is not None:
                self._reader.join(5)

    def kill(self) -> None:
        """SIGKILL: the crash path (nothing is flushed or committed on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
