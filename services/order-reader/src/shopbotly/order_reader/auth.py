"""Bearer API key → tenant, with the scope a lookup needs. Keys are compared by their SHA-256 hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from shopbotly.common.cache import BoundedCache
from shopbotly.common.config import ShopbotlyConfig, TenantConfig
from shopbotly.order_reader.metrics import Outcome
from shopbotly.order_reader.problems import ProblemError

__all__ = ["SECURITY", "SECURITY_SCHEMES", "Caller", "KeyRing", "bearer_token", "caller_of"]

# Documented in OpenAPI by hand: a FastAPI security dependency would cost more than the lookup itself.
SECURITY_SCHEMES: dict[str, Any] = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant API key: `Authorization: Bearer <key>`",
    }
}
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}]
_CHALLENGE = 'Bearer realm="shopbotly"'


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    config: TenantConfig


def bearer_token(header: str | None) -> str | None:
    """The credentials of `Authorization: Bearer <token>` (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class KeyRing:
    """Bearer key → tenant and scopes, per the config; keys already verified are remembered.

    Remembered by the SHA-256 of the key, so the map never holds a usable key. Only valid keys are
    remembered (bounded), so random keys cannot grow it; they take the config's full check each time.
    """

    def __init__(self, config: ShopbotlyConfig, capacity: int = 4096) -> None:
        self._config = config
        self._known: BoundedCache[bytes, tuple[Caller, frozenset[str]]] = BoundedCache(capacity)

    def authenticate(self, presented: str | None, scope: str) -> Caller:
        """The tenant owning the key; 401 without a valid key, 403 when the key lacks the scope."""
        if not presented:
            raise ProblemError(
                401,
                "an API key is required: send Authorization: Bearer <key>",
                outcome=Outcome.UNAUTHORIZED,
                headers={"WWW-Authenticate": _CHALLENGE},
            )
        digest = hashlib.sha256(presented.encode()).digest()
        known = self._known.get(digest)
        if known is None:
            known = self._verify(presented)
            self._known.put(digest, known)
        caller, scopes = known
        if scope not in scopes:
            raise ProblemError(
                403,
                f"the API key does not have the {scope!r} scope",
                outcome=Outcome.FORBIDDEN,
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="insufficient_scope", scope="{scope}"'},
            )
        return caller

    def _verify(self, presented: str) -> tuple[Caller, frozenset[str]]:
        found = self._config.tenant_for_api_key(presented)
        key = found[1].api_key_for(presented) if found is not None else None
        if found is None or key is None:
            raise ProblemError(
                401,
                "the API key is not valid",
                outcome=Outcome.UNAUTHORIZED,
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
        return Caller(found[0], found[1]), frozenset(key.scopes)


def caller_of(request: Request, scope: str) -> Caller:
    """The calling tenant of this request, for a key that has `scope`."""
    keys: KeyRing = request.app.state.runtime.keys
    return keys.authenticate(bearer_token(request.headers.get("authorization")), scope)
