"""Where the crm-writer replicas are: the probe URLs of `SHOPBOTLY_CONSOLE_WRITER_URLS`.

A URL prefixed with `dns+` (`dns+http://crm-writer-replicas:9102`, the convention of Prometheus's and Thanos's
service discovery) names every address its host resolves to, looked up again on each use: with a headless
Kubernetes Service that is every ready replica, so the Connections page merges all of them. Other URLs are
used as they are.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

import httpx

__all__ = ["DNS_PREFIX", "Resolver", "expand", "resolve_host"]

DNS_PREFIX = "dns+"
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address of `host` (A and AAAA records), in a stable order."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


async def expand(urls: Sequence[str], resolver: Resolver) -> tuple[list[str], list[str]]:
    """(one URL per replica, the `dns+` URLs that resolved to nothing, each with why)."""
    replicas: list[str] = []
    failed: list[str] = []
    for url in urls:
        if not url.startswith(DNS_PREFIX):
            replicas.append(url)
            continue
        target = httpx.URL(url.removeprefix(DNS_PREFIX))
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            addresses = await resolver(target.host, port)
        except OSError as exc:
            failed.append(f"{url}: cannot resolve {target.host} ({exc.strerror or type(exc).__name__})")
            continue
        if not addresses:
            failed.append(f"{url}: {target.host} has no address (no ready replica)")
        replicas += [str(target.copy_with(host=address)) for address in addresses]
    return replicas, failed
