"""HubSpot connector against an in-memory HubSpot (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from shopbotly.common.errors import AuthError, OutageError, PermanentError, RetryableError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.circuit import CircuitState
from shopbotly.crm_writer.connectors.hubspot import HubSpotConnector
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.verdict import ThrottledError
from shopbotly.testkit.crm_writer import FakeHubSpot, crm_command, one_write

pytestmark = pytest.mark.component

BEARER = {"kind": "bearer", "token": {"env": "SB_TEST_HS_TOKEN"}}


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_HS_TOKEN", "hs-token")


def hs_config(**kw: Any) -> dict[str, Any]:
    return {
        "kind": "hubspot",
        "base_url": "https://api.hubapi.test",
        "auth": BEARER,
        "rate_limit": {"requests": 1000, "per_seconds": 1},
        **kw,
    }


def write(identity: str, op: CommandOp = CommandOp.UPSERT_CONTACT, i: int = 0, **kw: Any) -> Write:
    cmd = crm_command(
        i, op, identity, command_id=f"cmd-{identity}-{i}", causation_event_id="e", connection="hs", **kw
    )
    # HubSpot has no lead object: a lead is a contact.
    return one_write(cmd, WriteKind.CONTACT if op is CommandOp.UPSERT_LEAD else None)


async def test_concurrent_contacts_go_out_in_one_batch(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    try:
        ids = await asyncio.gather(
            *(hs.apply(write(f"u{i}@x.io", fields={"firstname": f"F{i}"}), partition=0) for i in range(150))
        )
    finally:
        await hs.aclose()
    assert fake.batch_sizes == [100, 50]  # HubSpot's 100-input limit, the rest in the next request
    assert len({i["contact"] for i in ids}) == 150 and fake.creates == 150
    assert fake.contacts["u7@x.io"].properties["firstname"] == "F7"


async def test_a_refused_record_fails_alone(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    try:
        results = await asyncio.gather(
            *(
                hs.apply(write(e, fields={"lastname": "L"}), partition=0)
                for e in ["a@x.io", "not-an-email", "b@x.io"]
            ),
            return_exceptions=True,
        )
    finally:
        await hs.aclose()
    assert isinstance(results[1], PermanentError) and "invalid" in results[1].message
    assert isinstance(results[0], dict) and isinstance(results[2], dict)
    assert fake.batch_sizes == [3] and set(fake.contacts) == {"a@x.io", "b@x.io"}


async def test_a_batch_refused_as_a_whole_is_split_to_find_the_culprit(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    fake.refuse_property = "bogus"
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    writes = [write(f"u{i}@x.io", fields={"firstname": "F"}) for i in range(8)]
    writes[5] = write("u5@x.io", fields={"bogus": "1"})
    try:
        results = await asyncio.gather(*(hs.apply(w, partition=0) for w in writes), return_exceptions=True)
    finally:
        await hs.aclose()
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [5] and isinstance(results[5], PermanentError)
    assert len(fake.contacts) == 7
    assert fake.batch_sizes[0] == 8 and len(fake.batch_sizes) <= 1 + 2 * 3  # log2(8) levels of halves


async def test_tags_merge_with_what_the_crm_already_has(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    fake.seed("a@x.io", {"shopbotly_tags": "old;vip", "firstname": "Ann"})
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    try:
        await hs.apply(write("a@x.io", CommandOp.ADD_TAGS, tags=["vip", "new"]), partition=0)
        await hs.apply(write("a@x.io", CommandOp.ADD_TAGS, i=1, tags=["later"]), partition=0)
        await hs.apply(write("b@x.io", fields={"firstname": "Bo"}), partition=0)
    finally:
        await hs.aclose()
    assert fake.tags("a@x.io") == ["old", "vip", "new", "later"]
    assert fake.contacts["a@x.io"].properties["firstname"] == "Ann"  # the full property set went back
    assert fake.paths["/crm/v3/objects/contacts/batch/read"] == 1  # read once, then from the cache
    assert "b@x.io" in fake.contacts  # no tags: no read needed


async def test_forgotten_partitions_are_read_again(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    try:
        await hs.apply(write("a@x.io", CommandOp.ADD_TAGS, tags=["one"]), partition=3)
        fake.contacts["a@x.io"].properties["shopbotly_tags"] = "one;other-replica"
        hs.forget_partitions({3})
        await hs.apply(write("a@x.io", CommandOp.ADD_TAGS, i=1, tags=["two"]), partition=3)
    finally:
        await hs.aclose()
    assert fake.tags("a@x.io") == ["one", "other-replica", "two"]


async def test_notes_and_tickets_are_associated_to_the_contact(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    try:
        note = await hs.apply(write("n@x.io", CommandOp.ADD_NOTE, body="called back"), partition=0)
        ticket = await hs.apply(
            write(
                "n@x.io",
                CommandOp.CREATE_TICKET,
                i=1,
                body="Where is my order?\nIt is late.",
                fields={"priority": "HIGH", "shopbotly_conversation_id": "c-9"},
            ),
            partition=0,
        )
        order = await hs.apply(
            write("n@x.io", CommandOp.ATTACH_ORDER, i=2, fields={"order_id": "1001", "total": "9.50"}),
            partition=0,
        )
    finally:
        await hs.aclose()
    contact = fake.contacts["n@x.io"]
    assert note["contact"] == ticket["contact"] == contact.id and "ticket" in ticket
    assert contact.notes == ["called back", "Order — order_id: 1001, total: 9.50"] and "note" in order
    [t] = contact.tickets
    assert t["subject"] == "Where is my order?" and t["hs_ticket_priority"] == "HIGH"
    assert t["hs_pipeline"] == "0" and "shopbotly_conversation_id: c-9" in t["content"]
    assert t["id"] == ticket["ticket"]


async def test_401_refreshes_the_token_once(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SB_TEST_HS_REFRESH", "rt-1")
    fake = FakeHubSpot(tokens=set())
    fake.oauth_refresh_tokens = {"rt-1": "ok"}
    auth = {
        "kind": "oauth2_refresh_token",
        "token_url": "https://api.hubapi.test/oauth/v1/token",
        "client_id": "app",
        "refresh_token": {"env": "SB_TEST_HS_REFRESH"},
    }
    rt = make_runtime(hs_config(auth=auth), fake.transport)
    hs = HubSpotConnector(rt)
    try:
        await hs.apply(write("a@x.io", fields={"firstname": "A"}), partition=0)
        fake.tokens.clear()  # the token is revoked: one refresh, then it works again
        await hs.apply(write("a@x.io", i=1, fields={"firstname": "B"}), partition=0)
        assert fake.minted == 2 and fake.contacts["a@x.io"].properties["firstname"] == "B"
        fake.oauth_refresh_tokens.clear()  # now the refresh itself is refused
        fake.tokens.clear()
        with pytest.raises(AuthError):
            await hs.apply(write("a@x.io", i=2, fields={"firstname": "C"}), partition=0)
    finally:
        await hs.aclose()


async def test_ten_secondly_429_throttles_the_connection(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    rt = make_runtime(hs_config(), fake.transport)
    hs = HubSpotConnector(rt)
    fake.storm_until = float("inf")
    try:
        with pytest.raises(ThrottledError):
            await hs.apply(write("a@x.io", fields={"firstname": "A"}), partition=0)
    finally:
        await hs.aclose()
    assert rt.limit.reserve(rt._clock()) > 0.5  # blocked for the Retry-After (1 s)
    assert rt.circuit_state is CircuitState.CLOSED  # throttling is not an outage


async def test_daily_limit_opens_the_circuit(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    fake.daily_exhausted = True
    rt = make_runtime(hs_config(), fake.transport)
    hs = HubSpotConnector(rt)
    try:
        with pytest.raises(OutageError):
            await hs.apply(write("a@x.io", fields={"firstname": "A"}), partition=0)
    finally:
        await hs.aclose()
    assert rt.circuit_state is CircuitState.OPEN


async def test_quota_headers_lower_the_rate(make_runtime: Any) -> None:
    fake = FakeHubSpot(limit=40, interval_s=10)
    rt = make_runtime(hs_config(rate_limit={"requests": 100, "per_seconds": 10}), fake.transport)
    hs = HubSpotConnector(rt)
    try:
        await hs.apply(write("a@x.io", fields={"firstname": "A"}), partition=0)
    finally:
        await hs.aclose()
    assert rt.limit.requests_per_second < 4.0  # learned 40 / 10 s from the headers


async def test_transport_errors_count_towards_the_circuit(make_runtime: Any) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    rt = make_runtime(hs_config(), httpx.MockTransport(slow))
    hs = HubSpotConnector(rt)
    try:
        for i in range(3):
            with pytest.raises(RetryableError, match="ReadTimeout"):
                await hs.apply(write("a@x.io", i=i, fields={"firstname": "A"}), partition=0)
    finally:
        await hs.aclose()
    assert rt.circuit_state is CircuitState.OPEN


async def test_a_refused_connection_is_an_outage_at_once(make_runtime: Any) -> None:
    """Nothing listens: the destination is down, so the circuit opens on the first refusal and the write
    is an outage (no attempt spent, never dead-lettered for it)."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    rt = make_runtime(hs_config(), httpx.MockTransport(down))
    hs = HubSpotConnector(rt)
    try:
        with pytest.raises(OutageError, match="cannot connect"):
            await hs.apply(write("a@x.io", fields={"firstname": "A"}), partition=0)
    finally:
        await hs.aclose()
    assert rt.circuit_state is CircuitState.OPEN


