"""The console's pages: sign-in, event search, an event's timeline, dead letters and their redrive."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

import httpx
import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shopbotly.cli._kafka_io import Bound, BoundKind, RecordFilter, TopicNotFoundError
from shopbotly.cli.connections_status import merge_status
from shopbotly.cli.dlq_cmd import Decision, Selection, run_redrive
from shopbotly.cli.map_cmd import dry_run
from shopbotly.cli.mapping_diff import render_text
from shopbotly.cli.replay_diff import run_mapping_diff
from shopbotly.common.config import ShopbotlyConfig, load_config, parse_config_text
from shopbotly.common.errors import ConfigError
from shopbotly.common.logging import get_logger
from shopbotly.common.sources import LEAD_SOURCE, SOURCES
from shopbotly.common.topics import Topic
from shopbotly.console import metrics
from shopbotly.console.auth import COOKIE, Operator, Sessions, admin_operator, current_operator
from shopbotly.console.readmodel import DeadLetterView, EventQuery, Outcome, ReadModel
from shopbotly.console.replicas import expand
from shopbotly.mapper.domain import Mappings

__all__ = ["router"]

_log = get_logger(__name__)
router = APIRouter(default_response_class=HTMLResponse)
CurrentOperator = Annotated[Operator, Depends(current_operator)]
AdminOperator = Annotated[Operator, Depends(admin_operator)]


def _page(request: Request, name: str, operator: Operator | None, **context: Any) -> Response:
    sessions: Sessions = request.app.state.sessions
    context |= {"operator": operator, "csrf": sessions.csrf(operator) if operator else ""}
    fragment = request.query_params.get("fragment") == "1"
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(
        request, name, context | {"fragment": fragment}, headers={"Cache-Control": "no-store"}
    )
    return response


MAX_FORM_BYTES = 1 << 20  # a pasted event or mapping file; anything larger is refused (413)


async def _form(request: Request) -> dict[str, list[str]]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _first(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


def _mappings(request: Request, pasted: str) -> tuple[Mappings, str]:
    """The mapping to try: a pasted config file (YAML, as `--mapping FILE` takes), else the console's own.
    Raises ConfigError or ValueError with what is wrong."""
    if pasted.strip():
        return Mappings.from_config(parse_config_text(pasted, origin="pasted mapping")), "pasted mapping"
    path = request.app.state.settings.config
    return Mappings.from_config(load_config(path)), str(path)


def _model(request: Request) -> ReadModel:
    model: ReadModel = request.app.state.model
    return model


def _time(text: str | None) -> int | None:
    """A `datetime-local` value (UTC) as epoch milliseconds."""
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        raise HTTPException(422, f"not a date and time: {text!r} (expected YYYY-MM-DDTHH:MM, UTC)") from None


# --- sign-in ------------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only paths of this console: never an absolute URL someone put in a link.
    return target if target and target.startswith("/") and not target.startswith("//") else "/events"


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _page(request, "login.html", None, next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    sessions: Sessions = request.app.state.sessions
    token = sessions.sign_in((form.get("key") or [""])[0])
    target = _safe_next((form.get("next") or [""])[0])
    metrics.SIGN_INS.labels("refused" if token is None else "accepted").inc()
    if token is None:
        _log.warning("sign-in refused", client=request.client.host if request.client else None)
        response = _page(request, "login.html", None, next=target, error="That key is not an operator key.")
        response.status_code = 401
        return response
    response = RedirectResponse(target, status_code=303)
    secure = request.app.state.settings.environment == "production"
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/events", status_code=303)


# --- events ---------------------------------------------------------------------------------------------


@router.get("/events")
async def events(
    request: Request,
    operator: CurrentOperator,
    tenant: str = "",
    source: str = "",
    type: str = "",
    email: str = "",
    since: str = "",
    until: str = "",
    outcome: str = "",
) -> Response:
    model = _model(request)
    # An empty select sends `outcome=`: any outcome.
    if outcome and outcome not in set(Outcome):
        raise HTTPException(422, f"unknown outcome {outcome!r}: one of {', '.join(Outcome)}")
    query = EventQuery(
        tenants=operator.tenants,
        tenant=tenant or None,
        source=source or None,
        type=type or None,
        email=email or None,
        since_ms=_time(since),
        until_ms=_time(until),
        outcome=Outcome(outcome) if outcome else None,
    )
    hits = model.search(query)
    tenants = [t for t in model.tenants_seen() if operator.sees(t)]
    return _page(
        request,
        "events.html",
        operator,
        events=[(e, model.outcome(e)) for e in hits],
        filters={
            "tenant": tenant,
            "source": source,
            "type": type,
            "email": email,
            "since": since,
            "until": until,
            "outcome": outcome,
        },
        tenants=tenants,
        outcomes=list(Outcome),
        caught_up=request.app.state.health.ready()[0],
    )


@router.get("/events/view")
async def event_timeline(request: Request, operator: CurrentOperator, tenant: str, id: str) -> Response:
    model = _model(request)
    event = model.event(tenant, id) if operator.sees(tenant) else None
    if event is None:
        raise HTTPException(404, f"no event {id!r} of tenant {tenant!r} in the console's window")
    commands = model.commands_of(event)
    letters = {p: model.dead_letters[p] for c in commands for p in c.dead_letters if p in model}
    letters |= {p: model.dead_letters[p] for p in event.dead_letters if p in model}
    return _page(
        request,
        "event.html",
        operator,
        verified=_verified_by(request, event.tenant, event.source),
        rules=sorted({c.rule_id for c in commands}),
        event=event,
        outcome=model.outcome(event),
        commands=commands,
        letters=letters,
        letter_state=model.letter_state,
        command_outcome=model.command_outcome,
    )


def _verified_by(request: Request, tenant: str, source: str) -> str:
    """How ingest authenticated the event's delivery: its source kind's scheme, from the console's config
    (ingest publishes only what passed it). Empty when the config does not name the source (any more)."""
    if source == LEAD_SOURCE:
        return "the tenant's API key (Sync Lead API)"
    config = _config(request)
    tenant_config = config.tenants.get(tenant) if config is not None else None
    found = tenant_config.sources.get(source) if tenant_config is not None else None
    if found is None:
        return ""
    return f"{found.kind}: {SOURCES[found.kind].scheme}" if found.kind in SOURCES else found.kind


def _config(request: Request) -> ShopbotlyConfig | None:
    """The console's config file, read once (None when it cannot be: the timeline then says nothing)."""
    state = request.app.state
    if not hasattr(state, "config_once"):
        try:
            state.config_once = load_config(state.settings.config)
        except (ConfigError, ValueError) as exc:
            _log.warning(
                "the config cannot be loaded; the timeline shows no verification scheme", error=str(exc)
            )
            state.config_once = None
    config: ShopbotlyConfig | None = state.config_once
    return config


