"""The emulator's live state: store, tokens, limiters, faults, counters, webhooks and Salesforce outbound
messages — one per app.

Everything but the store is touched only from the event loop's thread, so it needs no lock.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter, deque
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
from shopbotly.crm_emulator.salesforce_describe import CustomFieldRegistry, custom_field
from shopbotly.crm_emulator.salesforce_outbound import OutboundMessenger
from shopbotly.crm_emulator.settings import EmulatorSettings, reveal
from shopbotly.crm_emulator.store import Store
from shopbotly.crm_emulator.webhooks import WebhookDispatcher

__all__ = ["Counters", "LoggedRequest", "Runtime", "build_runtime", "default_policies"]


# Requests kept in the request log: at HubSpot's 100 per 10 s, well over an hour of traffic.
REQUEST_LOG_SIZE = 200_000


@dataclass(frozen=True)
class LoggedRequest:
    """One CRM API request as the emulator saw it: when it arrived, for which CRM, how it was answered."""

    at: float
    system: System
    status: int


@dataclass
class Counters:
    """What the admin API reports about traffic (records' creates/updates come from the store)."""

    requests: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    auth_failures: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    outage_rejections: Counter[str] = field(default_factory=Counter)
    by_endpoint: dict[str, Counter[str]] = field(default_factory=dict)
    # Every request, refused ones included, in arrival order: what a client really sent in any window.
    log: deque[LoggedRequest] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))

    def answered(self, system: System, endpoint: str, status: int, *, arrived_at: float) -> None:
        self.requests[system] += 1
        self.by_endpoint.setdefault(endpoint, Counter())[str(status)] += 1
        self.log.append(LoggedRequest(arrived_at, system, status))

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
    # The org's custom fields per sObject: configured (created in Setup before start), then Tooling API.
    salesforce_fields: CustomFieldRegistry
    tokens: TokenRegistry = field(default_factory=TokenRegistry)
    limiters: dict[System, RateLimiter] = field(default_factory=dict)
    faults: dict[System, FaultPlan] = field(default_factory=lambda: {s: FaultPlan() for s in System})
    fail_next: dict[System, tuple[int, ...]] = field(default_factory=lambda: {s: () for s in System})
    counters: Counters = field(default_factory=Counters)
    # False makes every static bearer token / API key fail (a revoked private-app token).
    static_tokens_valid: bool = True

    def reset_limits(self) -> None:
        self.limiters = {s: RateLimiter(p) for s, p in default_policies(self.settings).items()}

    def reload_schema(self) -> None:
        """Rebuild the schema from the settings and the store (after the store forgot created ones)."""
        self.hubspot_properties = _hubspot_registry(self.settings, self.store)
        self.hubspot_schema = dataclasses.replace(self.hubspot_schema, registry=self.hubspot_properties)
        self.salesforce_fields = salesforce_registry(self.settings, self.store)

    def reset_faults(self) -> None:
        self.faults = {s: FaultPlan() for s in System}
        self.fail_next = {s: () for s in System}
        self.static_tokens_valid = True


def build_runtime(settings: EmulatorSettings, clock: Callable[[], float] = time.time) -> Runtime:
    """Open the store and resolve secret references; fails at start when a reference cannot be read."""
    store = Store(settings.database())
    registry = _hubspot_registry(settings, store)
    fields = salesforce_registry(settings, store)
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
        salesforce_fields=fields,
    )
    runtime.reset_limits()
    return runtime


def _hubspot_registry(settings: EmulatorSettings, store: Store) -> PropertyRegistry:
    """A fresh portal's properties, the settings' pre-provisioned unique ones, and those created through
    the Properties API before a restart (the store keeps them, as a portal does)."""
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
    for object_type, definition in store.definitions(System.HUBSPOT):
        registry.restore(object_type, definition)
    registry.on_create = lambda object_type, created: store.save_definition(
        System.HUBSPOT, object_type, str(created["name"]), created
    )
    return registry


def salesforce_registry(settings: EmulatorSettings, store: Store) -> CustomFieldRegistry:
    """The org's custom fields: those the settings say an admin created in Setup (fields named as external
    ids or unique are text fields marked so), then those created through the Tooling API before a restart."""
    fields = CustomFieldRegistry()
    external = settings.salesforce_external_id_fields
    unique = settings.salesforce_unique_fields
    for sobject in sorted({*settings.salesforce_custom_fields, *external, *unique}):
        ext, uniq = set(external.get(sobject, [])), set(unique.get(sobject, []))
        for f in settings.salesforce_custom_fields.get(sobject, []):
            fields.add(
                sobject,
                custom_field(
                    f.name,
                    f.type,
                    external_id=f.external_id or f.name in ext,
                    unique=f.unique or f.name in uniq,
                    picklist=f.picklist_values,
                ),
            )
        for name in sorted(ext | uniq):
            if fields.get(sobject, name) is None and name.endswith("__c"):
                fields.add(sobject, custom_field(name, external_id=name in ext, unique=name in uniq))
    for sobject, described in store.definitions(System.SALESFORCE):
        fields.add(sobject, described)
    fields.on_create = lambda sobject, described: store.save_definition(
        System.SALESFORCE, sobject, str(described["name"]), described
    )
    return fields
