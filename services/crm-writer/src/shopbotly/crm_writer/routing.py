"""Which connection a command goes to: one route (its runtime and connector) per `tenant:connection`, built
on first use from the tenants file. A command that cannot be routed is a permanent error, never an outage
and never a retry: an unknown tenant or connection, a bot notification for a tenant without a bot webhook,
or a connection whose definition no connector can use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shopbotly.common.config import BotWebhookConfig, ConnectionConfig, RateLimitConfig, ShopbotlyConfig
from shopbotly.common.config._connections import RESERVED_BOT_CONNECTION
from shopbotly.common.config.crm_kinds.bot_webhook import BotWebhookConnection
from shopbotly.common.errors import PermanentError
from shopbotly.common.events import CrmCommand
from shopbotly.common.logging import get_logger
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.clients import HttpClients
from shopbotly.crm_writer.connectors import Connector, make_connector
from shopbotly.crm_writer.runtime import BreakerSettings, ConnectionRuntime

__all__ = ["BOT_DEFAULT_LIMIT", "Route", "Router"]

log = get_logger(__name__)

# An undeclared `bot` connection: 100 notifications per second per tenant (a bot endpoint is not a CRM quota).
BOT_DEFAULT_LIMIT = RateLimitConfig(requests=100, per_seconds=1.0)

# A share is never 0: a route must be able to send its probe even between two assignments.
_MIN_SHARE = 1e-6


@dataclass
class Route:
    runtime: ConnectionRuntime
    connector: Connector[Any]


class Router:
    """The routes of one writer replica, and what applies to all of them (rate-limit share, cached state)."""

    def __init__(
        self,
        config: ShopbotlyConfig,
        *,
        breaker: BreakerSettings,
        on_circuit_change: Callable[[ConnectionRuntime], None] | None = None,
    ) -> None:
        self.config = config
        self.clients: HttpClients | None = None  # set when the writer starts
        self._breaker = breaker
        self._on_circuit_change = on_circuit_change
        self._share = 1.0
        self._routes: dict[str, Route] = {}
        self._warned: set[str] = set()  # connections whose limit was reported as too low to share

    def get(self, label: str) -> Route | None:
        return self._routes.get(label)

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def held(self, label: str) -> bool:
        """Whether a connection holds back its commands: its circuit is open or probing."""
        route = self._routes.get(label)
        return route is not None and route.runtime.circuit_state is not CircuitState.CLOSED

    def route(self, cmd: CrmCommand) -> Route:
        label = f"{cmd.tenant}:{cmd.connection}"
        route = self._routes.get(label)
        if route is not None:
            return route
        conn, bot = self._connection(cmd)
        clients = self.clients
        assert clients is not None, "the router is used before the writer started"
        try:
            runtime = ConnectionRuntime(
                label,
                conn,
                clients.for_connection(conn),
                breaker=self._breaker,
                share=max(self._share, _MIN_SHARE),
                on_circuit_change=self._on_circuit_change,
                reload_trust=lambda: clients.reload_trust(conn),
            )
            connector = make_connector(runtime, bot_webhook=bot)
        except PermanentError:
            raise
        except Exception as exc:  # a connection that cannot be built is a configuration error, not an outage
            raise PermanentError(f"connection {label!r} cannot be used: {type(exc).__name__}: {exc}") from exc
        route = self._routes[label] = Route(runtime, connector)
        self._check_share(label, route)
        return route

    def _connection(self, cmd: CrmCommand) -> tuple[ConnectionConfig, BotWebhookConfig | None]:
        tenant = self.config.tenants.get(cmd.tenant)
        if tenant is None:
            raise PermanentError(f"unknown tenant {cmd.tenant!r}")
        if cmd.connection == RESERVED_BOT_CONNECTION:
            bot = tenant.bot_webhook
            if bot is None:
                raise PermanentError(f"tenant {cmd.tenant!r} has no bot_webhook for connection 'bot'")
            conn = tenant.connections.get(RESERVED_BOT_CONNECTION) or BotWebhookConnection(
                kind="bot_webhook", rate_limit=BOT_DEFAULT_LIMIT
            )
            if conn.kind != "bot_webhook":
                raise PermanentError("connection 'bot' is reserved for the bot webhook (kind bot_webhook)")
            return conn, bot
        found = tenant.connections.get(cmd.connection)
        if found is None:
            known = sorted(tenant.connections) or "none"
            raise PermanentError(
                f"tenant {cmd.tenant!r} has no connection {cmd.connection!r} (known: {known})"
            )
        return found, None

    def set_share(self, share: float) -> None:
        """This replica's share of every connection's rate limit, for the routes it has and will build."""
        self._share = share
        for label, route in self._routes.items():
            route.runtime.set_share(max(share, _MIN_SHARE))
            self._check_share(label, route)

    def _check_share(self, label: str, route: Route) -> None:
        """Say once per connection when its limit is too low to be shared by partitions (ratelimit.py)."""
        limit = route.runtime.limit
        if self._share > 0 and limit.below_one_request and label not in self._warned:
            self._warned.add(label)
            rl = route.runtime.config.rate_limit
            log.warning(
                "rate limit below one request a window for this replica's share: replicas together may "
                "exceed it; configure at least as many requests a window as crm-commands has partitions",
                connection=label,
                requests=rl.requests,
                per_seconds=rl.per_seconds,
                share=round(self._share, 3),
            )

    def forget_partitions(self, partitions: set[int]) -> None:
        for route in self._routes.values():
            route.connector.forget_partitions(partitions)

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.connector.aclose()
