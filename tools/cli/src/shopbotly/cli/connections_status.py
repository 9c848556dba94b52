"""`shopbotly connections status`: each connection's circuit, held-back commands and their oldest age, rate
and quota left, 429s and last failure, merged over every crm-writer replica's `GET /connections`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from shopbotly.cli._common import console, err_console

__all__ = ["merge_status", "status"]

_CIRCUIT_RANK = {"closed": 0, "half_open": 1, "open": 2}


def merge_status(replicas: Iterable[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per connection over all replicas: held commands add up, the oldest age and the worst circuit
    win, quotas are the lowest reported, 429s add up, the latest failure is kept."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in replicas:
        for row in rows:
            name = str(row["connection"])
            into = merged.setdefault(name, {"connection": name, "held": 0, "throttled": 0, "replicas": 0})
            into["replicas"] += 1
            into["held"] += int(row.get("held") or 0)
            into["throttled"] += int(row.get("throttled") or 0)
            for key in ("oldest_held_age_s",):
                if row.get(key) is not None:
                    into[key] = max(float(row[key]), float(into.get(key) or 0.0))
            for key in ("window_remaining", "daily_remaining"):
                if row.get(key) is not None:
                    into[key] = (
                        min(int(row[key]), int(into[key])) if into.get(key) is not None else int(row[key])
                    )
            circuit = row.get("circuit")
            if circuit is not None and _CIRCUIT_RANK.get(str(circuit), 0) >= _CIRCUIT_RANK.get(
                str(into.get("circuit", "closed")), 0
            ):
                into["circuit"] = circuit
                if row.get("circuit_reason"):
                    into["circuit_reason"] = row["circuit_reason"]
            if row.get("last_error_at") is not None and float(row["last_error_at"]) >= float(
                into.get("last_error_at") or 0.0
            ):
                into["last_error_at"] = row["last_error_at"]
                into["last_error"] = row.get("last_error")
    return [merged[name] for name in sorted(merged)]


def _fetch(url: str, timeout: float) -> list[dict[str, Any]]:
    response = httpx.get(f"{url.rstrip('/')}/connections", timeout=timeout)
    response.raise_for_status()
    rows = response.json().get("connections", [])
    return [dict(r) for r in rows]


def _age(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def status(
    writer: Annotated[
        list[str] | None,
        typer.Option(
            "--writer",
            help="A crm-writer replica's probe URL (repeat for each replica).",
            envvar="SHOPBOTLY_WRITER_URLS",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each replica.")] = 5.0,
) -> None:
    """Per connection: circuit, commands held back and the oldest one's age, quota left, 429s, last error."""
    urls = writer or ["http://127.0.0.1:9102"]
    replicas: list[list[dict[str, Any]]] = []
    unreachable: list[str] = []
    for url in urls:
        try:
            replicas.append(_fetch(url, timeout))
        except (httpx.HTTPError, ValueError) as exc:
            unreachable.append(f"{url}: {type(exc).__name__}: {exc}")
    rows = merge_status(replicas)
    if as_json:
        console.print_json(json.dumps({"connections": rows, "unreachable": unreachable}))
    else:
        table = Table(title=f"connections ({len(replicas)} of {len(urls)} crm-writer replicas)")
        for column in ("connection", "circuit", "held", "oldest held", "quota left", "429s", "last error"):
            table.add_column(column)
        for row in rows:
            quota = row.get("window_remaining")
            daily = row.get("daily_remaining")
            left = " / ".join(str(q) for q in (quota, daily) if q is not None) or "-"
            error = row.get("last_error") or ""
            if error and row.get("last_error_at"):
                at = datetime.fromtimestamp(float(row["last_error_at"]), tz=UTC).strftime("%H:%M:%SZ")
                error = f"{at} {error}"
            table.add_row(
                str(row["connection"]),
                str(row.get("circuit", "-")),
                str(row["held"]),
                _age(row.get("oldest_held_age_s")),
                left,
                str(row["throttled"]),
                error[:80],
            )
        console.print(table)
    for problem in unreachable:
        err_console.print(f"[yellow]unreachable[/]: {problem}")
    if not replicas:
        raise typer.Exit(2)
