"""The runner's own logic: what it reports for a module that failed, and per-module arguments."""

from __future__ import annotations

import argparse

import pytest

from shopbotly.bench.__main__ import _suite_args, error_line

pytestmark = pytest.mark.unit

TRACEBACK = """\
Traceback (most recent call last):
  File "ingest.py", line 380, in bench_ingest
    raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
RuntimeError: wrk is not installed (apt-get install -y wrk)
Unclosed AIOKafkaProducer
producer: <aiokafka.producer.producer.AIOKafkaProducer object at 0x7f>
"""


def test_the_error_is_the_exception_not_the_noise_after_it() -> None:
    assert error_line(TRACEBACK) == "RuntimeError: wrk is not installed (apt-get install -y wrk)"


def test_an_exit_message_without_traceback_is_the_last_line() -> None:
    assert error_line("starting\nhey is not installed (apt-get install -y hey)\n") == (
        "hey is not installed (apt-get install -y hey)"
    )
    assert error_line("") is None


def test_module_arguments_are_split_like_a_shell() -> None:
    assert _suite_args(["replay=--records 20000 --rounds 1", "crm=--contacts 2000"]) == {
        "replay": ["--records", "20000", "--rounds", "1"],
        "crm": ["--contacts", "2000"],
    }


def test_an_unknown_module_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="replay"):
        _suite_args(["nope=--x 1"])
