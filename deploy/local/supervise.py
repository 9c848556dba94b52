#!/usr/bin/env python3
"""The process supervisor of `make up`: runs each service of a Procfile, restarts one that exits (with
backoff, as Kubernetes restarts a crashed container) while the others keep running, and appends each
service's output to its own log file.

    supervise.py run    --run-dir DIR --procfile FILE   # in the foreground; SIGTERM/SIGINT stops everything
    supervise.py status --run-dir DIR                   # one line per service: name pid state restarts

Backoff: 1 s after the first exit, doubling to 30 s; a run of 60 s or more counts as healthy and starts the
backoff again from 1 s. Logs: DIR/logs/<name>.log, appended (never truncated); a log over 50 MB is rotated
at the next start of its service (<name>.log.1 .. .3). DIR/status.json holds each service's pid, state,
restart count and last exit; DIR/supervisor.pid the supervisor's own pid. Standard library only: it runs
before anything else, with the workspace's Python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 60.0
STOP_GRACE_S = 20.0
LOG_MAX_BYTES = 50 * 1024 * 1024
LOG_GENERATIONS = 3


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Status:
    """What `make ps` shows of one service."""

    pid: int | None = None
    state: str = "starting"  # running | backoff | stopped
    restarts: int = 0
    started_at: str | None = None
    last_exit: str | None = None  # "exit 1 at ..." / "signal 9 at ..."
    next_start_in_s: float | None = None


@dataclass
class Service:
    name: str
    command: str
    log_path: Path
    status: Status = field(default_factory=Status)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff_s: float = BACKOFF_FIRST_S
    next_start: float = 0.0

    def rotate_log(self) -> None:
        try:
            if self.log_path.stat().st_size < LOG_MAX_BYTES:
                return
        except FileNotFoundError:
            return
        for generation in range(LOG_GENERATIONS - 1, 0, -1):
            older = self.log_path.with_name(f"{self.log_path.name}.{generation}")
            if older.exists():
                older.replace(self.log_path.with_name(f"{self.log_path.name}.{generation + 1}"))
        self.log_path.replace(self.log_path.with_name(f"{self.log_path.name}.1"))

    def note(self, event: str, **fields: Any) -> None:
        """A JSON line in the service's own log (the services log JSON too): its story reads in one file."""
        line = {"event": event, "logger": "stack.supervisor", "service": self.name, "timestamp": now_iso()}
        with self.log_path.open("a") as log:
            log.write(json.dumps({**line, **fields}) + "\n")

    def start(self, cwd: Path) -> None:
        self.rotate_log()
        with self.log_path.open("ab") as log:
            # A session of its own: a signal sent to the supervisor's group does not reach it, and `stop`
            # can signal the service's whole group.
            self.proc = subprocess.Popen(  # noqa: S602 - the command is the operator's own Procfile line
                self.command,
                shell=True,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.status.pid = self.proc.pid
        self.status.state = "running"
        self.status.started_at = now_iso()
        self.status.next_start_in_s = None
        self.note("service started", pid=self.proc.pid, restarts=self.status.restarts)

    def exited(self, code: int) -> None:
        """The process ended on its own: schedule the restart."""
        ran = time.monotonic() - self.started
        if ran >= HEALTHY_RUN_S:
            self.backoff_s = BACKOFF_FIRST_S
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        self.status.last_exit = f"{how} at {now_iso()}"
        self.status.pid = None
        self.status.state = "backoff"
        self.status.next_start_in_s = self.backoff_s
        self.next_start = time.monotonic() + self.backoff_s
        self.note("service exited; restarting", exit=how, ran_s=round(ran, 1), restart_in_s=self.backoff_s)
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        self.proc = None

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)


class Supervisor:
    def __init__(self, run_dir: Path, procfile: Path, cwd: Path) -> None:
        self.run_dir = run_dir
        self.cwd = cwd
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.services = [
            Service(name, command, logs / f"{name}.log") for name, command in read_procfile(procfile)
        ]
        self.stopping = False

    def write_status(self) -> None:
        status = {s.name: asdict(s.status) for s in self.services}
        tmp = self.run_dir / "status.json.tmp"
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.run_dir / "status.json")

    def request_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # Atomically (a new file renamed over): `stack.sh up` reads this file while the supervisor starts,
        # and a read between a truncate and the write would see no pid and take the supervisor for dead.
        pid_tmp = self.run_dir / "supervisor.pid.tmp"
        pid_tmp.write_text(str(os.getpid()))
        pid_tmp.replace(self.run_dir / "supervisor.pid")
        for service in self.services:
            service.start(self.cwd)
        self.write_status()
        while not self.stopping:
            changed = False
            for service in self.services:
                if service.proc is not None:
                    code = service.proc.poll()
                    if code is not None:
                        service.exited(code)
                        changed = True
                elif time.monotonic() >= service.next_start:
                    service.status.restarts += 1
                    service.start(self.cwd)
                    changed = True
            if changed:
                self.write_status()
            time.sleep(0.2)
        self.stop_all()
        return 0

    def stop_all(self) -> None:
        """SIGTERM every service's group (in reverse start order), SIGKILL what is left after the grace."""
        running = [s for s in reversed(self.services) if s.proc is not None]
        for service in running:
            service.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for service in running:
            assert service.proc is not None
            try:
                service.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.note("service did not stop in time; killed", grace_s=STOP_GRACE_S)
                service.signal_group(signal.SIGKILL)
                service.proc.wait(10)
            service.note("service stopped", exit=service.proc.returncode)
        for service in self.services:
            service.status.state, service.status.pid = "stopped", None
        self.write_status()
        (self.run_dir / "supervisor.pid").unlink(missing_ok=True)


def read_procfile(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            rows.append((name.strip(), command.strip()))
    return rows


def print_status(run_dir: Path) -> int:
    try:
        status: dict[str, dict[str, Any]] = json.loads((run_dir / "status.json").read_text())
    except FileNotFoundError:
        return 1
    for name, row in status.items():
        pid, restarts = row.get("pid") or "-", row.get("restarts", 0)
        print(name, pid, row.get("state"), restarts, row.get("last_exit") or "-")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["run", "status"])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--procfile", type=Path)
    parser.add_argument("--cwd", type=Path, default=Path.cwd())
    args = parser.parse_args()
    if args.action == "status":
        return print_status(args.run_dir)
    if args.procfile is None:
        parser.error("run needs --procfile")
    return Supervisor(args.run_dir, args.procfile, args.cwd).run()


if __name__ == "__main__":
    sys.exit(main())
