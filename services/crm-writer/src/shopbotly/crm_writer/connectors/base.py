"""The one interface every connector implements, the registry of connectors by CRM kind, and what connectors
share (contact state cache, JSON)."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import httpx

from shopbotly.common.cache import BoundedCache
from shopbotly.common.config import BotWebhookConfig, ConnectionConfig, crm_kind
from shopbotly.common.config._base import StrictModel
from shopbotly.common.errors import PermanentError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.runtime import ConnectionRuntime
from shopbotly.crm_writer.schema import CrmSchema

__all__ = [
    "STALL_RESET_S",
    "Connector",
    "ContactCache",
    "ContactState",
    "connector_class",
    "connector_kinds",
    "json_body",
    "schema_of",
    "unsupported",
]

OptionsT = TypeVar("OptionsT", bound=StrictModel)

# CRM kind → the connector class that applies its writes (each registers itself: `kind=` in its class line).
_CONNECTORS: dict[str, type[Connector[Any]]] = {}


class Connector(abc.ABC, Generic[OptionsT]):
    """Applies writes to one connection. Raises ShopbotlyError subclasses to say what went wrong.

    A CRM kind's connector is declared `class XConnector(Connector[XOptions], kind="x", schema=XSchema)`:
    that registers it, gives it `options`, the connection's options as validated at load
    (config/crm_kinds/x.py), and says how `shopbotly connections check|setup` reads and extends the kind's
    schema (`schema=None`: the kind has no schema to check, e.g. a REST API known only by its config).
    """

    # Commands merged into one write at most (1 turns coalescing off).
    max_merge: int = 1_000_000
    # The CRM kind this connector is registered for (unset: not registered, e.g. a test double).
    kind: ClassVar[str | None] = None
    # The kind's schema discovery (`connections check|setup`); None: not supported by the kind.
    schema: ClassVar[type[CrmSchema[Any]] | None] = None

    def __init_subclass__(
        cls, *, kind: str | None = None, schema: type[CrmSchema[Any]] | object | None = ..., **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if kind is None:
            return
        crm_kind(kind)  # LookupError for a kind that has no model in config/crm_kinds
        if kind in _CONNECTORS:
            raise TypeError(f"CRM kind {kind!r} already has a connector: {_CONNECTORS[kind].__qualname__}")
        if schema is not None and not (isinstance(schema, type) and issubclass(schema, CrmSchema)):
            raise TypeError(
                f"{cls.__qualname__} (CRM kind {kind!r}) must say schema=<a CrmSchema subclass> or "
                "schema=None (the kind has no `connections check|setup`)"
            )
        cls.kind = kind
        cls.schema = schema
        _CONNECTORS[kind] = cls

    def __init__(self, runtime: ConnectionRuntime) -> None:
        self.runtime = runtime
        config = runtime.config
        if self.kind is not None and not isinstance(config, crm_kind(self.kind)):
            raise PermanentError(
                f"connection {runtime.name} is of kind {config.kind!r}; "
                f"{type(self).__name__} applies {self.kind!r}"
            )
        self.options = cast(OptionsT, config.options)

    @classmethod
    def create(
        cls, runtime: ConnectionRuntime, *, bot_webhook: BotWebhookConfig | None = None
    ) -> Connector[OptionsT]:
        """The connector of a configured connection (`bot_webhook`: the tenant's, for kinds that need it)."""
        return cls(runtime)

    @abc.abstractmethod
    def kind_of(self, op: CommandOp) -> WriteKind:
        """The CRM write an op becomes; PermanentError if this connection cannot do it."""

    def group_of(self, op: CommandOp) -> Hashable:
        """Ops of the same kind and group may merge."""
        return self.kind_of(op)

    @abc.abstractmethod
    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        """Apply one write; returns the CRM ids it touched (e.g. {"contact": "123", "ticket": "9"})."""

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop cached CRM state of identities in partitions another replica may have written meanwhile."""

    async def aclose(self) -> None:
        """Stop background work (batch senders)."""

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Callable[[dict[str, str]], httpx.Request]:
        """A request builder for `runtime.call`, which passes the auth headers of each attempt. A body is
        JSON unless `headers` say otherwise; the timeout is the connection's."""
        extra = {**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}

        def build(auth: dict[str, str]) -> httpx.Request:
            return self.runtime.client.build_request(
                method,
                url,
                content=body,
                params=params,
                headers={**auth, **extra},
                timeout=self.runtime.config.timeout_s,
            )

        return build


def connector_class(kind: str) -> type[Connector[Any]]:
    """The connector registered for a CRM kind; PermanentError names the kinds that have one."""
    found = _CONNECTORS.get(kind)
    if found is None:
        raise PermanentError(
            f"no connector implements CRM kind {kind!r}; known kinds: {', '.join(sorted(_CONNECTORS))}"
        )
    return found


def connector_kinds() -> list[str]:
    """The CRM kinds that have a registered connector."""
    return sorted(_CONNECTORS)


def schema_of(connection: ConnectionConfig) -> CrmSchema[Any] | None:
    """The schema of a connection's kind as `connections check|setup` reads it; None: the kind has none."""
    schema = connector_class(connection.kind).schema
    return None if schema is None else schema(connection)


def unsupported(connection_kind: str, op: CommandOp) -> PermanentError:
    return PermanentError(f"a {connection_kind} connection cannot apply {op.value}")


@dataclass
class ContactState:
    """What the writer knows of a contact in the CRM: its id (None: not there) and properties."""

    id: str | None
    properties: dict[str, str] = field(default_factory=dict)
    partition: int = -1
    # The properties started from a read of the CRM (so they include what others wrote, e.g. tags).
    read: bool = False


# Longer than this without the cache being used, the process may have been frozen (SIGSTOP, a stalled VM)
# past its group session, its partitions written by another replica meanwhile without any rebalance
# callback having run here yet. Half the shortest session timeout the writer accepts (6 s).
STALL_RESET_S = 3.0


class ContactCache:
    """Contacts this replica read or wrote, for read-modify-write without a read per write.

    Valid only while this replica owns the identity's partition without a gap (one partition, one
    writer): entries of revoked partitions are dropped on revocation (and of gained ones on assignment),
    everything is dropped after the cache went unused for `stall_reset_s` (a frozen process may have lost
    its partitions and not know yet), and entries expire after `ttl_s` so edits made in the CRM by people
    are picked up.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int = 200_000,
        stall_reset_s: float = STALL_RESET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.stall_reset_s = stall_reset_s
        self._clock = clock
        # The shared bounded cache: least recently used out first, entries expire ttl_s after their put
        # (a TTL of 0 keeps nothing).
        self._entries: BoundedCache[str, ContactState] = BoundedCache(max_entries, ttl_s=ttl_s, clock=clock)
        self._used_at = clock()

    def _check_stall(self) -> None:
        now = self._clock()
        if now - self._used_at > self.stall_reset_s:
            self._entries.clear()
        self._used_at = now

    def get(self, identity: str) -> ContactState | None:
        self._check_stall()
        return self._entries.get(identity)

    def put(self, identity: str, state: ContactState) -> None:
        self._check_stall()
        self._entries.put(identity, state)

    def drop(self, identity: str) -> None:
        self._entries.pop(identity)

    def forget_partitions(self, partitions: set[int]) -> None:
        self._entries.discard_where(lambda _identity, state: state.partition in partitions)

    def __len__(self) -> int:
        return len(self._entries)


def json_body(response: httpx.Response | None) -> Any:
    """The answer's JSON, or None when it has none or it is not JSON."""
    if response is None or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
