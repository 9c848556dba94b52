"""`make bench`: every benchmark, each next to its baseline from the same run, into bench/results/.

Runs the per-service benchmarks (each a module run as its own process, with its own processes on private
topics of the broker at SHOPBOTLY_KAFKA_BOOTSTRAP, started here if it is the local one and down), then the
end-to-end run against the local stack (`make up`, started here if it is not running, and left running),
sampling each service's RSS idle and under load. Writes bench/results/latest.json and latest.md (and a copy
of both under bench/results/runs/<time>/, with each benchmark's log); at the end appends the run's figures to
bench/results/history.csv and draws latest.png (each target over the runs), linked from latest.md. Exits 0
whether or not targets are met (the summary says which are, and by how much); 1 when a benchmark failed (its
error is in the summary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil
import yaml

from shopbotly.bench.e2e import bench_e2e, isolation
from shopbotly.bench.history import append_history, chart
from shopbotly.bench.summary import render
from shopbotly.cli.demo_cmd import BotReceiver

ROOT = Path(__file__).resolve().parents[5]
RESULTS = ROOT / "bench" / "results"
HISTORY = RESULTS / "history.csv"
CHART = "latest.png"
STACK_PORTS = {"ingest": 8080, "order-reader": 8081, "mapper": 9101, "crm-writer": 9102, "crm-emulator": 8090}
LOCAL_BROKER = "127.0.0.1:9092"

# Benchmark module (shopbotly.bench.<name>) and its default arguments, in the order they run.
SUITES: dict[str, list[str]] = {
    "ingest": [],
    "mapper": [],
    "crm": [],
    "lookups": [],
    "replay": [],
    "ledger": [],
}
SUITE_TIMEOUT_S = 3600.0

# The last line of a traceback, or of a SystemExit message: what went wrong, in the module's own words.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Timeout\w*|Expired)\b.*")


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT)

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit.stdout.strip() or None,
        "uncommitted_changes": bool(dirty.stdout.strip()),
        "versions": {
            p: installed(p) for p in ("aiokafka", "faust-streaming", "fastapi", "uvicorn", "httpx", "orjson")
        },
        "kafka": os.environ.get("KAFKA_VERSION", "4.4.0"),
        "kafka_bootstrap": os.environ.get("SHOPBOTLY_KAFKA_BOOTSTRAP", LOCAL_BROKER),
        # Without cached bytecode every process start compiles its imports: it shows in start-up times.
        "python_dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def error_line(stderr: str) -> str | None:
    """The exception (or exit message) a failed module printed last."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else None


def run_suite(
    name: str, args: list[str], out_dir: Path, timeout_s: float = SUITE_TIMEOUT_S
) -> dict[str, Any]:
    """Run one benchmark module as its own process: its figures, or {"error": ...} saying why none."""
    out, log = out_dir / f"{name}.json", out_dir / f"{name}.log"
    cmd = [sys.executable, "-m", f"shopbotly.bench.{name}", *args, "--out", str(out)]
    started = time.monotonic()
    with log.open("w") as log_file:
        log_file.write(f"$ {shlex.join(cmd)}\n")
        log_file.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.PIPE, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            stderr = (
                exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            )
            log_file.write(stderr)
            return {"error": f"timed out after {timeout_s:.0f} s", "log": _shown(log), "args": args}
        log_file.write(proc.stderr)
    wall_s = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        reason = error_line(proc.stderr) or "no error message"
        return {
            "error": f"exit {proc.returncode}: {reason}",
            "log": _shown(log),
            "stderr_tail": proc.stderr[-3000:],
            "args": args,
            "bench_wall_s": wall_s,
        }
    try:
        result: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"exit 0 but no results in {_shown(out)}: {exc}", "log": _shown(log), "args": args}
    result["bench_wall_s"] = wall_s
    result["args"] = args
    return result


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def ensure_broker() -> None:
    """Start the local broker when the benchmarks use it and it is down (idempotent when it is up)."""
    if os.environ.get("SHOPBOTLY_KAFKA_BOOTSTRAP", LOCAL_BROKER) != LOCAL_BROKER:
        return
    subprocess.run([str(ROOT / "deploy/local/kafka.sh"), "start"], cwd=ROOT, check=True)


def stack_pids() -> dict[str, int]:
    """Pid of the process listening on each stack port."""
    pids: dict[str, int] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid:
            for name, port in STACK_PORTS.items():
                if conn.laddr.port == port:
                    pids[name] = conn.pid
    return pids


