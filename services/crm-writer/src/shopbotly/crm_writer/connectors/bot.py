"""Notifications to a tenant's bot, signed with Standard Webhooks (the reserved connection `bot`).

`POST <bot_webhook.url>` with `webhook-id` = command id (the bot deduplicates on it), `webhook-timestamp`
and `webhook-signature` (v1, HMAC-SHA256 by the `standardwebhooks` library, signed afresh on every
attempt so a retry is never stale), and the body `{type, timestamp, data: {...fields, identity, body}}`.
Any 2xx is delivered; 408/409/429/5xx and timeouts retry; other answers are permanent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from shopbotly.common.config import BotWebhookConfig
from shopbotly.common.config.crm_kinds.bot_webhook import BotWebhookOptions
from shopbotly.common.errors import PermanentError
from shopbotly.common.events import CommandOp
from shopbotly.crm_writer.connectors.base import Connector, unsupported
from shopbotly.crm_writer.connectors.generic import classify_generic
from shopbotly.crm_writer.domain import Write, WriteKind
from shopbotly.crm_writer.runtime import ConnectionRuntime

__all__ = ["BotConnector", "notification_body"]

_SUCCESS = frozenset(range(200, 300))


def notification_body(write: Write, *, default_type: str) -> bytes:
    """The JSON body of one notification (stable across retries: the signature covers it)."""
    cmd = write.commands[-1]
    when = cmd.received_at or cmd.created_at
    data = {**write.fields, "identity": write.identity, "body": write.body}
    payload = {
        "type": cmd.event_type or default_type,
        "timestamp": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return orjson.dumps(payload)


class BotConnector(Connector[BotWebhookOptions], kind="bot_webhook", schema=None):
    max_merge = 1  # every notification is delivered on its own

    def __init__(self, runtime: ConnectionRuntime, webhook: BotWebhookConfig) -> None:
        super().__init__(runtime)
        self._webhook = webhook
        self._timeout = runtime.config.timeout_s
        self._signer: tuple[str, Webhook] | None = None

    @classmethod
    def create(
        cls, runtime: ConnectionRuntime, *, bot_webhook: BotWebhookConfig | None = None
    ) -> BotConnector:
        if bot_webhook is None:
            raise PermanentError(f"connection {runtime.name} is a bot webhook but its tenant has none")
        return cls(runtime, bot_webhook)

    def kind_of(self, op: CommandOp) -> WriteKind:
        if op is not CommandOp.NOTIFY_BOT:
            raise unsupported("bot webhook", op)
        return WriteKind.NOTIFY

    def _sign(self, msg_id: str, when: datetime, body: str) -> str:
        try:
            secret = self._webhook.secret.resolve()
        except LookupError as exc:
            raise PermanentError(f"bot webhook secret unavailable: {exc}") from None
        if self._signer is None or self._signer[0] != secret:
            try:
                self._signer = (secret, Webhook(secret))
            except Exception as exc:  # the library raises bare errors for malformed secrets
                raise PermanentError(
                    "bot webhook secret is not a Standard Webhooks secret (whsec_<base64>): "
                    f"{type(exc).__name__}"
                ) from None
        return self._signer[1].sign(msg_id, when, body)

    async def apply(self, write: Write, *, partition: int) -> dict[str, str]:
        body = notification_body(write, default_type=self.options.default_type)
        msg_id = write.key
        url = self._webhook.url

        def build(headers: dict[str, str]) -> httpx.Request:
            now = datetime.now(UTC)
            signature = self._sign(msg_id, now, body.decode())
            return self.runtime.client.build_request(
                "POST",
                url,
                content=body,
                headers={
                    **headers,
                    "Content-Type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signature,
                },
                timeout=self._timeout,
            )

        _, verdict = await self.runtime.call(
            build, op="notify", classify=lambda r: classify_generic(r, _SUCCESS)
        )
        if not verdict.ok:
            raise verdict.error()
        return {"webhook_id": msg_id}
