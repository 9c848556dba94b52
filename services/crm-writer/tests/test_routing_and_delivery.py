"""The writer's routing and attempt-loop decisions, without a broker: what becomes a permanent error, what
spends an attempt, what does not."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from shopbotly.common.config import parse_config
from shopbotly.common.errors import OutageError, PermanentError, RetryableError, ShopbotlyError
from shopbotly.common.events import CommandOp, CrmCommand
from shopbotly.crm_writer import routing
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.clients import HttpClients
from shopbotly.crm_writer.connectors.base import Connector
from shopbotly.crm_writer.delivery import AttemptLog, Deliverer
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.routing import BOT_DEFAULT_LIMIT, Route, Router
from shopbotly.crm_writer.runtime import BreakerSettings
from shopbotly.crm_writer.verdict import ThrottledError

pytestmark = pytest.mark.unit


@pytest.fixture
async def router(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Router]:
    monkeypatch.setenv("SB_RT_TOKEN", "t")
    monkeypatch.setenv("SB_RT_BOT", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    hs = {
        "kind": "hubspot",
        "base_url": "https://hs.test",
        "auth": {"kind": "bearer", "token": {"env": "SB_RT_TOKEN"}},
    }
    config = parse_config(
        {
            "tenants": {
                "with_bot": {
                    "connections": {"hs": hs},
                    "bot_webhook": {"url": "https://bot.test/hook", "secret": {"env": "SB_RT_BOT"}},
                },
                "no_bot": {"connections": {"hs": hs, "crm": hs}},
            }
        }
    )
    r = Router(config, breaker=BreakerSettings())
    r.clients = HttpClients(
        limits=httpx.Limits(), transport=httpx.MockTransport(lambda _: httpx.Response(204))
    )
    yield r
    await r.clients.aclose()


def _cmd(tenant: str, connection: str, op: CommandOp = CommandOp.UPSERT_CONTACT) -> CrmCommand:
    return CrmCommand(
        command_id="c",
        tenant=tenant,
        connection=connection,
        identity="a@x.io",
        op=op,
        causation_event_id="e",
        rule_id="r",
        mapping_version="1",
    )


def test_commands_that_cannot_be_routed_are_permanent_errors_with_the_reason(router: Router) -> None:
    with pytest.raises(PermanentError, match="unknown tenant 'ghost'"):
        router.route(_cmd("ghost", "hs"))
    with pytest.raises(PermanentError, match=r"no connection 'sf' \(known: \['crm', 'hs'\]\)"):
        router.route(_cmd("no_bot", "sf"))
    with pytest.raises(PermanentError, match="has no bot_webhook"):
        router.route(_cmd("no_bot", "bot", CommandOp.NOTIFY_BOT))


def test_an_undeclared_bot_connection_gets_its_own_default_limit(router: Router) -> None:
    route = router.route(_cmd("with_bot", "bot", CommandOp.NOTIFY_BOT))
    limit = route.runtime.config.rate_limit
    assert (limit.requests, limit.per_seconds) == (BOT_DEFAULT_LIMIT.requests, BOT_DEFAULT_LIMIT.per_seconds)
    assert router.route(_cmd("with_bot", "bot", CommandOp.NOTIFY_BOT)) is route  # built once


def test_a_connection_no_connector_can_build_is_permanent_not_retried(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Connector:
        raise ValueError("options do not fit")

    monkeypatch.setattr(routing, "make_connector", broken)
    with pytest.raises(PermanentError, match="cannot be used: ValueError: options do not fit"):
        router.route(_cmd("no_bot", "crm"))


def test_the_share_applies_to_routes_built_before_and_after(router: Router) -> None:
    before = router.route(_cmd("no_bot", "hs"))
    router.set_share(0.25)
    after = router.route(_cmd("no_bot", "crm"))
    assert before.runtime.limit.share == after.runtime.limit.share == 0.25
    router.set_share(0.0)
    assert before.runtime.limit.share > 0  # never 0: a probe must still get through


class _Scripted(Connector):
    """Answers each apply() with the next scripted outcome: an exception to raise, or CRM ids."""

    def __init__(self, route_runtime: Any, script: list[ShopbotlyError | dict[str, str]]) -> None:
        super().__init__(route_runtime)
        self.script = script
        self.calls = 0

    def kind_of(self, op: CommandOp) -> WriteKind:
        return WriteKind.CONTACT

    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        outcome = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(outcome, ShopbotlyError):
            raise outcome
        return outcome


def _write() -> Write:
    w = Write(WriteKind.CONTACT, "no_bot", "hs", "a@x.io")
    w.absorb(_cmd("no_bot", "hs"), 0)
    return w


async def _deliver(router: Router, script: list[ShopbotlyError | dict[str, str]], attempts: int) -> Any:
    route = router.route(_cmd("no_bot", "hs"))
    route.runtime.config = route.runtime.config.model_copy(update={"max_attempts": attempts})
    scripted = _Scripted(route.runtime, script)
    deliverer = Deliverer(
        retry_base_s=0.001, retry_cap_s=0.002, throttle_outage_after=50, rng=random.Random(1)
    )
    return await deliverer.deliver(Route(route.runtime, scripted), _write(), partition=0), scripted, route


async def test_a_permanent_error_ends_at_once(router: Router) -> None:
    d, scripted, _ = await _deliver(router, [PermanentError("400: bad phone")], attempts=5)
    assert (d.ok, d.tries, scripted.calls, str(d.error)) == (False, 1, 1, "400: bad phone")


async def test_retryable_failures_spend_attempts_until_max_attempts(router: Router) -> None:
    d, scripted, _ = await _deliver(router, [RetryableError("503")], attempts=3)
    assert (d.ok, d.tries, scripted.calls) == (False, 3, 3)


async def test_throttling_and_outages_spend_no_attempt(router: Router) -> None:
    script: list[ShopbotlyError | dict[str, str]] = [
        ThrottledError("429", retry_after=0.001),
        ThrottledError("429", retry_after=0.001),
        OutageError("cannot connect"),
        {"contact": "1"},
    ]
    d, scripted, route = await _deliver(router, script, attempts=1)
    assert (d.ok, d.crm_ids, scripted.calls) == (True, {"contact": "1"}, 4)
    assert route.runtime.circuit_state is not CircuitState.CLOSED  # the outage opened the circuit


async def test_each_try_is_logged_with_its_outcome_status_and_the_crms_answer(router: Router) -> None:
    script: list[ShopbotlyError | dict[str, str]] = [
        ThrottledError("429: rate limited", retry_after=0.001),
        RetryableError("502: bad gateway", status=502),
        {"contact": "7"},
    ]
    d, _, _ = await _deliver(router, script, attempts=5)
    tries = orjson.loads(d.log.to_header())
    assert tries["omitted"] == 0
    assert [(t["n"], t["outcome"], t.get("status"), t.get("answer")) for t in tries["tries"]] == [
        (1, "throttled", 429, "429: rate limited"),
        (2, "retryable", 502, "502: bad gateway"),
        (3, "applied", None, None),
    ]
    assert all(t["ms"] >= 0 and t["at"].endswith("+00:00") for t in tries["tries"])


def test_the_attempt_log_keeps_the_first_and_the_latest_tries_and_counts_the_rest() -> None:
    log = AttemptLog(limit=5, keep_first=2, answer_chars=4)
    now = datetime.now(UTC)
    for n in range(1, 13):
        log.add(n, now, 0.001, "throttled", status=429, answer="too many requests")
    assert [e["n"] for e in log.entries] == [1, 2, 10, 11, 12]
    assert log.omitted == 7
    assert log.entries[0]["answer"] == "too "
