"""Shared by the cross-service tests (tests/e2e, tests/fault): where a failed test's stack left its logs.

The Kafka fixtures come from the root conftest.py (`pytest_plugins`); the stacks themselves are built in
tests/e2e/conftest.py and tests/fault/ with the harness in tests/stack.py.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.stack import Stack


def _stacks_of(item: pytest.Item) -> list[Stack]:
    found: list[Stack] = []
    for value in getattr(item, "funcargs", {}).values():
        candidate: Any = value if isinstance(value, Stack) else getattr(value, "stack", None)
        if isinstance(candidate, Stack):
            found.append(candidate)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On failure, name every log file of the stacks the test used (the tails are in the failure message)."""
    report = yield
    if report.failed:
        for stack in _stacks_of(item):
            files = "\n".join(f"{s.name}: {s.log_path}" for s in stack.services.values())
            report.sections.append(("stack logs", files))
    return report
