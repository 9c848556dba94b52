"""Connection runtime: batches fill while the limit is reached; an open circuit holds callers back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from shopbotly.common.config import parse_connection
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.runtime import BatchQueue, BreakerSettings, Permit
from shopbotly.crm_writer.verdict import Verdict, VerdictKind

pytestmark = pytest.mark.component

CFG = {
    "kind": "generic",
    "base_url": "https://crm.test",
    "rate_limit": {"requests": 2, "per_seconds": 0.2, "burst": 1},
}


async def test_items_pile_up_while_the_limit_holds_and_leave_together(make_runtime: Any) -> None:
    rt = make_runtime(CFG, httpx.MockTransport(lambda r: httpx.Response(200)))
    sent: list[list[int]] = []

    async def send(permit: Permit, items: list[int]) -> Sequence[int | BaseException]:
        rt.settle(permit, Verdict(VerdictKind.OK, 200))
        sent.append(items)
        return [i * 10 for i in items]

    q: BatchQueue[int, int] = BatchQueue(rt, max_batch=50, max_concurrent=1, send=send)
    first = await q.submit(0)  # the one token of burst: sent alone, at once
    results = await asyncio.gather(*(q.submit(i) for i in range(1, 31)))
    await q.aclose()
    assert first == 0 and results == [i * 10 for i in range(1, 31)]
    assert sent == [[0], list(range(1, 31))]  # the next token came later; everything waiting went with it


async def test_cancelled_submissions_are_not_sent(make_runtime: Any) -> None:
    rt = make_runtime(CFG, httpx.MockTransport(lambda r: httpx.Response(200)))
    sent: list[list[int]] = []

    async def send(permit: Permit, items: list[int]) -> Sequence[int | BaseException]:
        rt.settle(permit, Verdict(VerdictKind.OK, 200))
        sent.append(items)
        return items

    q: BatchQueue[int, int] = BatchQueue(rt, max_batch=50, max_concurrent=1, send=send)
    await q.submit(0)
    doomed = asyncio.create_task(q.submit(1))
    kept = asyncio.create_task(q.submit(2))
    await asyncio.sleep(0.01)
    doomed.cancel()  # its worker gave up (partition revoked) while waiting for the limit
    assert await kept == 2
    await q.aclose()
    assert sent == [[0], [2]]


async def test_open_circuit_holds_callers_until_a_probe_succeeds(make_runtime: Any) -> None:
    calls: list[float] = []
    healthy = asyncio.Event()

    async def crm(request: httpx.Request) -> httpx.Response:
        calls.append(asyncio.get_running_loop().time())
        return httpx.Response(200 if healthy.is_set() else 503)

    cfg = parse_connection({**CFG, "rate_limit": {"requests": 1000, "per_seconds": 1}})
    breaker = BreakerSettings(failure_threshold=2, open_s=0.5, max_open_s=1.0)
    rt = make_runtime(cfg, httpx.MockTransport(crm), breaker=breaker)

    def build(headers: dict[str, str]) -> httpx.Request:
        return rt.client.build_request("POST", "https://crm.test/x")

    def classify(r: httpx.Response) -> Verdict:
        return Verdict(VerdictKind.OK if r.status_code == 200 else VerdictKind.RETRY, r.status_code)

    for _ in range(2):
        await rt.call(build, op="x", classify=classify)
    assert rt.circuit_state is CircuitState.OPEN and len(calls) == 2
    waiting = [asyncio.create_task(rt.call(build, op="x", classify=classify)) for _ in range(5)]
    await asyncio.sleep(0.2)
    assert len(calls) == 2  # nobody gets through while the circuit is open
    await asyncio.sleep(0.5)  # the first probe (at 0.5 s) fails: open again, for twice as long
    assert len(calls) == 3 and rt.circuit_state is CircuitState.OPEN
    healthy.set()
    results = await asyncio.gather(*waiting)
    # The failed probe's caller saw the 503; the next probe succeeded and let everyone else through.
    assert sorted(v.kind.value for _, v in results) == ["ok", "ok", "ok", "ok", "retry"]
    assert rt.circuit_state is CircuitState.CLOSED and len(calls) == 7