def rss_mib(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            out[name] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            continue
    return out


def ensure_stack(log: Path) -> bool:
    """Start the local stack unless it is up; True when this run started it.

    stack.sh's output goes to `log`, not to ours: a shell it leaves in the background keeps the descriptors
    it was given, and on our stdout it would hold `make bench | tee` open after the run ends.
    """
    if len(stack_pids()) == len(STACK_PORTS):
        return False
    with log.open("w") as out:
        subprocess.run(
            [str(ROOT / "deploy/local/stack.sh"), "up"],
            cwd=ROOT,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return True


def demo_bot_receiver(env_file: Path) -> BotReceiver:
    """A receiver on the demo tenant's bot webhook URL (what `make demo` runs)."""
    config = yaml.safe_load((ROOT / "config/shopbotly.yaml").read_text())
    url = config["tenants"]["demo"]["bot_webhook"]["url"]
    secret = next(
        line.split("=", 1)[1].strip()
        for line in env_file.read_text().splitlines()
        if line.startswith("DEMO_BOT_NOTIFY_SECRET=")
    )
    return BotReceiver.for_url(url, secret)


def run_e2e(results: dict[str, Any], rate: int, seconds: float, run_dir: Path) -> None:
    """The end-to-end run against the local stack, with RSS sampled idle and under load."""
    log = run_dir / "stack-up.log"
    try:
        started_here = ensure_stack(log)
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = error_line(log.read_text()) if log.exists() else None
        results["e2e"] = {
            "error": f"the local stack did not start ({exc}): {reason or 'no message'}",
            "log": _shown(log),
        }
        return
    pids = stack_pids()
    idle = rss_mib(pids)
    peak: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for k, v in rss_mib(pids).items():
                peak[k] = max(peak.get(k, 0.0), v)
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    env_file = ROOT / "config/demo.env"
    # All healthy: a receiver on the demo tenant's bot URL takes the lifecycle notifications. Then once more
    # with it down (its notifications held back): the HubSpot connection must not notice (issue 16).
    receiver = demo_bot_receiver(env_file)
    try:
        receiver.start()
        try:
            results["e2e"] = asyncio.run(bench_e2e(rate=rate, seconds=seconds, env_file=env_file))
        finally:
            receiver.stop()
        print("bench: e2e once more with the bot endpoint down ...", flush=True)
        one_down = asyncio.run(bench_e2e(rate=rate, seconds=seconds, env_file=env_file))
        results["e2e_one_connection_down"] = isolation(results["e2e"], one_down)
    except Exception as exc:  # a failed run is reported, not hidden
        results.setdefault("e2e", {"error": f"{type(exc).__name__}: {exc}"})
        results["e2e_one_connection_down"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stop.set()
        sampler.join()
    results["memory_rss_mib"] = {"idle": idle, "under_load": peak}
    if started_here:
        results["e2e"]["note_stack"] = "the stack was started by this run and left running (make down)"


def _suite_args(values: list[str]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for value in values:
        name, sep, args = value.partition("=")
        if not sep or name not in SUITES:
            raise argparse.ArgumentTypeError(
                f"--args {value!r}: expected NAME='ARGS' with NAME one of {', '.join(SUITES)}"
            )
        parsed[name] = shlex.split(args)
    return parsed


def write_results(results: dict[str, Any], run_dir: Path, *, final: bool = False) -> str:
    """latest.json and latest.md, in bench/results and the run's folder. The final write also appends the
    run to history.csv and redraws latest.png from the whole history (a copy goes to the run's folder)."""
    drawn = False
    if final:
        history = append_history(HISTORY, results)
        drawn = chart(history, RESULTS / CHART)
        if drawn:
            shutil.copyfile(RESULTS / CHART, run_dir / CHART)
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    summary = render(results, chart=CHART if drawn else None)
    for folder in (RESULTS, run_dir):
        (folder / "latest.json").write_text(text)
        (folder / "latest.md").write_text(summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shopbotly.bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--only", nargs="*", choices=[*SUITES, "e2e"], help="run only these")
    parser.add_argument("--e2e-rate", type=int, default=500, help="events/s of the end-to-end run")
    parser.add_argument("--e2e-seconds", type=float, default=60.0, help="seconds of the end-to-end run")
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME='ARGS'",
        help="arguments for one benchmark module, e.g. --args replay='--records 20000 --rounds 1'",
    )
    parser.add_argument("--suite-timeout", type=float, default=SUITE_TIMEOUT_S, help="seconds per module")
    args = parser.parse_args()
    try:
        extra = _suite_args(args.args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    chosen = args.only or [*SUITES, "e2e"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    run_dir = RESULTS / "runs" / time.strftime("%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine()}
    results["machine"]["chosen"] = chosen
    modules = [name for name in SUITES if name in chosen]
    if modules:
        try:
            ensure_broker()
        except (OSError, subprocess.CalledProcessError) as exc:
            print(
                f"bench: the local Kafka broker did not start ({exc}); the benchmarks will fail", flush=True
            )
    for name in modules:
        suite_args = extra.get(name, SUITES[name])
        print(f"bench: {name} {shlex.join(suite_args)} ...", flush=True)
        results[name] = run_suite(name, suite_args, run_dir, args.suite_timeout)
        if "error" in results[name]:
            print(f"bench: {name} FAILED: {results[name]['error']}", flush=True)
        write_results(results, run_dir)  # what finished so far survives a later crash or Ctrl-C
    if "e2e" in chosen:
        print(f"bench: e2e at {args.e2e_rate}/s for {args.e2e_seconds:g} s ...", flush=True)
        run_e2e(results, args.e2e_rate, args.e2e_seconds, run_dir)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(write_results(results, run_dir, final=True))
    failed = [name for name, value in results.items() if isinstance(value, dict) and "error" in value]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
