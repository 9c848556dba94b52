"""Token manager: caching, refresh ahead of expiry, single flight, JWT bearer, refresh-token rotation."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shopbotly.common.config import AuthConfig
from shopbotly.common.errors import AuthError, RetryableError
from shopbotly.crm_writer.tokens import TokenManager

pytestmark = pytest.mark.component


class TokenEndpoint:
    def __init__(self, *, expires_in: int | None = 3600, status: int = 200, delay: float = 0.0) -> None:
        self.calls: list[dict[str, str]] = []
        self.expires_in = expires_in
        self.status = status
        self.delay = delay

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        self.calls.append(form)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return httpx.Response(
                self.status, json={"error": "invalid_client", "error_description": "bad secret"}
            )
        body: dict[str, object] = {
            "access_token": f"tok-{len(self.calls)}",
            "instance_url": "https://org.example",
        }
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if form.get("grant_type") == "refresh_token":
            body["refresh_token"] = f"rt-{len(self.calls)}"
        return httpx.Response(200, content=orjson.dumps(body))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_credentials(**kw: object) -> AuthConfig:
    return AuthConfig.model_validate(
        {
            "kind": "oauth2_client_credentials",
            "token_url": "https://idp.example/token",
            "client_id": "cid",
            "client_secret": {"env": "SB_TEST_CLIENT_SECRET"},
            **kw,
        }
    )


async def test_cached_then_refreshed_ahead_of_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_CLIENT_SECRET", "s3cret")
    endpoint, clock = TokenEndpoint(expires_in=600), Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        tm = TokenManager(client_credentials(refresh_ahead_s=60), client, clock=clock)
        assert await tm.headers() == {"Authorization": "Bearer tok-1"}
        clock.now += 500
        assert (await tm.token()).value == "tok-1"  # still 100 s to go, more than the 60 s margin
        clock.now += 50
        assert (await tm.token()).value == "tok-2"  # inside the margin: minted before it lapses
    assert endpoint.calls[0] == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "s3cret",
    }
    assert tm.instance_url == "https://org.example"


async def test_concurrent_callers_share_one_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_CLIENT_SECRET", "s")
    endpoint = TokenEndpoint(delay=0.05)
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        tm = TokenManager(client_credentials(), client)
        tokens = await asyncio.gather(*(tm.token() for _ in range(20)))
        assert {t.value for t in tokens} == {"tok-1"} and len(endpoint.calls) == 1
        # A burst of 401s for the same token causes one refresh, not one each.
        tm.invalidate("tok-1")
        tm.invalidate("tok-1")
        await asyncio.gather(*(tm.token() for _ in range(5)))
        tm.invalidate("tok-1")  # stale: the current token is tok-2 and stays
        assert (await tm.token()).value == "tok-2" and len(endpoint.calls) == 2


async def test_missing_expiry_uses_the_default_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_CLIENT_SECRET", "s")
    endpoint, clock = TokenEndpoint(expires_in=None), Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        tm = TokenManager(client_credentials(default_ttl_s=120, refresh_ahead_s=10), client, clock=clock)
        await tm.token()
        clock.now += 115
        await tm.token()
    assert len(endpoint.calls) == 2


async def test_refresh_token_rotates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_REFRESH", "rt-initial")
    endpoint = TokenEndpoint()
    auth = AuthConfig.model_validate(
        {
            "kind": "oauth2_refresh_token",
            "token_url": "https://idp.example/token",
            "client_id": "cid",
            "refresh_token": {"env": "SB_TEST_REFRESH"},
        }
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        tm = TokenManager(auth, client)
        await tm.token()
        tm.invalidate()
        await tm.token()
    assert [c["refresh_token"] for c in endpoint.calls] == ["rt-initial", "rt-1"]  # the rotated one is used


async def test_jwt_bearer_assertion_is_signed_with_the_private_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "key.pem").write_bytes(pem)
    endpoint = TokenEndpoint()
    auth = AuthConfig.model_validate(
        {
            "kind": "jwt_bearer",
            "token_url": "https://login.example/services/oauth2/token",
            "client_id": "consumer-key",
            "username": "integration@org.example",
            "audience": "https://login.salesforce.com",
            "private_key": {"file": str(tmp_path / "key.pem")},
        }
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as client:
        tm = TokenManager(auth, client)
        assert (await tm.token()).value == "tok-1"
    form = endpoint.calls[0]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(
        form["assertion"], key.public_key(), algorithms=["RS256"], audience="https://login.salesforce.com"
    )
    assert (claims["iss"], claims["sub"]) == ("consumer-key", "integration@org.example")
    assert claims["exp"] - claims["iat"] <= 300


async def test_refused_credentials_are_auth_errors_and_outages_retryable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SB_TEST_CLIENT_SECRET", "s")
    async with httpx.AsyncClient(transport=httpx.MockTransport(TokenEndpoint(status=401))) as client:
        with pytest.raises(AuthError, match="invalid_client bad secret"):
            await TokenManager(client_credentials(), client).token()
    async with httpx.AsyncClient(transport=httpx.MockTransport(TokenEndpoint(status=503))) as client:
        with pytest.raises(RetryableError):
            await TokenManager(client_credentials(), client).token()
    monkeypatch.delenv("SB_TEST_CLIENT_SECRET")
    async with httpx.AsyncClient(transport=httpx.MockTransport(TokenEndpoint())) as client:
        with pytest.raises(AuthError, match="env:SB_TEST_CLIENT_SECRET is not set"):
            await TokenManager(client_credentials(), client).token()


async def test_static_tokens_and_api_key_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_KEY", "k1")
    async with httpx.AsyncClient() as client:
        tm = TokenManager(
            AuthConfig.model_validate(
                {"kind": "api_key_header", "header": "X-Api-Key", "token": {"env": "SB_TEST_KEY"}}
            ),
            client,
        )
        assert await tm.headers() == {"X-Api-Key": "k1"}
        monkeypatch.setenv("SB_TEST_KEY", "k2")  # rotated secret
        tm.invalidate("k1")
        assert await tm.headers() == {"X-Api-Key": "k2"}
        none = TokenManager(AuthConfig(kind="none"), client)
        assert await none.headers() == {} and not none.refreshes
