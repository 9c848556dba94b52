"""`make up` survives a crashed service: kill -9 one service of the local stack (deploy/local/stack.sh, the
very script `make up` runs) and it comes back on its own while the others keep serving; `make ps` counts the
restart; its log keeps what it wrote before the crash, and a second `make up` appends instead of emptying it.

The stack runs on ports of its own and a private broker (KAFKA_PORT), in the test's own run folder.
"""

from __future__ import annotations

import os
import shlex
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shopbotly.testkit.console import operators_json
from tests.stack import REPO_ROOT, SERVICES, StackSecrets, free_port, poll, tenants_yaml

pytestmark = pytest.mark.fault

STACK_SH = REPO_ROOT / "deploy" / "local" / "stack.sh"
VICTIM = "ingest"  # the front door: the one whose loss a platform notices first


@dataclass
class LocalStack:
    env: dict[str, str]
    ports: dict[str, int]
    run_dir: Path
    output: Path

    def sh(self, action: str, timeout: float = 240) -> str:
        with self.output.open("a") as out:
            out.write(f"\n$ stack.sh {action}\n")
            out.flush()
            done = subprocess.run(
                [str(STACK_SH), action],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            output = self.output.read_text()[-4000:]
            raise AssertionError(f"stack.sh {action} exited {done.returncode}:\n{output}")
        return self.output.read_text().rsplit(f"$ stack.sh {action}\n", 1)[1]

    def ps(self) -> dict[str, dict[str, str]]:
        """`make ps`, one row per service: PORT PID STATE RESTARTS READY (LAST EXIT)."""
        lines = self.sh("ps", timeout=60).splitlines()
        header = lines.index(next(line for line in lines if line.startswith("SERVICE")))
        rows = {}
        for line in lines[header + 1 :]:
            cells = line.split(maxsplit=6)
            if cells and cells[0] in SERVICES:
                columns = ["port", "pid", "state", "restarts", "ready", "last_exit"]
                rows[cells[0]] = dict(zip(columns, cells[1:], strict=False))
        return rows

    def log(self, name: str) -> str:
        return (self.run_dir / "stack" / "logs" / f"{name}.log").read_text(errors="replace")

    def ready(self, name: str) -> bool:
        try:
            if name == "crm-emulator":  # HTTPS with its own CA, as stack.sh starts it
                ca = Path(self.env["STACK_EMULATOR_CA"])
                url, verify = f"https://127.0.0.1:{self.ports[name]}", ssl.create_default_context(cafile=ca)
            else:
                url, verify = f"http://127.0.0.1:{self.ports[name]}", True
            return httpx.get(f"{url}/readyz", timeout=2, verify=verify).status_code == 200
        except (httpx.HTTPError, OSError):  # OSError: no CA yet (the emulator not started)
            return False


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[LocalStack]:
    ports = {name: free_port() for name in SERVICES}
    kafka_port, controller_port = free_port(19792), free_port(19793)
    secrets = StackSecrets()
    config = tmp_path / "tenants.yaml"
    emulator_ca = tmp_path / "tls" / "crm-emulator-ca.pem"
    config.write_text(
        tenants_yaml(secrets, emulator_port=ports["crm-emulator"], bot_url=None, emulator_ca=emulator_ca)
    )
    env_file = tmp_path / "stack.env"
    env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in secrets.env().items()))
    env = {
        **os.environ,
        "SHOPBOTLY_RUN_DIR": str(tmp_path / "run"),
        "SHOPBOTLY_CONFIG": str(config),
        "SHOPBOTLY_ENV_FILE": str(env_file),
        "KAFKA_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "SHOPBOTLY_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "SHOPBOTLY_KAFKA_PARTITIONS": "3",
        "SHOPBOTLY_CONSUMER_GROUP": "supervision-crm-writer",
        "STACK_READY_TIMEOUT": "150",
        "STACK_EMULATOR_CA": str(emulator_ca),
        **{f"STACK_PORT_{name.upper().replace('-', '_')}": str(port) for name, port in ports.items()},
        # The console is part of `make up` too; it needs an operator and a port of its own here.
        "STACK_PORT_CONSOLE": str(free_port()),
        "SHOPBOTLY_CONSOLE_OPERATORS": operators_json(),
    }
    stack = LocalStack(env, ports, tmp_path / "run", tmp_path / "stack-sh.out")
    try:
        yield stack
    finally:
        stack.sh("down", timeout=120)


@pytest.mark.timeout(420)
def test_a_killed_service_is_restarted_while_the_others_keep_serving(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = local_stack
    stack.sh("up")
    before = stack.ps()
    assert set(before) == set(SERVICES), before
    assert all(r["ready"] == "yes" and r["restarts"] == "0" for r in before.values()), before
    others = [name for name in SERVICES if name != VICTIM]
    victim_pid = int(before[VICTIM]["pid"])
    lines_before_crash = stack.log(VICTIM).splitlines()
    assert lines_before_crash

    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    dark: list[str] = []

    def back() -> bool:
        # Every poll while the victim is away: the others still answer.
        at = time.monotonic() - killed_at
        dark.extend(f"{name} at +{at:.1f}s" for name in others if not stack.ready(name))
        return stack.ready(VICTIM)

    poll(
        back,
        timeout=90,
        what=f"{VICTIM} back after kill -9",
        interval=0.25,
        context=lambda: stack.log(VICTIM)[-3000:],
    )
    restart_s = time.monotonic() - killed_at
    assert dark == [], f"other services stopped answering /readyz while {VICTIM} was down: {dark}"

    after = stack.ps()
    assert after[VICTIM]["restarts"] == "1", after
    assert after[VICTIM]["pid"] != str(victim_pid), after
    assert "signal 9" in after[VICTIM].get("last_exit", ""), after
    for name in others:
        assert after[name]["restarts"] == "0" and after[name]["pid"] == before[name]["pid"], (name, after)
        assert after[name]["ready"] == "yes", (name, after)
    log = stack.log(VICTIM)
    assert log.startswith("\n".join(lines_before_crash)), "the log of the crashed run was not kept"
    assert "service exited; restarting" in log and log.count('"service started"') == 2

    # A second `make up` after `make down` appends to the logs: the first run's story stays readable.
    stack.sh("down", timeout=120)
    assert not any(stack.ready(name) for name in SERVICES)
    stack.sh("up")
    assert stack.log(VICTIM).startswith(log), "make up emptied or replaced the previous run's log"
    assert all(r["restarts"] == "0" and r["ready"] == "yes" for r in stack.ps().values())

    with capsys.disabled():
        print(f"\n{VICTIM} killed (SIGKILL) and ready again after {restart_s:.1f}s; others served throughout")
