"""crm-writer settings, from `SHOPBOTLY_*` environment variables (docs/services/crm-writer.md lists them)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shopbotly.common.settings import ServiceSettings

__all__ = ["Settings"]


# The drain's commit of finished offsets is given at most this long (the broker may be slow or away).
COMMIT_BOUND_S = 10.0


class Settings(ServiceSettings):
    """Consumption, delivery and resilience knobs. CRM connections themselves live in the tenants file."""

    port: Annotated[int, Field(ge=1, le=65535)] = 9102
    # Consumer group of all replicas; empty: "<topic prefix>crm-writer", so a topic prefix isolates it too
    # (as the mapper's "<topic prefix>mapper"). Resolved here, so `consumer_group` is always the group joined.
    consumer_group: Annotated[str, Field(validate_default=True)] = ""
    # Identities of one partition written concurrently; one identity is always strictly sequential.
    max_in_flight_per_partition: Annotated[int, Field(ge=1, le=10_000)] = 128
    # Commands of one connection held in memory per partition; past it, that connection's further commands
    # stay in Kafka (uncommitted) and are fetched again when it has room. Other connections never wait.
    max_buffered_per_connection: Annotated[int, Field(ge=1)] = 2000
    # Commands of all connections held in memory per partition before its fetching pauses (a memory bound).
    max_buffered_per_partition: Annotated[int, Field(ge=1)] = 20_000
    # Queued commands of one identity merged into one CRM write, at most.
    max_coalesce: Annotated[int, Field(ge=1, le=1000)] = 100
    commit_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    poll_timeout_ms: Annotated[int, Field(ge=10, le=5000)] = 200
    max_poll_records: Annotated[int, Field(ge=1)] = 1000
    session_timeout_ms: Annotated[int, Field(ge=6000)] = 10_000
    # On partition revocation: time given to in-flight writes to finish before they are abandoned.
    revoke_grace_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    # How long the group waits for every member to rejoin in a rebalance. A member still draining (up to
    # `revoke_grace_s`, then a bounded commit) must make it, or the group hands its partitions to another
    # replica while it still writes them: two writers on one partition, each with a full rate-limit share.
    # 0: derived, `revoke_grace_s` + 20 s (the commit's bound and the join's round trips).
    rebalance_timeout_ms: Annotated[int, Field(ge=0)] = 0
    ledger_restore_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # Applied ids whose CRM ids stay in memory (the newest); an older one is read back from the ledger topic.
    ledger_recent_ids: Annotated[int, Field(ge=1)] = 8192
    # Circuit breaker, per connection.
    circuit_failure_threshold: Annotated[int, Field(ge=1)] = 5
    # Open for 1 s, then 2, then at most 4 s between single probes: a CRM that is back is found within a
    # few seconds, and one that is still down gets one request per 4 s.
    circuit_open_s: Annotated[float, Field(gt=0)] = 1.0
    circuit_max_open_s: Annotated[float, Field(gt=0)] = 4.0
    # Consecutive 429s on a connection, with no success in between, after which it counts as an outage.
    throttle_outage_after: Annotated[int, Field(ge=1)] = 50
    # Exponential backoff with full jitter between attempts of one write.
    retry_base_s: Annotated[float, Field(gt=0)] = 0.5
    retry_cap_s: Annotated[float, Field(gt=0)] = 30.0
    http_max_connections: Annotated[int, Field(ge=1)] = 64

    @field_validator("consumer_group")
    @classmethod
    def _group_of_the_prefix(cls, value: str, info: ValidationInfo) -> str:
        # `kafka` (a ServiceSettings field) is validated before this one; absent only when it was invalid.
        kafka = info.data.get("kafka")
        if value or kafka is None:
            return value
        return f"{kafka.topic_prefix}crm-writer"

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.circuit_max_open_s < self.circuit_open_s:
            raise ValueError("SHOPBOTLY_CIRCUIT_MAX_OPEN_S must be at least SHOPBOTLY_CIRCUIT_OPEN_S")
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError("SHOPBOTLY_RETRY_CAP_S must be at least SHOPBOTLY_RETRY_BASE_S")
        drain_ms = (self.revoke_grace_s + COMMIT_BOUND_S) * 1000
        if self.rebalance_timeout_ms and self.rebalance_timeout_ms < drain_ms:
            raise ValueError(
                "SHOPBOTLY_REBALANCE_TIMEOUT_MS must exceed SHOPBOTLY_REVOKE_GRACE_S plus "
                f"{COMMIT_BOUND_S:g} s (the drain's commit), or a draining replica is thrown out of the "
                "group while it still writes; leave it 0 to derive it"
            )
        return self

    @property
    def effective_rebalance_timeout_ms(self) -> int:
        """The rebalance timeout the consumer uses: set, or the drain's bound plus the join's margin."""
        if self.rebalance_timeout_ms:
            return self.rebalance_timeout_ms
        derived = int((self.revoke_grace_s + COMMIT_BOUND_S + 10.0) * 1000)
        return max(self.session_timeout_ms, derived)
