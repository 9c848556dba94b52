"""Properties a CRM refused on one connection (`unknown_properties: drop`), shared by the connectors.

A refused property is left out of later writes for `ttl_s` without asking the CRM again (then tried anew,
so a property created meanwhile is picked up), counted per dropped value
(`shopbotly_crm_writer_dropped_properties_total`) and logged once per property, never per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from shopbotly.crm_writer.metrics import DROPPED_PROPERTIES

__all__ = ["RefusedProperties"]

_log = structlog.get_logger("shopbotly.crm_writer.schema")


class RefusedProperties:
    def __init__(self, connection: str, *, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.ttl_s = ttl_s
        self._clock = clock
        self._at: dict[tuple[str, str], float] = {}

    def known(self, object_type: str, names: Iterable[str]) -> list[str]:
        """Those of `names` refused less than `ttl_s` ago: the caller leaves them out (counted here)."""
        now = self._clock()
        found = [
            n for n in names if (at := self._at.get((object_type, n))) is not None and now - at < self.ttl_s
        ]
        if found:
            DROPPED_PROPERTIES.labels(self.connection, object_type).inc(len(found))
        return found

    def note(self, object_type: str, refused: Mapping[str, str]) -> None:
        """The CRM refused these properties (name → its reason) in one record, left out of it from now on."""
        now = self._clock()
        for name, reason in refused.items():
            DROPPED_PROPERTIES.labels(self.connection, object_type).inc()
            previous = self._at.get((object_type, name))
            if previous is None or now - previous >= self.ttl_s:
                # Once per property (and again after it was tried anew), never per record.
                _log.warning(
                    "crm_property_dropped",
                    connection=self.connection,
                    object_type=object_type,
                    property=name,
                    reason=reason,
                    fix="shopbotly connections check / setup",
                )
            self._at[(object_type, name)] = now
