"""schemathesis against the app's own OpenAPI, in-process over ASGI with the producer on the real broker:
no generated request gets a 500, and every answer matches the documented status codes and schemas.

Generated path parameters rarely name a configured source, so each webhook case is also sent to a real
source with a valid signature over the generated body, and each lead case with a valid API key: that is
what drives arbitrary JSON through parsing, extraction and publishing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shopbotly.ingest.app import create_app
from shopbotly.ingest.edge import IngestRuntime
from shopbotly.ingest.settings import Settings
from shopbotly.testkit.ingest import API_KEY, demo_config, signed_headers

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# The app's shutdown is bounded by its grace time; the test allows that and a margin, never more.
SHUTDOWN_GRACE_S = 5.0


@pytest.fixture
def ingest_app(settings: Settings) -> Iterator[FastAPI]:
    # A source whose event type is a constant, so any generated JSON can be published.
    fuzz = {
        **demo_config().tenants["acme"].sources["generic_hmac"].model_dump(mode="json", exclude_none=True)
    }
    fuzz["event_type"] = "'fuzz.event'"
    app = create_app(
        settings.model_copy(update={"shutdown_grace_s": SHUTDOWN_GRACE_S}), demo_config(fuzz=fuzz)
    )
    yield app
    # schemathesis keeps the app's lifespan (and so the producer) running on its own loop; end it, in a
    # thread so that a shutdown that does not end fails this test instead of hanging the suite.
    stopper = threading.Thread(target=asgi.shutdown_lifespans, name="fuzz-lifespan-shutdown", daemon=True)
    stopper.start()
    stopper.join(SHUTDOWN_GRACE_S + 10)
    assert not stopper.is_alive(), f"the app's lifespan shutdown took more than {SHUTDOWN_GRACE_S + 10:g}s"


@pytest.fixture
def api_schema(ingest_app: FastAPI) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", ingest_app)  # starts the lifespan
    runtime: IngestRuntime = ingest_app.state.runtime
    deadline = time.monotonic() + 30
    # The producer and the Idempotency-Key records' follower live on schemathesis' loop thread.
    while not (runtime.publisher.available and runtime.intake.idempotency.ready):
        assert time.monotonic() < deadline, "the producer or the Idempotency-Key records did not become ready"
        time.sleep(0.05)
    return schema


def _json_bytes(body: Any) -> bytes | None:
    try:
        return orjson.dumps(body)
    except TypeError:
        return None


WEBHOOK = "/v1/webhooks/{tenant}/{source}"
LEADS = "/api/v1/leads"


# schemathesis' own pytest integration (`from_fixture`) does not run on this pytest, so the test drives
# its Hypothesis strategies directly: valid (positive) and invalid (negative) requests per operation.
@pytest.mark.parametrize("path", [WEBHOOK, LEADS])
# schemathesis' negative strategies call `random` inside Hypothesis strategies; that is theirs to fix.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_no_server_errors_and_answers_match_the_spec(api_schema: Any, path: str) -> None:
    operation = api_schema[path]["POST"]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )
    statuses: set[int] = set()

    @given(case=cases)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        statuses.add(case.call_and_validate(checks=CHECKS).status_code)
        raw = _json_bytes(case.body) if case.body is not None else None
        if raw is None:
            return
        if path == WEBHOOK:
            case.path_parameters = {"tenant": "acme", "source": "fuzz"}
            headers = signed_headers("generic_hmac", raw, msg_id="fuzz")
        else:
            headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
        response = case.call(headers=headers, data=raw)
        statuses.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
    # Both the refusal paths and the publish path were reached.
    assert statuses & {200, 202} and statuses & {400, 401, 404, 422}, statuses
