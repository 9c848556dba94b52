"""`make bench`: every benchmark, each next to its baseline from the same run, into bench/results/.

Runs the per-service benchmarks (each starts its own processes on private topics), then the end-to-end run
against the local stack (`make up`, started here if it is not running), and samples each service's RSS idle
and under load. Writes bench/results/latest.json and latest.md; exits 0 whether or not targets are met
(the summary says which are).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from shopbotly.bench.e2e import bench_e2e

ROOT = Path(__file__).resolve().parents[5]
RESULTS = ROOT / "bench" / "results"
STACK_PORTS = {"ingest": 8080, "order-reader": 8081, "mapper": 9101, "crm-writer": 9102, "crm-emulator": 8090}

# module, args, what the figure is
SUITES: dict[str, list[str]] = {
    "ingest": [],
    "mapper": [],
    "crm": [],
    "lookups": [],
}


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit.stdout.strip() or None,
        "versions": {p: version(p) for p in ("aiokafka", "faust-streaming", "fastapi", "uvicorn", "httpx")},
        "kafka": os.environ.get("KAFKA_VERSION", "4.4.0"),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": os.getloadavg(),
    }


def run_suite(name: str, extra: list[str], out_dir: Path) -> dict[str, Any]:
    out = out_dir / f"{name}.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", f"shopbotly.bench.{name}", *extra, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    result: dict[str, Any] = json.loads(out.read_text())
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    return result


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


def ensure_stack() -> bool:
    """Start the local stack unless it is up; True when this run started it."""
    if len(stack_pids()) == len(STACK_PORTS):
        return False
    subprocess.run([str(ROOT / "deploy/local/stack.sh"), "up"], cwd=ROOT, check=True)
    return True


def verdicts(results: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every `targets` entry found anywhere in the results, with its path."""
    rows: list[tuple[str, Any]] = []
    for key, value in results.items():
        path = f"{prefix}{key}"
        if key == "targets" and isinstance(value, dict):
            rows.extend((f"{prefix}{k}", v) for k, v in value.items())
        elif isinstance(value, dict):
            rows.extend(verdicts(value, f"{path}."))
    return rows


def summary(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Commit `{m['commit']}`, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"Kafka {m['kafka']}, started {m['started_at']} "
        f"(load average at start {m['load_average_at_start'][0]:.2f}).",
        "Every ratio compares with a baseline measured in the same run on the same machine.",
        "",
        "| target | met |",
        "|---|---|",
    ]
    for name, met in verdicts({k: v for k, v in results.items() if k != "machine"}):
        shown = "yes" if met is True else "**no**" if met is False else str(met)
        lines.append(f"| {name} | {shown} |")
    lines += ["", "## Headline figures", ""]
    ing = results.get("ingest", {})
    if "ratio_vs_bare" in ing:
        lines.append(
            f"- ingest: {ing['ingest']['accepted_per_s_median']:.0f} accepted/s vs bare "
            f"{ing['bare']['accepted_per_s_median']:.0f}/s: ratio {ing['ratio_vs_bare']} (target 0.6); "
            f"p99 at half rate {ing['ingest_half_rate']['latency_ms']['p99']} ms (target 20)"
        )
    crm = results.get("crm", {}).get("crm", {})
    if "ratio_to_ceiling" in crm:
        lines.append(
            f"- CRM: {crm['steady_contacts_per_s']} contacts/s vs ceiling {crm['ceiling_contacts_per_s']}: "
            f"ratio {crm['ratio_to_ceiling']} (target 0.8); 429 share {crm['share_429']} (target 0.01)"
        )
    e2e = results.get("e2e", {})
    if "e2e_p50_ms" in e2e:
        lines.append(
            f"- end to end at {e2e['achieved_send_rate_per_s']}/s for {e2e['seconds']} s: "
            f"p50 {e2e['e2e_p50_ms']} ms, p99 {e2e['e2e_p99_ms']} ms, lost {e2e['lost']}"
        )
    if "memory_rss_mib" in results:
        lines.append(
            f"- RSS MiB idle: {results['memory_rss_mib']['idle']}; under load: "
            f"{results['memory_rss_mib']['under_load']}"
        )
    for name in SUITES:
        if "error" in results.get(name, {}):
            lines.append(f"- {name}: FAILED ({results[name]['error']}); see latest.json")
    lines += ["", "Full figures: `bench/results/latest.json`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", nargs="*", choices=[*SUITES, "e2e"], help="run only these")
    parser.add_argument("--e2e-rate", type=int, default=500)
    parser.add_argument("--e2e-seconds", type=float, default=60.0)
    args = parser.parse_args()
    chosen = args.only or [*SUITES, "e2e"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "runs" / time.strftime("%Y%m%dT%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine()}
    for name in SUITES:
        if name in chosen:
            print(f"bench: {name} ...", flush=True)
            results[name] = run_suite(name, SUITES[name], work)
    if "e2e" in chosen:
        started_here = ensure_stack()
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
        print("bench: e2e ...", flush=True)
        try:
            results["e2e"] = asyncio.run(
                bench_e2e(rate=args.e2e_rate, seconds=args.e2e_seconds, env_file=ROOT / "config/demo.env")
            )
        except Exception as exc:  # a failed run is reported, not hidden
            results["e2e"] = {"error": repr(exc)}
        stop.set()
        sampler.join()
        results["memory_rss_mib"] = {"idle": idle, "under_load": peak}
        if started_here:
            results["e2e"]["note_stack"] = "the stack was started by this run and left running (make down)"
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(summary(results))
    print(summary(results))


if __name__ == "__main__":
    main()
