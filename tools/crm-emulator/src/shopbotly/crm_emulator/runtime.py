"""The emulator's live state: store, tokens, limiters, faults, counters, webhooks and Salesforce outbound
messages — one per app.

Everything but the store is touched only from the event loop's thread, so it needs no lock.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shopbotly.common.health import Health
from shopbotly.crm_emulator.domain import (
    SALESFORCE_ORG_ID,
    FaultPlan,
    RateLimiter,
    RateLimitPolicy,
    System,
    TokenRegistry,
)
from shopbotly.crm_emulator.hubspot_properties import PropertyRegistry
from shopbotly.crm_emulator.hubspot_rules import CONTACT_PROPERTIES, PropertySchema
from shopbotly.crm_emulator.salesforce_outbound import OutboundMessenger
from shopbotly.crm_emulator.settings import EmulatorSettings, reveal
from shopbotly.crm_emulator.store import Store
from shopbotly.crm_emulator.webhooks import WebhookDispatcher

__all__ = ["Counters", "Runtime", "build_runtime", "default_policies"]


@dataclass
class Counters:
    """What the admin API reports about traffic (records' creates/updates come from the store)."""

    requests: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    auth_failures: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    outage_rejections: Counter[str] = field(default_factory=Counter)
    by_endpoint: dict[str, Counter[str]] = field(default_factory=dict)

    def answered(self, system: System, endpoint: str, status: int) -> None:
        self.requests[system] += 1
        self.by_endpoint.setdefault(endpoint, Counter())[str(status)] += 1

    def view(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()),
            "rate_limited": sum(self.rate_limited.values()),
            "requests_by_system": dict(self.requests),
            "rate_limited_by_policy": dict(self.rate_limited),
            "auth_failures": dict(self.auth_failures),
            "injected_faults": dict(self.injected),
            "outage_rejections": dict(self.outage_rejections),
            "by_endpoint": {k: dict(v) for k, v in sorted(self.by_endpoint.items())},
        }


def default_policies(settings: EmulatorSettings) -> dict[System, RateLimitPolicy]:
    return {
        System.HUBSPOT: RateLimitPolicy(
            settings.hubspot_rate_limit_max,
            settings.hubspot_rate_limit_interval_ms,
            settings.hubspot_daily_limit,
        ),
        # Salesforce has no short-term request limit, only the rolling 24 h API request allocation.
        System.SALESFORCE: RateLimitPolicy(None, 1000, settings.salesforce_daily_limit),
        System.GENERIC: RateLimitPolicy(
            settings.generic_rate_limit_max, settings.generic_rate_limit_interval_ms, None
        ),
    }


@dataclass
class Runtime:
    settings: EmulatorSettings
    store: Store
    webhooks: WebhookDispatcher
    outbound: OutboundMessenger
    health: Health
    clock: Callable[[], float]
    rng: random.Random
    hubspot_tokens: frozenset[str]
    generic_tokens: frozenset[str]
    generic_api_keys: frozenset[str]
    hubspot_schema: PropertySchema
    # Every property per object type: a fresh portal's, the settings' unique ones, those created since.
    hubspot_properties: PropertyRegistry
    tokens: TokenRegistry = field(default_factory=TokenRegistry)
    limiters: dict[System, RateLimiter] = field(default_factory=dict)
    faults: dict[System, FaultPlan] = field(default_factory=lambda: {s: FaultPlan() for s in System})
    fail_next: dict[System, tuple[int, ...]] = field(default_factory=lambda: {s: () for s in System})
    counters: Counters = field(default_factory=Counters)
    # False makes every static bearer token / API key fail (a revoked private-app token).
    static_tokens_valid: bool = True

    def reset_limits(self) -> None:
        self.limiters = {s: RateLimiter(p) for s, p in default_policies(self.settings).items()}

    def reset_faults(self) -> None:
        self.faults = {s: FaultPlan() for s in System}
        self.fail_next = {s: () for s in System}
        self.static_tokens_valid = True


def build_runtime(settings: EmulatorSettings, clock: Callable[[], float] = time.time) -> Runtime:
    """Open the store and resolve secret references; fails at start when a reference cannot be read."""
    store = Store(settings.database())
    registry = PropertyRegistry()
    for object_type, names in settings.hubspot_unique_properties.items():
        for name in names:
            # Pre-provisioned: as `shopbotly connections setup` would have created it.
            registry.create(
                object_type,
                {
                    "name": name,
                    "label": name,
                    "type": "string",
                    "fieldType": "text",
                    "groupName": "shopbotly",
                    "hasUniqueValue": True,
                },
                "2024-01-01T00:00:00.000Z",
            )
    runtime = Runtime(
        settings=settings,
        store=store,
        webhooks=WebhookDispatcher(settings.webhooks, settings.hubspot_portal_id, store, clock),
        outbound=OutboundMessenger(settings.salesforce_outbound, SALESFORCE_ORG_ID, store, clock),
        health=Health(),
        clock=clock,
        rng=random.Random(settings.seed),
        hubspot_tokens=frozenset(reveal(t) for t in settings.hubspot_tokens),
        generic_tokens=frozenset(reveal(t) for t in settings.generic_tokens),
        generic_api_keys=frozenset(reveal(k) for k in settings.generic_api_keys),
        hubspot_schema=PropertySchema(
            known=CONTACT_PROPERTIES,
            custom_patterns=tuple(settings.hubspot_custom_properties),
            strict=settings.hubspot_strict_properties,
            registry=registry,
        ),
        hubspot_properties=registry,
    )
    runtime.reset_limits()
    return runtime
