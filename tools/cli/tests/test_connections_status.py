"""`connections status` merges what each crm-writer replica reports about a connection."""

from __future__ import annotations

import pytest

from shopbotly.cli.connections_status import merge_status

pytestmark = pytest.mark.unit


def test_replicas_add_up_held_work_and_the_worst_state_wins() -> None:
    a = [
        {
            "connection": "t:bot",
            "held": 10,
            "oldest_held_age_s": 30.0,
            "circuit": "open",
            "throttled": 0,
            "circuit_reason": "cannot connect",
            "last_error": "cannot connect",
            "last_error_at": 100.0,
        },
        {"connection": "t:hs", "held": 0, "circuit": "closed", "throttled": 2, "window_remaining": 40},
    ]
    b = [
        {
            "connection": "t:bot",
            "held": 5,
            "oldest_held_age_s": 90.0,
            "circuit": "half_open",
            "throttled": 0,
            "last_error": "older",
            "last_error_at": 50.0,
        },
        {
            "connection": "t:hs",
            "held": 3,
            "oldest_held_age_s": 1.5,
            "circuit": "closed",
            "throttled": 1,
            "window_remaining": 12,
            "daily_remaining": 900,
        },
    ]
    bot, hs = merge_status([a, b])
    assert (bot["held"], bot["oldest_held_age_s"], bot["circuit"], bot["replicas"]) == (15, 90.0, "open", 2)
    assert (bot["last_error"], bot["circuit_reason"]) == ("cannot connect", "cannot connect")
    assert (hs["held"], hs["throttled"], hs["window_remaining"], hs["daily_remaining"]) == (3, 3, 12, 900)
    assert hs["circuit"] == "closed"