# --- dead letters ---------------------------------------------------------------------------------------


@router.get("/dead-letters")
async def dead_letters(
    request: Request,
    operator: CurrentOperator,
    tenant: str = "",
    topic: str = "",
    error_class: str = "",
    state: str = "",
) -> Response:
    model = _model(request)
    letters = model.letters(
        tenants=operator.tenants,
        tenant=tenant or None,
        topic=topic or None,
        error_class=error_class or None,
        state=state or None,
    )
    open_matching = (
        _filtered(model, operator, {"tenant": tenant, "topic": topic, "error_class": error_class})
        if operator.admin and state in ("", "open")
        else []
    )
    return _page(
        request,
        "dead_letters.html",
        operator,
        letters=[(d, model.letter_state(d)) for d in letters],
        open_matching=len(open_matching),
        filters={"tenant": tenant, "topic": topic, "error_class": error_class, "state": state},
        topics=sorted({d.place[0] for d in model.dead_letters.values()}),
        tenants=[t for t in model.tenants_seen() if operator.sees(t)],
    )


FILTERS = ("tenant", "topic", "error_class")
_REDRIVE_LABELS = {
    Decision.REDRIVE: "redriven",
    Decision.SKIP_APPLIED: "skipped_applied",
    Decision.SKIP_REDRIVEN: "skipped_redriven",
    Decision.FAIL: "failed",
}
CONFIRM_SHOWN = 100  # dead letters listed on a confirmation page; the rest are counted


def _filtered(
    model: ReadModel, operator: Operator, filters: dict[str, str], until_ms: int | None = None
) -> list[DeadLetterView]:
    """Every open dead letter the filters match, in the operator's tenants (no page limit)."""
    return model.letters(
        tenants=operator.tenants,
        tenant=filters.get("tenant") or None,
        topic=filters.get("topic") or None,
        error_class=filters.get("error_class") or None,
        state="open",
        limit=None,
        until_ms=until_ms,
    )


def _parse_selected(values: list[str]) -> list[tuple[str, int, int]]:
    chosen: list[tuple[str, int, int]] = []
    for value in values:
        topic, _, rest = value.rpartition("|")
        topic, _, partition = topic.rpartition("|")
        if not (topic and partition.isdigit() and rest.isdigit()):
            raise HTTPException(422, f"not a dead letter: {value!r} (expected topic|partition|offset)")
        chosen.append((topic, int(partition), int(rest)))
    return chosen


