"""Pure logic of the emulator: rate-limit windows, upsert semantics, fault decisions, tokens, ids, webhooks.

Nothing here does I/O or reads a clock: time comes in as arguments, so every rule is tested directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "DAY_S",
    "DailyQuota",
    "FaultDecision",
    "FaultPlan",
    "IdempotencyOutcome",
    "IssuedToken",
    "PropertyChange",
    "RateDecision",
    "RateLimitPolicy",
    "RateLimiter",
    "RollingWindow",
    "StoredObject",
    "Subscription",
    "System",
    "TokenRegistry",
    "TokenStatus",
    "decide_fault",
    "decide_idempotency",
    "event_payload",
    "fault_delay",
    "is_valid_email",
    "is_valid_salesforce_id",
    "iso_ms",
    "join_multi",
    "merge_properties",
    "normalize_email",
    "parse_timestamp",
    "request_fingerprint",
    "retry_delay_s",
    "salesforce_id",
    "salesforce_id_suffix",
    "split_multi",
    "subscription_for",
    "webhook_should_retry",
]

DAY_S = 86_400.0


class System(StrEnum):
    """The CRMs the emulator plays. Each has its own auth, limits, faults and error shapes."""

    HUBSPOT = "hubspot"
    SALESFORCE = "salesforce"
    GENERIC = "generic"


@dataclass(frozen=True)
class StoredObject:
    """One CRM record as the store keeps it: properties are strings, as every CRM here returns them."""

    system: System
    object_type: str
    object_id: str
    identity: str | None
    properties: dict[str, str]
    associations: tuple[str, ...]
    created_at: float
    updated_at: float
    updates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def iso_ms(ts: float) -> str:
    """HubSpot's timestamp format: ISO 8601, UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def parse_timestamp(value: str | int | float) -> float | None:
    """Epoch milliseconds (number or digits) or ISO 8601; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000
    text = value.strip()
    if text.isdigit():
        return int(text) / 1000
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# --------------------------------------------------------------------------------------------------
# Rate limits


@dataclass(frozen=True)
class RateLimitPolicy:
    """A short rolling window (HubSpot's TEN_SECONDLY_ROLLING) and a daily quota; either may be off."""

    max_requests: int | None = 100
    interval_ms: int = 10_000
    daily_limit: int | None = 250_000


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    exceeded: Literal["window", "daily"] | None
    window_limit: int | None
    window_remaining: int | None
    interval_ms: int
    daily_limit: int | None
    daily_remaining: int | None
    retry_after_s: float


class RollingWindow:
    """A sliding log: at most `limit` accepted requests in any interval of `interval_s`.

    Rejected requests are not logged, so a client that backs off is never locked out longer than the
    time the oldest accepted request needs to leave the window.
    """

    def __init__(self, limit: int, interval_s: float) -> None:
        self.limit = limit
        self.interval_s = interval_s
        self._hits: deque[float] = deque()
        # The most requests accepted in any one window so far (what a client's limiter achieved).
        self.peak = 0

    def _evict(self, now: float) -> None:
        horizon = now - self.interval_s
        while self._hits and self._hits[0] <= horizon:
            self._hits.popleft()

    def used(self, now: float) -> int:
        self._evict(now)
        return len(self._hits)

    def retry_after(self, now: float) -> float:
        self._evict(now)
        if len(self._hits) < self.limit:
            return 0.0
        # The request that frees a slot is the one `limit` places from the end.
        return max(0.0, self._hits[len(self._hits) - self.limit] + self.interval_s - now)

    def try_acquire(self, now: float) -> bool:
        self._evict(now)
        if len(self._hits) >= self.limit:
            return False
        self._hits.append(now)
        self.peak = max(self.peak, len(self._hits))
        return True


class DailyQuota:
    """A counter per UTC day (HubSpot resets at midnight in the account's zone; the emulator uses UTC)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._day = -1
        self._used = 0

    def _roll(self, now: float) -> None:
        day = int(now // DAY_S)
        if day != self._day:
            self._day, self._used = day, 0

    def used(self, now: float) -> int:
        self._roll(now)
        return self._used

    def try_acquire(self, now: float) -> bool:
        self._roll(now)
        if self._used >= self.limit:
            return False
        self._used += 1
        return True

    def seconds_to_reset(self, now: float) -> float:
        return (int(now // DAY_S) + 1) * DAY_S - now


class RateLimiter:
    """Both windows of one CRM account. A request consumes from both or from neither."""

    def __init__(self, policy: RateLimitPolicy) -> None:
        self.policy = policy
        self._window = (
            RollingWindow(policy.max_requests, policy.interval_ms / 1000) if policy.max_requests else None
        )
        self._daily = DailyQuota(policy.daily_limit) if policy.daily_limit else None

    def reconfigure(self, policy: RateLimitPolicy, now: float) -> None:
        """Change the limits and keep what was already counted, as a plan change on a live account would."""
        old_window, old_daily = self._window, self._daily
        self.policy = policy
        self._window = (
            RollingWindow(policy.max_requests, policy.interval_ms / 1000) if policy.max_requests else None
        )
        self._daily = DailyQuota(policy.daily_limit) if policy.daily_limit else None
        if self._window is not None and old_window is not None:
            old_window._evict(now)
            self._window._hits = deque(old_window._hits)
            self._window.peak = old_window.peak
        if self._daily is not None and old_daily is not None:
            self._daily._day, self._daily._used = old_daily._day, old_daily._used

    def _decision(
        self, allowed: bool, exceeded: Literal["window", "daily"] | None, now: float
    ) -> RateDecision:
        window_remaining = (
            None if self._window is None else max(0, self._window.limit - self._window.used(now))
        )
        daily_remaining = None if self._daily is None else max(0, self._daily.limit - self._daily.used(now))
        if exceeded == "window" and self._window is not None:
            retry = self._window.retry_after(now)
        elif exceeded == "daily" and self._daily is not None:
            retry = self._daily.seconds_to_reset(now)
        else:
            retry = 0.0
        return RateDecision(
            allowed=allowed,
            exceeded=exceeded,
            window_limit=self.policy.max_requests,
            window_remaining=window_remaining,
            interval_ms=self.policy.interval_ms,
            daily_limit=self.policy.daily_limit,
            daily_remaining=daily_remaining,
            retry_after_s=retry,
        )

    def acquire(self, now: float) -> RateDecision:
        # The daily quota is checked first: once it is gone, the short window does not matter.
        if self._daily is not None and self._daily.used(now) >= self._daily.limit:
            return self._decision(False, "daily", now)
        if self._window is not None and not self._window.try_acquire(now):
            return self._decision(False, "window", now)
        if self._daily is not None:
            self._daily.try_acquire(now)
        return self._decision(True, None, now)

    def peek(self, now: float) -> RateDecision:
        return self._decision(True, None, now)

    @property
    def window_peak(self) -> int | None:
        """The most requests accepted in one rolling window since start (None: no short window)."""
        return None if self._window is None else self._window.peak


# --------------------------------------------------------------------------------------------------
# Fault injection


@dataclass(frozen=True)
class FaultPlan:
    """Faults for one CRM. `error_rates` maps an HTTP status to its probability per request."""

    latency_ms: int = 0
    latency_jitter_ms: int = 0
    error_rates: Mapping[int, float] = field(default_factory=dict)
    # "after": the effect is applied and then the error is returned — the ambiguous failure that
    # makes retries dangerous without idempotency.
    error_phase: Literal["before", "after"] = "before"
    outage: bool = False
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        total = sum(self.error_rates.values())
        if any(p < 0 for p in self.error_rates.values()) or total > 1.0 + 1e-9:
            raise ValueError(f"error rates must be >= 0 and sum to at most 1, got {dict(self.error_rates)}")
        if any(not 400 <= s <= 599 for s in self.error_rates):
            raise ValueError(f"error statuses must be 4xx or 5xx, got {sorted(self.error_rates)}")


@dataclass(frozen=True)
class FaultDecision:
    status: int | None
    phase: Literal["before", "after"]


def fault_delay(plan: FaultPlan, jitter_roll: float) -> float:
    """Seconds added to a request; `jitter_roll` is uniform in [0, 1)."""
    return (plan.latency_ms + plan.latency_jitter_ms * jitter_roll) / 1000


def decide_fault(
    plan: FaultPlan, fail_next: Sequence[int], roll: float
) -> tuple[FaultDecision, tuple[int, ...]]:
    """The status injected into one request, if any, and what remains of the queue.

    `fail_next` (statuses queued by the admin API) wins over the random rates and is consumed in order;
    `roll` is uniform in [0, 1) so callers choose (and tests fix) the randomness.
    """
    if fail_next:
        return FaultDecision(fail_next[0], plan.error_phase), tuple(fail_next[1:])
    cumulative = 0.0
    for status in sorted(plan.error_rates):
        cumulative += plan.error_rates[status]
        if roll < cumulative:
            return FaultDecision(status, plan.error_phase), ()
    return FaultDecision(None, plan.error_phase), ()


# --------------------------------------------------------------------------------------------------
# Records: e-mail identities, property merges, multi-select values

# Deliberately simple, like the CRMs' own checks: one @, no spaces, a dotted domain with a 2+ letter TLD.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)


def normalize_email(value: str) -> str:
    """CRMs match e-mail identities case-insensitively and store them lower-cased."""
    return value.strip().lower()


def is_valid_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL.match(value.strip()) is not None and ".." not in value


def split_multi(value: str | None) -> list[str]:
    """HubSpot multi-select (and Salesforce multi-picklist) values are ';'-separated."""
    if not value:
        return []
    seen: dict[str, None] = {}
    for part in value.split(";"):
        item = part.strip()
        if item:
            seen.setdefault(item, None)
    return list(seen)


def join_multi(values: Iterable[str]) -> str:
    return ";".join(dict.fromkeys(v.strip() for v in values if v.strip()))


@dataclass(frozen=True)
class PropertyChange:
    name: str
    old: str | None
    new: str | None


def merge_properties(
    existing: Mapping[str, str], incoming: Mapping[str, str | None]
) -> tuple[dict[str, str], list[PropertyChange]]:
    """Upsert semantics shared by the three CRMs: provided values overwrite, absent ones are kept.

    An empty string or null clears a property (HubSpot: "values can be cleared by passing an empty
    string"). Multi-select values are replaced, not merged: a union is the client's job, as in HubSpot.
    """
    merged = dict(existing)
    changes: list[PropertyChange] = []
    for name, value in incoming.items():
        old = existing.get(name)
        if value is None or value == "":
            if name in merged:
                del merged[name]
                changes.append(PropertyChange(name, old, None))
            continue
        merged[name] = value
        if old != value:
            changes.append(PropertyChange(name, old, value))
    return merged, changes


# --------------------------------------------------------------------------------------------------
# Idempotency (generic REST CRM)


class IdempotencyOutcome(StrEnum):
    APPLY = "apply"
    REPLAY = "replay"
    MISMATCH = "mismatch"


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Same request → same fingerprint, whatever the JSON key order or whitespace."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.upper().encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def decide_idempotency(stored_fingerprint: str | None, fingerprint: str) -> IdempotencyOutcome:
    if stored_fingerprint is None:
        return IdempotencyOutcome.APPLY
    if stored_fingerprint == fingerprint:
        return IdempotencyOutcome.REPLAY
    return IdempotencyOutcome.MISMATCH


# --------------------------------------------------------------------------------------------------
# OAuth tokens (Salesforce and generic)


class TokenStatus(StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    system: System
    client_id: str
    subject: str | None
    issued_at: float
    expires_at: float
    epoch: int


class TokenRegistry:
    """Issued access tokens with a lifetime, and an epoch that the admin API bumps to revoke them all."""

    def __init__(self) -> None:
        self._tokens: dict[str, IssuedToken] = {}
        self._refresh: dict[str, tuple[System, str]] = {}
        self.epoch = 0

    def issue(
        self,
        system: System,
        client_id: str,
        subject: str | None,
        now: float,
        lifetime_s: float,
        prefix: str = "",
    ) -> IssuedToken:
        issued = IssuedToken(
            token=prefix + secrets.token_urlsafe(32),
            system=system,
            client_id=client_id,
            subject=subject,
            issued_at=now,
            expires_at=now + lifetime_s,
            epoch=self.epoch,
        )
        if len(self._tokens) >= 10_000:
            self.prune(now)  # a long benchmark mints many tokens; keep the registry small
        self._tokens[issued.token] = issued
        return issued

    def issue_refresh(self, system: System, client_id: str) -> str:
        token = "rt_" + secrets.token_urlsafe(32)
        self._refresh[token] = (system, client_id)
        return token

    def refresh_owner(self, token: str) -> tuple[System, str] | None:
        return self._refresh.get(token)

    def check(self, system: System, token: str, now: float) -> TokenStatus:
        issued = self._tokens.get(token)
        if issued is None or issued.system is not system:
            return TokenStatus.UNKNOWN
        if issued.epoch < self.epoch:
            return TokenStatus.REVOKED
        if now >= issued.expires_at:
            return TokenStatus.EXPIRED
        return TokenStatus.VALID

    def revoke_all(self) -> None:
        """Every access token issued so far stops working; refresh tokens survive, as on a session purge."""
        self.epoch += 1

    def prune(self, now: float) -> None:
        for token in [t for t, i in self._tokens.items() if i.expires_at <= now or i.epoch < self.epoch]:
            del self._tokens[token]


# --------------------------------------------------------------------------------------------------
# Salesforce record ids

_SF_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SF_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")


def salesforce_id_suffix(id15: str) -> str:
    """The 3-character case-safe suffix: one letter per 5-char chunk, a bit per upper-case letter."""
    if len(id15) != 15:
        raise ValueError(f"a Salesforce id has 15 characters before its suffix, got {len(id15)}")
    out = []
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        out.append(_SF_SUFFIX_ALPHABET[bits])
    return "".join(out)


def salesforce_id(prefix: str, sequence: int, pod: str = "5g") -> str:
    """An 18-character id: key prefix (3), pod (2), base-62 sequence (10), case-safe suffix (3)."""
    if len(prefix) != 3 or len(pod) != 2:
        raise ValueError("prefix has 3 characters and pod 2")
    digits = []
    n = sequence
    for _ in range(10):
        n, r = divmod(n, 62)
        digits.append(_BASE62[r])
    id15 = prefix + pod + "".join(reversed(digits))
    return id15 + salesforce_id_suffix(id15)


# The emulated org (the one a fresh Developer Edition org would be): tokens and outbound messages name it.
SALESFORCE_ORG_ID = salesforce_id("00D", 1)


def is_valid_salesforce_id(value: str) -> bool:
    if not _SF_ID.match(value):
        return False
    return len(value) == 15 or salesforce_id_suffix(value[:15]) == value[15:]


# --------------------------------------------------------------------------------------------------
# Webhooks (HubSpot plays the sender)


@dataclass(frozen=True)
class Subscription:
    """One webhook subscription: an event type and, for property changes, the property it watches."""

    id: int
    subscription_type: str  # "ticket.creation", "ticket.propertyChange", "contact.propertyChange", ...
    property_name: str | None = None


def subscription_for(
    subscriptions: Iterable[Subscription], object_type: str, kind: str, property_name: str | None = None
) -> Subscription | None:
    """The subscription an object change is delivered under, or None when nobody subscribed to it."""
    wanted = f"{object_type}.{kind}"
    for sub in subscriptions:
        if sub.subscription_type != wanted:
            continue
        if kind == "propertyChange" and sub.property_name != property_name:
            continue
        return sub
    return None


def webhook_should_retry(status: int | None, attempt_number: int, max_attempts: int) -> bool:
    """HubSpot retries a delivery that timed out, could not connect (status None) or was not 2xx."""
    failed = status is None or not 200 <= status < 300
    return failed and attempt_number + 1 < max_attempts


def retry_delay_s(attempt_number: int, initial_ms: int, max_ms: int, multiplier: float = 2.0) -> float:
    """Exponential backoff before retry number `attempt_number + 1`, capped at `max_ms`."""
    return min(float(max_ms), initial_ms * multiplier**attempt_number) / 1000


def event_payload(event: Mapping[str, Any], attempt_number: int) -> dict[str, Any]:
    """The JSON object HubSpot sends for one event; attemptNumber counts deliveries from 0."""
    return {**event, "attemptNumber": attempt_number}
