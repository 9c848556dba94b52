"""crm-writer's ledger memory: RSS growth per million applied command ids, next to the old in-memory dict.

    python -m shopbotly.bench.ledger [--ids 1000000] [--lookups 200000] [--out results.json]

Each representation is built in a fresh process (so one's heap never counts for another), from the same
ledger records (LedgerEntry JSON, as the writer reads them off crm-ledger.v1), through the same code the
writer runs (`Ledger._apply`), with VmRSS read from /proc/self/status before and after. The baselines, side
by side on the same machine: the old representation (every id with its CRM ids in a dict), and a plain
Python set of the ids for lookup throughput. Lookups are of ids never applied (every new command's path) and
of applied ids (the index search only: an applied id not among the newest is then read back from the topic,
which is a broker round trip this benchmark does not time). No broker needed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shopbotly.bench.targets import target

__all__ = ["KINDS", "ledger_targets"]

KINDS = ("ledger", "dict", "set")
TARGET_MB_PER_MILLION = 30.0
_PARTITIONS = 6


def vm_rss_bytes() -> int:
    """This process's resident set, from /proc/self/status (what the kernel charges to a container)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def command_id(i: int) -> str:
    # The shape of a real id: derived from an event id and a rule (shopbotly.common.ids).
    return f"cmd_{i:012x}_{(i * 2654435761) % 2**32:08x}"


def records(n: int) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of n ledger records, made one at a time (the input is not held)."""
    from shopbotly.common.events import LedgerEntry

    offsets = [0] * _PARTITIONS
    for i in range(n):
        cid = command_id(i)
        partition = i % _PARTITIONS
        entry = LedgerEntry(
            command_id=cid, tenant="t1", connection="hs", crm_ids={"contact": str(10**11 + i)}
        )
        yield partition, offsets[partition], cid.encode(), entry.to_json()
        offsets[partition] += 1


def child(kind: str, n: int, lookups: int) -> dict[str, Any]:
    """Build one representation of n applied ids in this process; its RSS growth and lookup rates."""
    from shopbotly.common.events import LedgerEntry
    from shopbotly.common.kafka import KafkaSettings, ResilientProducer
    from shopbotly.crm_writer.ledger import Ledger

    ledger = Ledger(KafkaSettings(), ResilientProducer(KafkaSettings(), client_role="bench"))
    reader = _NoBroker()
    ledger._reader = reader  # type: ignore[assignment]  # a digest match is not read back here
    plain: dict[str, dict[str, str]] = {}
    ids: set[str] = set()
    # Warm up: imports done, one record through each path, so only the ids count.
    for *_, value in records(1):
        LedgerEntry.from_json(value)
    gc.collect()
    before = vm_rss_bytes()
    started = time.perf_counter()
    for partition, offset, key, value in records(n):
        if kind == "ledger":
            ledger._apply(partition, offset, key, value)
        elif kind == "dict":  # what the ledger held before (issue 20)
            plain[key.decode()] = dict(LedgerEntry.from_json(value).crm_ids)
        else:
            LedgerEntry.from_json(value)  # the same parse, so build times compare
            ids.add(key.decode())
    build_s = time.perf_counter() - started
    gc.collect()
    after = vm_rss_bytes()

    strangers = [f"new_{i:012x}" for i in range(lookups)]
    applied = [command_id((i * 7919) % n) for i in range(lookups)]
    out: dict[str, Any] = {
        "kind": kind,
        "ids": n,
        "rss_before_mb": round(before / 1e6, 1),
        "rss_after_mb": round(after / 1e6, 1),
        "rss_mb_per_million": round((after - before) / 1e6 / (n / 1e6), 2),
        "build_us_per_id": round(build_s / n * 1e6, 2),
    }
    if kind == "ledger":

        async def misses() -> int:
            found = 0
            for cid in strangers:
                found += await ledger.get(cid) is not None
            return found

        started = time.perf_counter()
        false_hits = asyncio.run(misses())
        out["miss_lookups_per_s"] = round(lookups / (time.perf_counter() - started))
        started = time.perf_counter()
        missing = sum(not ledger._index.places(cid) for cid in applied)
        out["hit_index_lookups_per_s"] = round(lookups / (time.perf_counter() - started))
        out["false_negatives"] = missing  # must be 0: an applied id the index does not point at
        out["never_applied_found"] = false_hits  # must be 0: digest candidates are ruled out by key
        # New ids whose 32-bit digest matched an applied one: each costs one read of the topic (~n / 2**32).
        out["never_applied_reads_per_million"] = round(reader.reads / lookups * 1e6, 1)
        out["index_bytes"] = ledger._index.nbytes
        out["recent_ids"] = len(ledger._recent)
        out["index_runs"] = len(ledger._index.runs)
    else:
        table: dict[str, Any] | set[str] = plain if kind == "dict" else ids
        started = time.perf_counter()
        for cid in strangers:
            _ = cid in table
        out["miss_lookups_per_s"] = round(lookups / (time.perf_counter() - started))
        started = time.perf_counter()
        for cid in applied:
            _ = cid in table
        out["hit_index_lookups_per_s"] = round(lookups / (time.perf_counter() - started))
    return out


class _NoBroker:
    """Stands in for the ledger's record reader: counts the reads a lookup would make, finds nothing."""

    def __init__(self) -> None:
        self.reads = 0

    async def read(self, tp: object, offset: int) -> None:
        self.reads += 1
        return None

    async def stop(self) -> None:
        return None


def measure(kind: str, n: int, lookups: int) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopbotly.bench.ledger",
            "--child",
            kind,
            "--ids",
            str(n),
            "--lookups",
            str(lookups),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ledger bench ({kind}) failed: {proc.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def ledger_targets(results: dict[str, Any]) -> dict[str, Any]:
    ledger = results.get("ledger", {})
    return {
        "ledger_rss_mb_per_million": target(
            ledger.get("rss_mb_per_million"),
            "<=",
            TARGET_MB_PER_MILLION,
            unit="MB",
            what="crm-writer ledger RSS per million applied ids",
        ),
        "ledger_false_negatives": target(
            ledger.get("false_negatives"), "==", 0, what="applied ids the ledger index does not find"
        ),
    }


def run(n: int, lookups: int) -> dict[str, Any]:
    results: dict[str, Any] = {"ids": n, "lookups": lookups}
    for kind in KINDS:
        print(f"ledger bench: {kind}, {n} ids ...", flush=True)
        results[kind] = measure(kind, n, lookups)
    ledger, old, plain = results["ledger"], results["dict"], results["set"]
    results["memory_ratio_vs_dict"] = round(
        ledger["rss_mb_per_million"] / max(old["rss_mb_per_million"], 1e-9), 3
    )
    results["miss_lookup_ratio_vs_set"] = round(ledger["miss_lookups_per_s"] / plain["miss_lookups_per_s"], 3)
    results["hit_lookup_ratio_vs_set"] = round(
        ledger["hit_index_lookups_per_s"] / plain["hit_index_lookups_per_s"], 3
    )
    results["targets"] = ledger_targets(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ids", type=int, default=1_000_000, help="applied command ids to hold")
    parser.add_argument("--lookups", type=int, default=200_000, help="lookups of each kind to time")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.ids < 1 or args.lookups < 1:
        parser.error("--ids and --lookups must be at least 1")
    if args.child:
        print(json.dumps(child(args.child, args.ids, args.lookups)))
        return
    results = run(args.ids, args.lookups)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
