"""Credentials of a connection: cached access tokens, refreshed ahead of expiry, one refresh at a time.

Secrets come from SecretRef (environment or mounted file) and are read when a token is minted, so a
rotated file is picked up on the next refresh. Never logged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import jwt

from shopbotly.common.config import AuthConfig
from shopbotly.common.errors import AuthError, PermanentError, RetryableError
from shopbotly.crm_writer.clients import certificate_error

__all__ = ["AccessToken", "TokenManager"]

_JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float  # monotonic seconds
    instance_url: str | None = None


class TokenManager:
    """Hands out auth headers for one connection.

    - Cached until `refresh_ahead_s` before expiry, then minted again before use.
    - Single flight: concurrent callers that need a new token share one token request.
    - `invalidate(token)` after a 401: the next `headers()` mints a new one, unless another caller
      already replaced that token (so a burst of 401s causes one refresh, not one each).
    """

    def __init__(
        self,
        auth: AuthConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth = auth
        self._client = client
        self._clock = clock
        self._wall = wall_clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self._rotated_refresh_token: str | None = None
        self.mints = 0

    @property
    def refreshes(self) -> bool:
        """Whether a refused token can be replaced (static tokens are read again from their secret)."""
        return self.auth.kind != "none"

    @property
    def instance_url(self) -> str | None:
        return self._token.instance_url if self._token else None

    async def headers(self) -> dict[str, str]:
        kind = self.auth.kind
        if kind == "none":
            return {}
        token = await self.token()
        if kind == "api_key_header":
            return {self.auth.header: token.value}
        return {"Authorization": f"Bearer {token.value}"}

    async def token(self) -> AccessToken:
        current = self._token
        if current is not None and self._fresh(current):
            return current
        async with self._lock:
            current = self._token
            if current is not None and self._fresh(current):
                return current  # minted by the caller we waited for
            self._token = await self._mint()
            self.mints += 1
            return self._token

    def invalidate(self, refused: str | None = None) -> None:
        """Forget the token the CRM refused (only if it is still the current one)."""
        if self._token is not None and (refused is None or self._token.value == refused):
            self._token = None

    def current_value(self) -> str | None:
        return self._token.value if self._token else None

    def _fresh(self, token: AccessToken) -> bool:
        return self._clock() < token.expires_at - self.auth.refresh_ahead_s

    async def _mint(self) -> AccessToken:
        a = self.auth
        now = self._clock()
        if a.kind in ("bearer", "api_key_header"):
            assert a.token is not None
            # Static tokens never expire by themselves; re-read after an invalidation (rotation).
            return AccessToken(self._secret(a.token), now + 365 * 86_400)
        form: dict[str, str] = {}
        if a.kind == "oauth2_client_credentials":
            form = {"grant_type": "client_credentials"}
        elif a.kind == "oauth2_refresh_token":
            assert a.refresh_token is not None
            refresh = self._rotated_refresh_token or self._secret(a.refresh_token)
            form = {"grant_type": "refresh_token", "refresh_token": refresh}
        elif a.kind == "jwt_bearer":
            form = {"grant_type": _JWT_BEARER_GRANT, "assertion": self._assertion()}
        if a.client_id and a.kind != "jwt_bearer":
            form["client_id"] = a.client_id
        if a.client_secret is not None:
            form["client_secret"] = self._secret(a.client_secret)
        if a.scope:
            form["scope"] = a.scope
        if a.audience and a.kind == "oauth2_client_credentials":
            form["audience"] = a.audience
        assert a.token_url is not None
        try:
            resp = await self._client.post(a.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            if (tls := certificate_error(exc)) is not None:
                # Not a down identity provider: one that cannot be trusted, which waiting does not change.
                raise AuthError(
                    f"TLS: the token endpoint's certificate is not trusted "
                    f"({getattr(tls, 'verify_message', None) or tls.reason}); set tls.ca_bundle"
                ) from None
            raise RetryableError(f"token endpoint unreachable: {type(exc).__name__}") from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise RetryableError(f"token endpoint answered {resp.status_code}", status=resp.status_code)
        if resp.status_code != 200:
            # invalid_client / invalid_grant: the credentials themselves are refused.
            raise AuthError(
                f"token endpoint refused the credentials: {_oauth_error(resp)}", status=resp.status_code
            )
        try:
            data = resp.json()
            value = str(data["access_token"])
        except (ValueError, KeyError, TypeError):
            raise PermanentError("token endpoint answer has no access_token") from None
        expires_in = data.get("expires_in")
        try:
            ttl = float(expires_in) if expires_in is not None else None
        except (TypeError, ValueError):
            ttl = None
        if data.get("refresh_token"):
            self._rotated_refresh_token = str(data["refresh_token"])
        return AccessToken(
            value=value,
            expires_at=now + (ttl if ttl is not None else a.default_ttl_s),
            instance_url=data.get("instance_url"),
        )

    def _assertion(self) -> str:
        a = self.auth
        assert a.private_key is not None
        now = int(self._wall())
        claims = {
            "iss": a.client_id,
            "sub": a.username,
            "aud": a.audience or a.token_url,
            "iat": now,
            "exp": now + 180,
            "jti": uuid.uuid4().hex,
        }
        try:
            return jwt.encode(claims, self._secret(a.private_key), algorithm="RS256")
        except (ValueError, TypeError) as exc:
            raise AuthError(f"JWT bearer private key unusable: {type(exc).__name__}") from None

    @staticmethod
    def _secret(ref: object) -> str:
        from shopbotly.common.config import SecretRef

        assert isinstance(ref, SecretRef)
        try:
            return ref.resolve()
        except LookupError as exc:
            # The reference names where the secret should be, never its value.
            raise AuthError(str(exc)) from None


def _oauth_error(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(data, dict):
        err = data.get("error") or data.get("errorCode") or "error"
        desc = data.get("error_description") or data.get("message") or ""
        return f"HTTP {resp.status_code} {err} {desc}".strip()
    return f"HTTP {resp.status_code}"
