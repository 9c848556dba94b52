"""What every command group shares: settings from the environment and running a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

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


def progress_bar() -> Progress:
    """The progress bar of long-running commands, on stderr so stdout stays the command's output."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
