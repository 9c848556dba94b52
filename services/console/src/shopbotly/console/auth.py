"""Operator sign-in: a key (compared by SHA-256) becomes a signed, HttpOnly session cookie.

The cookie holds the operator's name and an expiry, signed with HMAC-SHA256; never the key. Forms that
change something carry a CSRF token derived from the session, and the cookie is SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from shopbotly.console.settings import OperatorKey, Settings

__all__ = ["COOKIE", "Operator", "Sessions"]

COOKIE = "shopbotly_console"


@dataclass(frozen=True)
class Operator:
    key: OperatorKey
    session: str

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def admin(self) -> bool:
        return self.key.admin

    @property
    def tenants(self) -> frozenset[str] | None:
        return self.key.tenant_scope

    def sees(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class Sessions:
    def __init__(self, settings: Settings) -> None:
        secret = settings.console_session_secret or secrets.token_urlsafe(32)
        self._secret = secret.encode()
        self._ttl_s = settings.console_session_hours * 3600
        self._operators = {o.name: o for o in settings.console_operators}

    def sign_in(self, presented: str) -> str | None:
        """A session token for a valid key, else None (every key is checked, so timing tells nothing)."""
        found = [o for o in self._operators.values() if o.matches(presented.strip())]
        if not found:
            return None
        payload = f"{found[0].name}|{int(time.time() + self._ttl_s)}"
        return f"{payload}|{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def operator(self, token: str | None) -> Operator | None:
        if not token or token.count("|") != 2:
            return None
        name, expires, signature = token.split("|")
        if not hmac.compare_digest(signature, self._sign(f"{name}|{expires}")):
            return None
        if not expires.isdigit() or int(expires) < time.time() or name not in self._operators:
            return None
        return Operator(self._operators[name], token)

    def csrf(self, operator: Operator) -> str:
        return self._sign(f"csrf|{operator.session}")

    def check_csrf(self, operator: Operator, presented: str | None) -> None:
        if not presented or not hmac.compare_digest(presented, self.csrf(operator)):
            raise HTTPException(403, "the form is stale or not from this console; reload the page and retry")


class SignInRequired(Exception):
    """Raised by a page dependency: the browser is sent to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def current_operator(request: Request) -> Operator:
    sessions: Sessions = request.app.state.sessions
    operator = sessions.operator(request.cookies.get(COOKIE))
    if operator is None:
        raise SignInRequired(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    return operator


def admin_operator(request: Request) -> Operator:
    operator = current_operator(request)
    if not operator.admin:
        raise HTTPException(403, f"operator {operator.name!r} has read access only; redrive needs admin")
    return operator