@router.post("/dead-letters/redrive")
async def redrive(request: Request, operator: AdminOperator) -> Response:
    """Without `confirm`: a confirmation page. With it: the CLI's own ledger-aware redrive, per DLQ topic."""
    form = await _form(request)
    sessions: Sessions = request.app.state.sessions
    sessions.check_csrf(operator, (form.get("csrf") or [""])[0])
    model = _model(request)
    filters: dict[str, str] | None = None
    until_ms: int | None = None
    if (form.get("filtered") or [""])[0] == "yes":
        # Every open dead letter matching the filters. The confirmation fixes the set by time: letters read
        # after it was shown are not redriven by confirming it.
        filters = {name: (form.get(name) or [""])[0] for name in FILTERS}
        until_text = (form.get("until_ms") or [""])[0]
        until_ms = int(until_text) if until_text.isdigit() else None
        matching = _filtered(model, operator, filters, until_ms)
        if until_ms is None:
            until_ms = max((d.timestamp_ms for d in matching), default=0)
        chosen = [d.place for d in matching]
    else:
        chosen = _parse_selected(form.get("sel", []))
    letters = [model.dead_letters.get(p) for p in chosen]
    if not chosen:
        raise HTTPException(422, "select at least one dead letter to redrive (or a filter that matches some)")
    for place, letter in zip(chosen, letters, strict=True):
        if letter is None or not operator.sees(letter.tenant):
            raise HTTPException(404, f"no dead letter at {place[0]} {place[1]}:{place[2]} for you to redrive")
    if (form.get("confirm") or [""])[0] != "yes":
        return _page(
            request,
            "redrive_confirm.html",
            operator,
            letters=letters,
            filters=filters,
            until_ms=until_ms,
            shown=CONFIRM_SHOWN,
        )
    by_topic: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for topic, partition, offset in chosen:
        by_topic[topic].append((partition, offset))
    reports = []
    for topic, places in sorted(by_topic.items()):
        report = await run_redrive(
            request.app.state.settings.kafka, topic=topic, selection=Selection(offsets=tuple(places))
        )
        _log.info(
            "redrive from the console",
            operator=operator.name,
            topic=topic,
            redriven=report.redriven,
            failed=report.failed,
        )
        reports.append(report)
        for decision, label in _REDRIVE_LABELS.items():
            count = report.failed if decision is Decision.FAIL else report.count(decision)
            metrics.REDRIVES.labels(label).inc(count)
    return _page(request, "redrive_done.html", operator, reports=reports, Decision=Decision)


# --- connections ----------------------------------------------------------------------------------------


async def _writer_rows(request: Request, url: str) -> list[dict[str, Any]]:
    client: httpx.AsyncClient | None = getattr(request.app.state, "writers", None)
    if client is None:  # served without its lifespan (tests)
        async with httpx.AsyncClient(transport=request.app.state.writer_transport, timeout=3.0) as own:
            answer = await own.get(f"{url.rstrip('/')}/connections")
    else:
        answer = await client.get(f"{url.rstrip('/')}/connections")
    answer.raise_for_status()
    return [dict(r) for r in answer.json().get("connections", [])]


@router.get("/connections")
async def connections(request: Request, operator: CurrentOperator) -> Response:
    """Each connection over every crm-writer replica, merged like `shopbotly connections status`."""
    urls, unreachable = await expand(
        request.app.state.settings.console_writer_urls, request.app.state.resolver
    )
    replicas: list[list[dict[str, Any]]] = []
    for url in urls:
        try:
            replicas.append(await _writer_rows(request, url))
        except (httpx.HTTPError, ValueError) as exc:
            unreachable.append(f"{url}: {type(exc).__name__}")
    # Rows are labelled `<tenant>:<connection>` by crm-writer.
    rows = [r for r in merge_status(replicas) if operator.sees(str(r["connection"]).partition(":")[0])]
    return _page(
        request,
        "connections.html",
        operator,
        rows=rows,
        replicas=len(replicas),
        urls=len(urls),
        unreachable=unreachable,
    )


# --- mapping playground ---------------------------------------------------------------------------------


def _playground(request: Request, operator: Operator, text: str, **context: Any) -> Response:
    return _page(
        request,
        "playground.html",
        operator,
        text=text,
        **({"report": None, "error": None, "mapping": "", "label": ""} | context),
    )


@router.get("/playground")
async def playground(request: Request, operator: CurrentOperator, tenant: str = "", id: str = "") -> Response:
    """A raw event to try: the one named by `tenant` and `id` (from its timeline), or one to paste."""
    event = _model(request).event(tenant, id) if tenant and id and operator.sees(tenant) else None
    text = orjson.dumps(event.envelope, option=orjson.OPT_INDENT_2).decode() if event else ""
    return _playground(request, operator, text)


