"""Composite schemes: parts sign in order; one part's retry is re-signed by the later parts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import CIMultiDict
from yarl import URL

from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    UpstreamContext,
    UpstreamResponse,
)
from sidecar.schemes.composite import Composite
from sidecar.schemes.registry import _checked

CTX = UpstreamContext(name="up", url=URL("https://provider.test"))
NOW = datetime.now(UTC)
CRED = Credential(
    name="c",
    upstream="up",
    scheme="a+b",
    environment="sandbox",
    enabled=True,
    fields={"client_id": "id"},
    secrets={"client_secret": "s", "hmac_key": "h"},
    provider_data={},
    version=1,
    created_at=NOW,
    updated_at=NOW,
)


class Token(SchemeBase):
    """Bearer with a generation number; refreshes once on 401."""

    public_fields = ("client_id",)
    secret_fields = ("client_secret",)
    replays_request = True

    def __init__(self) -> None:
        self.generation = 1

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        request.headers["Authorization"] = f"Bearer t{self.generation}"
        response = yield request
        if response.status == 401:
            self.generation += 1
            request.headers["Authorization"] = f"Bearer t{self.generation}"
            yield request


class Sign(SchemeBase):
    """Signs whatever Authorization it sees, so a stale signature is detectable."""

    secret_fields = ("hmac_key",)
    optional_fields = ()

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        request.headers["X-Signature"] = "sig(" + request.headers["Authorization"] + ")"
        yield request

    async def verify(self, cred: Credential, http: Any) -> None:
        return None


def request() -> OutboundRequest:
    return OutboundRequest("GET", URL("https://provider.test/x"), CIMultiDict())


async def test_parts_apply_in_order_and_fields_union() -> None:
    """Both headers are set and the declared fields are the union."""
    scheme = Composite([Token(), Sign()], CTX)
    assert scheme.public_fields == ("client_id",)
    assert scheme.secret_fields == ("client_secret", "hmac_key")
    assert scheme.replays_request and not scheme.requires_request_body
    flow = scheme.auth_flow(request(), CRED)
    sent = await flow.__anext__()
    assert sent.headers["X-Signature"] == "sig(Bearer t1)"


async def test_retry_is_resigned_by_later_parts_and_happens_once() -> None:
    """A 401 makes the token part retry; the signature covers the new token; no third send."""
    scheme = Composite([Token(), Sign()], CTX)
    flow = scheme.auth_flow(request(), CRED)
    await flow.__anext__()
    retry = await flow.asend(UpstreamResponse(401, CIMultiDict()))
    assert retry.headers["Authorization"] == "Bearer t2"
    assert retry.headers["X-Signature"] == "sig(Bearer t2)"
    try:
        await flow.asend(UpstreamResponse(401, CIMultiDict()))
    except StopAsyncIteration:
        pass
    else:
        raise AssertionError("a second retry was yielded")


async def test_success_ends_the_flow() -> None:
    """A 200 ends the flow without a retry."""
    flow = Composite([Token(), Sign()], CTX).auth_flow(request(), CRED)
    await flow.__anext__()
    try:
        await flow.asend(UpstreamResponse(200, CIMultiDict()))
    except StopAsyncIteration:
        return
    raise AssertionError("flow yielded after a 200")


class Tracked(SchemeBase):
    """Records whether its flow was closed; ``fail`` makes it raise while signing."""

    def __init__(self, fail: bool = False, tokens: int = 0) -> None:
        self.fail = fail
        self.closed = 0
        self.tokens = tokens

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        try:
            if self.fail:
                raise RuntimeError("cannot sign")
            yield request
        finally:
            self.closed += 1

    def counters(self) -> Mapping[str, int]:
        return {"token_requests": self.tokens, "token_failures": 1} if self.tokens else {}


async def test_every_part_flow_is_closed_when_a_later_part_fails_to_sign() -> None:
    """A part raising while signing closes the parts that had signed before it."""
    first, second = Tracked(), Tracked(fail=True)
    flow = Composite([first, second], CTX).auth_flow(request(), CRED)
    with pytest.raises(RuntimeError):
        await flow.__anext__()
    assert (first.closed, second.closed) == (1, 1)


async def test_closing_the_flow_before_the_answer_closes_every_part() -> None:
    """The driver closing the flow at its first yield (a failed send) closes the parts now."""
    parts = [Tracked(), Tracked()]
    flow = Composite(parts, CTX).auth_flow(request(), CRED)
    await flow.__anext__()
    await flow.aclose()
    assert [p.closed for p in parts] == [1, 1]


def test_counters_are_the_parts_summed() -> None:
    """A composite publishes its parts' counters (metrics read only the outer scheme)."""
    scheme = Composite([Tracked(tokens=3), Sign()], CTX)
    assert scheme.counters() == {"token_requests": 3, "token_failures": 1}
    assert Sign().counters() == {}


def test_a_scheme_without_the_protocol_is_refused_at_load() -> None:
    """A plugin missing a protocol member (``counters``) fails at config load, not at a scrape."""

    class Partial:
        name = "partial"
        requires_request_body = replays_request = False
        public_fields = secret_fields = optional_fields = ()

        def auth_flow(self, request: OutboundRequest, cred: Credential) -> None: ...
        async def verify(self, cred: Credential, http: Any) -> None: ...
        def bind(self, http: Any) -> None: ...

    with pytest.raises(TypeError, match="Scheme protocol"):
        _checked("partial", Partial())
    assert _checked("sign", Sign()) is not None
