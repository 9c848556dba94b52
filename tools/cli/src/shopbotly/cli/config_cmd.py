"""`shopbotly config check FILE` and `shopbotly config schema`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shopbotly.cli._common import console, err_console
from shopbotly.common.config import json_schema, load_config
from shopbotly.common.errors import ConfigError

app = typer.Typer(help="Validate the tenants config and export its JSON Schema.", no_args_is_help=True)


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Config file, e.g. config/shopbotly.yaml")],
    resolve_secrets: Annotated[
        bool, typer.Option("--resolve-secrets", help="Also check that every secret reference resolves")
    ] = False,
) -> None:
    """Validate FILE; on error print the file, field path and what was expected, and exit 1."""
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    problems: list[str] = []
    if resolve_secrets:
        for tname, tenant in cfg.tenants.items():
            for sname, source in tenant.sources.items():
                for i, ref in enumerate(source.secrets):
                    try:
                        ref.resolve()
                    except LookupError as exc:
                        problems.append(f"{file}: tenants.{tname}.sources.{sname}.secrets.{i}: {exc}")
    for line in problems:
        err_console.print(line, markup=False, highlight=False)
    if problems:
        raise typer.Exit(1)
    counts = ", ".join(
        f"{name} ({len(t.sources)} sources, {len(t.mapping.rules)} rules, {len(t.connections)} connections)"
        for name, t in cfg.tenants.items()
    )
    console.print(
        f"{file}: ok: {len(cfg.tenants)} tenant(s): {counts or 'none'}", markup=False, highlight=False
    )


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of the config file (for editors: yaml-language-server)."""
    typer.echo(json_schema(), nl=False)
