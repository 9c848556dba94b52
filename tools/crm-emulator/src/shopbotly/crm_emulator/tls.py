"""The emulator's HTTPS: a local CA (trustme) and a server certificate for the emulator's names.

The CA is made once and kept beside its public PEM (the key in `<ca>.key`, mode 0600); a restart reuses it, so
clients that loaded the PEM keep trusting the emulator. The server certificate is issued at every start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["ServerTls", "certificate_names", "prepare_tls"]

# A bind address that is every interface names no host a client would connect to.
_WILDCARDS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class ServerTls:
    """What uvicorn serves with (`chain`: the server key and its certificate chain, one PEM) and what clients
    trust (`ca_path`)."""

    ca_path: Path
    chain: Path


def certificate_names(host: str, extra: list[str]) -> list[str]:
    """The names the server certificate is valid for: loopback, the bind address (not a wildcard), `extra`."""
    names = ["localhost", "127.0.0.1", "::1"]
    for name in [host, *extra]:
        if name not in _WILDCARDS and name not in names:
            names.append(name)
    return names


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically (a reader never sees half a file) with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _load_or_make_ca(ca_path: Path) -> trustme.CA:
    key_path = ca_path.with_name(ca_path.name + ".key")
    if ca_path.is_file() and key_path.is_file():
        return trustme.CA.from_pem(ca_path.read_bytes(), key_path.read_bytes())
    ca = trustme.CA(organization_name="ShopBotly CRM emulator")
    ca_path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(key_path, ca.private_key_pem.bytes())
    _write_private(ca_path, ca.cert_pem.bytes())
    ca_path.chmod(0o644)  # public: what clients trust
    return ca


def prepare_tls(ca_path: Path, host: str, extra_names: list[str]) -> ServerTls:
    """The CA at `ca_path` (made when absent) and a fresh server certificate beside it."""
    ca = _load_or_make_ca(ca_path)
    leaf = ca.issue_cert(*certificate_names(host, extra_names))
    chain = ca_path.with_name(ca_path.stem + "-server.pem")
    _write_private(chain, leaf.private_key_and_cert_chain_pem.bytes())
    return ServerTls(ca_path=ca_path, chain=chain)
