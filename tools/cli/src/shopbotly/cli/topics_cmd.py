"""`shopbotly topics create|describe`: the topic registry applied to a cluster, idempotently."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from shopbotly.cli._common import console, err_console, kafka_settings, run
from shopbotly.common.kafka import make_admin
from shopbotly.common.topics import TopicDrift, ensure_topics

app = typer.Typer(help="Create and inspect ShopBotly's topics.", no_args_is_help=True)


@app.command("create")
def create(
    strict: Annotated[
        bool, typer.Option(help="Exit 1 when an existing topic drifted from the registry")
    ] = False,
) -> None:
    """Create missing topics with their declared configs; report drift in existing ones."""
    settings = kafka_settings()

    async def go() -> tuple[list[str], list[TopicDrift]]:
        admin = make_admin(settings, client_role="cli")
        await admin.start()
        try:
            return await ensure_topics(
                admin, settings.topics().values(), replication_factor=settings.replication_factor
            )
        finally:
            await admin.close()

    created, drift = run(go())
    for name in created:
        console.print(f"created {name}", markup=False)
    for d in drift:
        err_console.print(f"drift: {d}", markup=False)
    console.print(f"{len(settings.topics())} topics declared, {len(created)} created, {len(drift)} drifted")
    if drift and strict:
        raise typer.Exit(1)


@app.command("describe")
def describe() -> None:
    """Show each declared topic: key, value, partitions, configs, and whether it exists."""
    settings = kafka_settings()

    async def go() -> set[str]:
        admin = make_admin(settings, client_role="cli")
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    existing = run(go())
    table = Table("topic", "key", "value", "partitions", "configs", "exists")
    for spec in settings.topics().values():
        configs = ", ".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
        table.add_row(
            spec.name,
            spec.key,
            spec.value,
            str(spec.partitions),
            configs,
            "yes" if spec.name in existing else "NO",
        )
    console.print(table)
