"""Bearer parsing and the key ring: tenant by hashed key, scopes, and what is remembered."""

from __future__ import annotations

import pytest

from shopbotly.common.config import parse_config
from shopbotly.order_reader.auth import KeyRing, bearer_token
from shopbotly.order_reader.problems import ProblemError
from shopbotly.testkit.order_reader import KEYS, config_data

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic abc", None),
        ("abc", None),
    ],
)
def test_bearer_token_takes_the_credentials_of_the_bearer_scheme(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_a_key_maps_to_its_tenant() -> None:
    ring = KeyRing(parse_config(config_data()))
    assert ring.authenticate(KEYS["acme"], "orders").tenant == "acme"
    assert ring.authenticate(KEYS["globex"], "tickets").tenant == "globex"


def test_missing_and_unknown_keys_are_401_and_unknown_keys_are_not_remembered() -> None:
    ring = KeyRing(parse_config(config_data()))
    for presented in (None, "", "sbk_not_a_key"):
        with pytest.raises(ProblemError) as err:
            ring.authenticate(presented, "orders")
        assert err.value.status == 401 and err.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(ring._known) == 0


def test_a_remembered_key_is_still_held_to_its_scopes() -> None:
    ring = KeyRing(parse_config(config_data()))
    assert ring.authenticate(KEYS["acme-orders-only"], "orders").tenant == "acme"
    for _ in range(2):  # the second time from memory
        with pytest.raises(ProblemError) as err:
            ring.authenticate(KEYS["acme-orders-only"], "tickets")
        assert err.value.status == 403 and "tickets" in err.value.detail
    assert len(ring._known) == 1


def test_remembered_keys_are_bounded() -> None:
    ring = KeyRing(parse_config(config_data()), capacity=1)
    ring.authenticate(KEYS["acme"], "orders")
    ring.authenticate(KEYS["globex"], "orders")
    assert len(ring._known) == 1
    assert ring.authenticate(KEYS["acme"], "orders").tenant == "acme"
