"""What every command group shares: settings, running a coroutine, scans behind a progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shopbotly.common.kafka import KafkaSettings

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def kafka_settings() -> KafkaSettings:
    return KafkaSettings()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _Scan(Protocol):
    scanned: int


R = TypeVar("R", bound=_Scan)
Progressed = Callable[[int], None]


def run_with_progress(label: str, scan: Callable[[Progressed, Progressed], Coroutine[Any, Any, R]]) -> R:
    """Run a scan of Kafka records behind a progress bar on stderr (stdout stays the command's output).

    `scan(on_plan, on_scanned)` reports the total once planned and each record read. A missing topic or
    partition (LookupError) exits 2 with its reason.
    """
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    task = progress.add_task(label, total=None)
    with progress:
        try:
            report = run(
                scan(lambda total: progress.update(task, total=total), lambda n: progress.advance(task, n))
            )
        except LookupError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        progress.update(task, completed=report.scanned, total=report.scanned)
    return report
