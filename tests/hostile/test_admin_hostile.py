"""Hand-picked hostile admin requests that once answered 5xx (or were wrongly accepted).

Each was found by fuzzing the admin API; each now gets a 4xx with its code and stores nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.hostile.live import GOOD_KEY, LiveSidecar

OK_BODY = '{"upstream": "azupay", "fields": {"api_key": "%s"}, "provider_data": {"x": %s}}'


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def put(live: LiveSidecar, name: str, raw: str | bytes, **headers: Any) -> requests.Response:
    return requests.put(
        f"{live.admin_url}/v1/credentials/{name}",
        data=raw,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


def stored(live: LiveSidecar) -> list[str]:
    listing = requests.get(f"{live.admin_url}/v1/credentials", timeout=10).json()
    return [c["name"] for c in listing["credentials"]]


@pytest.mark.parametrize(
    ("value", "status", "code"),
    [
        ("NaN", 400, "SC1001"),
        ("-Infinity", 400, "SC1001"),
        ("1e400", 400, "SC1001"),
        (nested(31), 422, "SC1002"),
        (nested(1500), 400, "SC1001"),
        ('"\\ud800"', 400, "SC1001"),
    ],
)
def test_unstorable_json_is_refused(live: LiveSidecar, value: str, status: int, code: str) -> None:
    """Non-finite numbers, deep nesting and lone surrogates are 4xx, not a Vault 502 or a 500."""
    r = put(live, "bad", OK_BODY % (GOOD_KEY, value))
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert stored(live) == []


def test_nesting_at_the_limit_is_accepted(live: LiveSidecar) -> None:
    """32 levels counting the body object still store; one more is refused (above)."""
    assert put(live, "deep", OK_BODY % (GOOD_KEY, nested(30))).status_code == 201


def test_lone_surrogate_in_verify_is_refused(live: LiveSidecar) -> None:
    """A surrogate in the compared secret is 400, not a 500 from transit's base64 step."""
    assert put(live, "azupay", OK_BODY % (GOOD_KEY, "1")).status_code == 201
    r = requests.post(
        f"{live.admin_url}/v1/credentials/azupay/verify",
        data='{"api_key": "\\udc00"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert (r.status_code, r.json()["code"]) == (400, "SC1001")


@pytest.mark.parametrize("value", ["9" * 5000, "²".encode(), '""1""', "*"])
def test_if_match_that_is_no_version_is_412(live: LiveSidecar, value: str | bytes) -> None:
    """Over-long digit strings and non-ASCII digits are 412 SC2003, not an int() crash."""
    assert put(live, "azupay", OK_BODY % (GOOD_KEY, "1")).status_code == 201
    r = put(live, "azupay", OK_BODY % (GOOD_KEY, "2"), **{"If-Match": value})
    assert (r.status_code, r.json()["code"]) == (412, "SC2003")


def test_name_with_trailing_newline_is_refused(live: LiveSidecar) -> None:
    """``abc\\n`` is no name ("$" matched before the newline); refused before Vault sees it."""
    r = put(live, "abc%0A", OK_BODY % (GOOD_KEY, "1"))
    assert (r.status_code, r.json()["code"]) == (400, "SC1004")
    body = {"key": GOOD_KEY, "provider": "azupay", "type": "x\n"}
    r = requests.post(f"{live.admin_url}/v1/credentials", json=body, timeout=10)
    assert (r.status_code, r.json()["code"]) == (400, "SC1004")
    assert stored(live) == []


def test_method_not_allowed_names_the_allowed_methods(live: LiveSidecar) -> None:
    """405 carries ``Allow`` (RFC 9110) as well as the JSON error body."""
    r = requests.post(f"{live.admin_url}/v1/credentials/azupay", timeout=10)
    assert (r.status_code, r.json()["code"]) == (405, "SC1006")
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"GET", "PUT", "PATCH", "DELETE"}


def test_if_match_forms_that_name_a_version(live: LiveSidecar) -> None:
    """``1``, ``"1"`` and ``W/"1"`` all name version 1."""
    assert put(live, "azupay", OK_BODY % (GOOD_KEY, "1")).status_code == 201
    for version, tag in enumerate(("1", '"2"', 'W/"3"'), start=1):
        r = put(live, "azupay", OK_BODY % (GOOD_KEY, "2"), **{"If-Match": tag})
        assert (r.status_code, r.headers["ETag"]) == (200, f'"{version + 1}"')