async def test_a_repeated_note_or_ticket_command_updates_the_record_it_created(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    note_write = write("r@x.io", CommandOp.ADD_NOTE, body="called back")
    ticket_write = write("r@x.io", CommandOp.CREATE_TICKET, i=1, body="Where is my order?")
    try:
        first = [await hs.apply(w, partition=0) for w in (note_write, ticket_write)]
        # A writer killed before its ledger ack applies the same commands again after the restart.
        second = [await hs.apply(w, partition=0) for w in (note_write, ticket_write)]
    finally:
        await hs.aclose()
    assert first == second
    contact = fake.contacts["r@x.io"]
    assert contact.notes == ["called back"] and [t["subject"] for t in contact.tickets] == [
        "Where is my order?"
    ]
    assert fake.engagement_creates == 2 and fake.engagement_updates == 2
    keys = {r["properties"]["shopbotly_command_id"] for r in fake.engagements.values()}
    assert keys == {"cmd-r@x.io-0", "cmd-r@x.io-1"}
    assert all(r["contact"] == contact.id for r in fake.engagements.values())


async def test_a_failed_association_converges_on_retry(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    fails = {"left": 1}
    inner = fake.handle

    async def flaky(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and fails["left"]:
            fails["left"] -= 1
            return httpx.Response(502)
        return await inner(request)

    hs = HubSpotConnector(make_runtime(hs_config(), httpx.MockTransport(flaky)))
    note_write = write("a@x.io", CommandOp.ADD_NOTE, body="hello")
    try:
        with pytest.raises(RetryableError):
            await hs.apply(note_write, partition=0)
        assert fake.contacts["a@x.io"].notes == []  # upserted but not associated yet
        ids = await hs.apply(note_write, partition=0)
    finally:
        await hs.aclose()
    assert fake.contacts["a@x.io"].notes == ["hello"] and fake.engagement_creates == 1
    assert list(fake.engagements) == [("notes", ids["note"])]


async def test_a_portal_without_the_command_id_property_is_a_permanent_error(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    fake.unique_properties = set()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    try:
        with pytest.raises(PermanentError) as refused:
            await hs.apply(write("p@x.io", CommandOp.ADD_NOTE, body="hi"), partition=0)
    finally:
        await hs.aclose()
    message = str(refused.value)
    assert "'shopbotly_command_id'" in message and "shopbotly connections setup --apply" in message
    assert "hasUniqueValue" in message and fake.engagements == {}


async def test_the_command_id_property_is_configurable(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    fake.unique_properties = {"acme_cmd"}
    hs = HubSpotConnector(
        make_runtime(hs_config(options={"command_id_property": "acme_cmd"}), fake.transport)
    )
    try:
        await hs.apply(write("c@x.io", CommandOp.ADD_NOTE, body="hi"), partition=0)
    finally:
        await hs.aclose()
    [record] = fake.engagements.values()
    assert record["properties"]["acme_cmd"] == "cmd-c@x.io-0"


async def test_notes_of_many_identities_share_upsert_requests(make_runtime: Any) -> None:
    fake = FakeHubSpot()
    hs = HubSpotConnector(make_runtime(hs_config(), fake.transport))
    emails = [f"m{i}@x.io" for i in range(20)]
    try:
        for email in emails:  # contacts first, so the notes below only upsert and associate
            await hs.apply(write(email), partition=0)
        results = await asyncio.gather(
            *(hs.apply(write(e, CommandOp.ADD_NOTE, i=1, body=f"note {e}"), partition=0) for e in emails)
        )
    finally:
        await hs.aclose()
    assert sum(fake.engagement_batch_sizes) == 20 and len(fake.engagement_batch_sizes) < 20
    assert fake.paths["/crm/v3/objects/notes/batch/upsert"] == len(fake.engagement_batch_sizes)
    for email, ids in zip(emails, results, strict=True):
        assert fake.contacts[email].notes == [f"note {email}"]
        assert fake.engagements[("notes", ids["note"])]["contact"] == fake.contacts[email].id