@router.post("/playground")
async def playground_run(request: Request, operator: CurrentOperator) -> Response:
    """The commands the mapper's own code would make of the event, with the console's config file as it is
    now (edit the file and run again to try a mapping change). Nothing is published."""
    form = await _form(request)
    text, pasted = _first(form, "event"), _first(form, "mapping")
    try:
        envelope = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _playground(request, operator, text, mapping=pasted, error=f"not JSON: {exc}")
    if not isinstance(envelope, dict) or "specversion" not in envelope:
        return _playground(
            request, operator, text, mapping=pasted, error="not a raw-event envelope (no `specversion`)"
        )
    tenant = str(envelope.get("tenant", ""))
    if not operator.sees(tenant):
        return _playground(
            request, operator, text, mapping=pasted, error=f"tenant {tenant!r} is not one of yours"
        )
    try:
        mappings, label = _mappings(request, pasted)
    except (ConfigError, ValueError) as exc:
        return _playground(
            request, operator, text, mapping=pasted, error=f"the mapping cannot be loaded: {exc}"
        )
    _, report = dry_run(envelope, mappings)
    return _playground(
        request,
        operator,
        text,
        mapping=pasted,
        label=label,
        report=report,
        pretty=orjson.dumps(report, option=orjson.OPT_INDENT_2).decode(),
    )


# --- replay diff ----------------------------------------------------------------------------------------

MAX_DIFF_RANGE_MS = 7 * 24 * 3600 * 1000  # a week of raw events per diff; narrow it for more
_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _replay_page(request: Request, operator: Operator, **context: Any) -> Response:
    tenants = [t for t in _model(request).tenants_seen() if operator.sees(t)]
    defaults: dict[str, Any] = {"form": {}, "lines": None, "report": None, "error": None, "tenants": tenants}
    return _page(request, "replay_diff.html", operator, **(defaults | context))


@router.get("/replay-diff")
async def replay_diff_form(request: Request, operator: CurrentOperator) -> Response:
    return _replay_page(request, operator)


@router.post("/replay-diff")
async def replay_diff(request: Request, operator: CurrentOperator) -> Response:
    """`shopbotly replay --dry-run --mapping`: the commands a tenant's raw events of a time range would become
    under a mapping (pasted, or the console's own), against the commands produced for them. Reads only."""
    form = await _form(request)
    sessions: Sessions = request.app.state.sessions
    sessions.check_csrf(operator, _first(form, "csrf"))
    values = {name: _first(form, name) for name in ("tenant", "since", "until", "mapping")}

    def refuse(error: str) -> Response:
        metrics.REPLAY_DIFFS.labels("refused").inc()
        return _replay_page(request, operator, form=values, error=error)

    tenant = values["tenant"]
    if not _TENANT.fullmatch(tenant) or not operator.sees(tenant):
        return refuse(f"tenant {tenant!r} is not one of yours" if tenant else "choose a tenant")
    try:
        since, until = _time(values["since"]), _time(values["until"])
    except HTTPException as exc:
        return refuse(str(exc.detail))
    if since is None or until is None or until <= since:
        return refuse("give a time range: from, then a later until (UTC)")
    if until - since > MAX_DIFF_RANGE_MS:
        return refuse("the range is longer than 7 days: narrow it (or use `shopbotly replay --dry-run`)")
    try:
        mappings, label = _mappings(request, values["mapping"])
    except (ConfigError, ValueError) as exc:
        return refuse(f"the mapping cannot be loaded: {exc}")
    kafka = request.app.state.settings.kafka
    try:
        report = await run_mapping_diff(
            kafka,
            mappings,
            config_label=label,
            topic=kafka.topic(Topic.RAW_EVENTS),
            start=Bound(BoundKind.TIME, since),
            stop=Bound(BoundKind.TIME, until),
            # The tenant header ingest stamps on every raw event; a JSON literal (the name is [A-Za-z0-9_.-]).
            record_filter=RecordFilter.compile(f"headers.tenant == `{orjson.dumps(tenant).decode()}`"),
        )
    except (TopicNotFoundError, KafkaError, OSError) as exc:
        return refuse(f"the topics cannot be read: {type(exc).__name__}: {exc}")
    _log.info(
        "replay diff from the console", operator=operator.name, tenant=tenant, events=len(report.events)
    )
    metrics.REPLAY_DIFFS.labels(("same", "differs", "incomplete")[report.exit_code]).inc()
    return _replay_page(
        request, operator, form=values, report=report, lines=render_text(report, show=DIFF_SHOWN)
    )


DIFF_SHOWN = 200  # events with differences listed on the page; the summary counts them all
