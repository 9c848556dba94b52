"""The running end-to-end stack as the tests talk to it: signed platform webhooks in, the CRM emulator's
state, the lookup API and the topics out."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from shopbotly.cli.demo_cmd import BotReceiver, sign_shopify, sign_standard_webhook
from shopbotly.common.topics import Topic
from tests.stack import Message, Stack, StackSecrets, read_topic

__all__ = ["E2EStack", "iso_now", "unique"]


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def iso_now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class E2EStack:
    stack: Stack
    bot: BotReceiver
    secrets: StackSecrets
    env: Mapping[str, str]
    bootstrap: str
    prefix: str
    ingest: httpx.Client
    reader: httpx.Client
    emulator: httpx.Client

    # --- in ----------------------------------------------------------------------------------------------

    def send_bot(self, event: dict[str, Any], *, secret: str | None = None) -> tuple[httpx.Response, str]:
        """POST a chatbot event to alpha's `bot` source, signed with the `standardwebhooks` library."""
        body = json.dumps(event).encode()
        headers = sign_standard_webhook(secret or self.secrets.bot_source, body)
        response = self.ingest.post("/v1/webhooks/alpha/bot", content=body, headers=headers)
        return response, headers["webhook-id"]

    def send_shopify(self, topic: str, order: dict[str, Any]) -> tuple[httpx.Response, str]:
        body = json.dumps(order).encode()
        headers = sign_shopify(self.secrets.shopify, body, topic)
        response = self.ingest.post("/v1/webhooks/alpha/shop", content=body, headers=headers)
        return response, headers["x-shopify-webhook-id"]

    def api_key(self, tenant: str = "alpha") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets.api_keys[tenant]}"}

    # --- out ---------------------------------------------------------------------------------------------

    def hubspot_state(self) -> dict[str, Any]:
        response = self.emulator.get("/_emulator/state", params={"system": "hubspot"})
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def contact(self, email: str) -> dict[str, Any] | None:
        record = self.hubspot_state().get("records", {}).get("hubspot", {}).get(email)
        return dict(record) if record else None

    def wait_contact(
        self, email: str, ready: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            record = self.contact(email)
            return record if record is not None and ready(record) else None

        return self.stack.poll(check, timeout=timeout, what=what)

    def lookup(self, path: str, tenant: str | None = "alpha") -> httpx.Response:
        return self.reader.get(path, headers=self.api_key(tenant) if tenant else {})

    def wait_lookup(
        self, path: str, ready: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            response = self.lookup(path)
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body if ready(body) else None

        return self.stack.poll(check, timeout=timeout, what=what)

    def topic(self, logical: Topic) -> list[Message]:
        return read_topic(self.bootstrap, f"{self.prefix}{logical.value}")

    def commands(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """CRM commands on crm-commands (the mapper's output) matching `predicate`."""
        found = []
        for message in self.topic(Topic.CRM_COMMANDS):
            value = json.loads(message.value or b"null")
            if isinstance(value, dict) and predicate(value):
                found.append(value)
        return found

    def dead_letters(self, identity: str) -> list[tuple[str, str]]:
        """(op, error.message) of every dead-lettered command for `identity`."""
        out = []
        for message in self.topic(Topic.CRM_COMMANDS_DLQ):
            value = json.loads(message.value or b"null")
            if isinstance(value, dict) and value.get("identity") == identity:
                out.append((str(value.get("op")), message.headers.get("error.message", "")))
        return out

    def elapsed_since(self, start: float) -> float:
        return round(time.time() - start, 4)
