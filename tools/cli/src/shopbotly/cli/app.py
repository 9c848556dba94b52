"""`shopbotly`: the operator CLI. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import typer

from shopbotly.cli import config_cmd, connections_cmd, connections_status, topics_cmd
from shopbotly.cli.demo_cmd import demo
from shopbotly.cli.dlq_cmd import app as dlq_app
from shopbotly.cli.ledger_cmd import app as ledger_app
from shopbotly.cli.map_cmd import map_event_command
from shopbotly.cli.replay_cmd import replay

app = typer.Typer(
    name="shopbotly",
    help="Operate ShopBotly: check config, manage topics, dry-run mappings, replay and redrive.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(connections_cmd.app, name="connections")
connections_cmd.app.command("status")(connections_status.status)
app.command("replay")(replay)
app.add_typer(dlq_app, name="dlq")
app.add_typer(ledger_app, name="ledger")
app.command("map")(map_event_command)
app.command("demo")(demo)


def main() -> None:
    app()
