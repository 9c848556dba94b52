"""The HTTP clients CRM calls go through, and what an untrusted server certificate means.

TLS trust is a property of an httpx client, not of a request: connections that trust the default CAs share
one client (one connection pool); each `tls.ca_bundle` gets a client of its own, verifying against that
bundle only. A connection's OAuth token calls use its client too (tokens.py): verified the same way.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from shopbotly.common.config import ConnectionConfig, TlsConfig

__all__ = ["HttpClients", "certificate_error", "connection_client"]


def connection_client(tls: TlsConfig, **kwargs: Any) -> httpx.AsyncClient:
    """A client that verifies servers as `tls` says (ConfigError when its CA bundle cannot be read)."""
    return _client(tls.ssl_context(), **kwargs)


def _client(context: ssl.SSLContext | None, **kwargs: Any) -> httpx.AsyncClient:
    # None: httpx's default trust (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
    return httpx.AsyncClient(verify=context if context is not None else True, **kwargs)


def certificate_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure under an httpx transport error (the server's certificate not trusted, a handshake that
    failed), or None when the error is something else (refused, unreachable, timed out)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class HttpClients:
    """The writer's clients: one shared by connections with the default trust, one per CA bundle."""

    def __init__(self, *, limits: httpx.Limits, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._kwargs: dict[str, Any] = {"limits": limits, "transport": transport, "follow_redirects": False}
        self.default = _client(None, **self._kwargs)
        self._by_bundle: dict[Path, tuple[httpx.AsyncClient, ssl.SSLContext | None]] = {}

    def for_connection(self, config: ConnectionConfig) -> httpx.AsyncClient:
        bundle = config.tls.ca_bundle
        if bundle is None:
            return self.default
        if bundle not in self._by_bundle:
            context = config.tls.ssl_context()
            client = _client(context, **self._kwargs)
            self._by_bundle[bundle] = (client, context)
        return self._by_bundle[bundle][0]

    def reload_trust(self, config: ConnectionConfig) -> bool:
        """Read the connection's CA bundle again into its client's context (a CA rotated on disk is trusted
        by the next connections); False when there is no bundle or it cannot be read (nothing changes)."""
        entry = self._by_bundle.get(config.tls.ca_bundle) if config.tls.ca_bundle else None
        if entry is None or entry[1] is None:
            return False
        try:
            entry[1].load_verify_locations(cafile=str(config.tls.ca_bundle))
        except (OSError, ssl.SSLError):
            return False
        return True

    async def aclose(self) -> None:
        await self.default.aclose()
        for client, _ in self._by_bundle.values():
            await client.aclose()
