"""Schemathesis against a live sidecar: every admin operation, valid and invalid input.

The document under test is the one the sidecar serves (``GET /v1/openapi.json``). Checks: no
5xx, each status documented, each body valid against its schema, each content type and required
header as documented, invalid input refused. Bounded (``MAX_EXAMPLES`` per operation and mode)
and derandomized, so CI is stable; set ``FUZZ_RANDOM=1`` to explore with fresh seeds.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup

from tests.hostile.live import GOOD_KEY, SUMMARY, LiveSidecar

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
NAMES = ("azupay", "other")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Codes by which the API refuses input: a negative case must get one of them.
METHODS = {"get", "put", "post", "patch", "delete"}
REFUSALS = [400, 401, 404, 405, 409, 412, 413, 415, 422, 429]


class Tally:
    """Cases sent, 5xx answers, and one report per distinct failure."""

    def __init__(self) -> None:
        self.cases = 0
        self.statuses: Counter[int] = Counter()
        self.server_errors = 0
        self.failures: dict[str, str] = {}
        self.no_invalid: list[str] = []  # operations with no input that can be made invalid


def steer(case: Any, data: st.DataObject) -> None:
    """Point some valid cases at a stored credential and a good key, so writes succeed.

    Random names and upstreams almost always end in 404/422; this reaches 200/201/412/409.
    Only valid (positive) cases are steered: the values put in are valid too.
    """

    def often() -> bool:  # about 70%: small integers are hypothesis's favourites
        return data.draw(st.integers(0, 9)) < 7

    if "name" in (case.path_parameters or {}) and often():
        case.path_parameters["name"] = data.draw(st.sampled_from(NAMES))
    body = case.body
    if isinstance(body, dict) and often():
        if case.operation.method.upper() == "PUT":
            body.update(upstream="azupay", fields={"api_key": GOOD_KEY})
            body.pop("environment", None)
        elif case.operation.path == "/v1/credentials":
            body.update(provider="azupay", key=GOOD_KEY)
        elif case.operation.path.endswith("/verify"):
            case.body = {"api_key": data.draw(st.sampled_from([GOOD_KEY, "SECR_other"]))}
    if case.headers and "If-Match" in case.headers and often():
        case.headers["If-Match"] = f'"{data.draw(st.integers(1, 4))}"'


def seed(live: LiveSidecar, session: requests.Session) -> None:
    """(Re)store ``azupay``: a DELETE case may have removed it."""
    r = session.put(
        f"{live.admin_url}/v1/credentials/azupay",
        json={"upstream": "azupay", "fields": {"api_key": GOOD_KEY}},
        timeout=15,
    )
    assert r.status_code in (200, 201)


def runner(live: LiveSidecar, tally: Tally, session: requests.Session) -> Callable[..., None]:
    def run(op: Any, mode: GenerationMode) -> None:
        seed(live, session)
        checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=not os.environ.get("FUZZ_RANDOM"),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=op.as_strategy(generation_mode=mode), data=st.data())
        def one(case: Any, data: st.DataObject) -> None:
            if mode == GenerationMode.POSITIVE:
                steer(case, data)
            tally.cases += 1
            response = case.call(base_url=live.admin_url, session=session, timeout=15)
            tally.statuses[response.status_code] += 1
            tally.server_errors += response.status_code >= 500
            try:
                case.validate_response(response, checks=checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    key = f"{op.label} [{mode.value}] {failure.title}"
                    tally.failures.setdefault(key, f"{key}\n{group.args[0]}")

        try:
            one()
        except Unsatisfiable:
            if mode != GenerationMode.NEGATIVE:
                raise
            tally.no_invalid.append(op.label)

    return run


def test_admin_api_conforms_to_its_document(
    live: LiveSidecar, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No 5xx and no answer outside the document, for valid and invalid input alike."""
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
    )
    tally = Tally()
    with requests.Session() as session:
        # from_url would leave out the document's own route; from_dict keeps every one.
        served = session.get(f"{live.admin_url}/v1/openapi.json", timeout=15).json()
        schema = schemathesis.openapi.from_dict(served, config=config)
        run = runner(live, tally, session)
        operations = [o.ok() for o in schema.get_all_operations() if isinstance(o, Ok)]
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run(op, mode)
    line = (
        f"schemathesis: {tally.cases} cases over {len(operations)} operations, "
        f"{tally.server_errors} server errors, {len(tally.failures)} failures "
        f"({len(tally.no_invalid)} operations take no input that can be made invalid); "
        "statuses " + ", ".join(f"{k}x{v}" for k, v in sorted(tally.statuses.items()))
    )
    request.config.stash.setdefault(SUMMARY, []).append(line)
    (tmp_path_factory.getbasetemp() / "schemathesis-summary.txt").write_text(line + "\n")
    documented = sum(m in METHODS for item in served["paths"].values() for m in item)
    assert tally.cases > 0 and len(operations) == documented
    assert not tally.failures, "\n\n".join(tally.failures.values())
    assert tally.server_errors == 0


def test_undocumented_methods_are_405_with_allow(live: LiveSidecar) -> None:
    """A method a documented path does not list gets 405 SC1006 and ``Allow`` naming the rest."""
    checked = 0
    with requests.Session() as session:
        doc = session.get(f"{live.admin_url}/v1/openapi.json", timeout=15).json()
        for template, item in doc["paths"].items():
            listed = {m.upper() for m in item} | ({"HEAD"} if "get" in item else set())
            url = live.admin_url + template.format(name="azupay", key_id="pk" + "0" * 16)
            for method in sorted({m.upper() for m in METHODS} - listed):
                r = session.request(method, url, timeout=15)
                allow = {m.strip() for m in r.headers.get("Allow", "").split(",")}
                assert (r.status_code, r.json()["code"], allow) == (405, "SC1006", listed), url
                checked += 1
    assert checked > 0
