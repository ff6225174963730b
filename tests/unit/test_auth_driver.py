"""The one auth driver: bounded sends, and every answer it does not return is released.

The first tests drive ``drive`` by hand with in-memory flows and answers (no network), as httpx's
auth tests do; the last runs the proxy's ``send`` over a real pool and a real OAuth2 scheme.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from sidecar.errors import SidecarError
from sidecar.proxy import client as http1
from sidecar.proxy.pipeline import SENT_HEADER, send
from sidecar.schemes.base import AuthFlow, Credential, OutboundRequest, UpstreamContext
from sidecar.schemes.driver import drive
from sidecar.schemes.oauth2 import OAuth2ClientCredentials, OAuth2Options
from tests.unit.conftest import credential, outbound


class Answer:
    """An answer that counts its releases."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.released = 0


def release(answer: Answer) -> None:
    answer.released += 1


class Sender:
    """Answers with the given statuses in turn and keeps every answer it gave."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.answers: list[Answer] = []

    async def __call__(self, request: OutboundRequest) -> Answer:
        answer = Answer(self.statuses.pop(0))
        self.answers.append(answer)
        return answer


class Flow:
    """A flow that retries on 401 ``retries`` times, optionally failing or stalling on the answer."""

    def __init__(self, retries: int = 1, fail: bool = False, stall: bool = False) -> None:
        self.retries, self.fail, self.stall = retries, fail, stall
        self.closed = False
        self.stalled = asyncio.Event()

    async def __call__(self, request: OutboundRequest) -> AuthFlow:
        try:
            response = yield request
            for _ in range(self.retries):
                if response.status != 401:
                    return
                if self.stall:
                    self.stalled.set()
                    await asyncio.sleep(60)
                if self.fail:
                    raise SidecarError("SC4008")
                response = yield request
        finally:
            self.closed = True


def flow_of(flow: Flow) -> AuthFlow:
    return flow(outbound())


async def test_a_retry_releases_the_first_answer_and_returns_the_second() -> None:
    """401 then 200: two sends, the 401 released, the 200 returned unreleased, flow closed."""
    sender, flow = Sender(401, 200), Flow()
    answer = await drive(flow_of(flow), sender, release)
    assert answer is sender.answers[1] and answer.status == 200
    assert [a.released for a in sender.answers] == [1, 0]
    assert flow.closed


async def test_the_flow_raising_on_the_answer_releases_it() -> None:
    """A refresh failing after a 401 (asend raising) releases the 401's answer."""
    sender, flow = Sender(401), Flow(fail=True)
    with pytest.raises(SidecarError):
        await drive(flow_of(flow), sender, release)
    assert [a.released for a in sender.answers] == [1]
    assert flow.closed


async def test_cancellation_while_the_flow_waits_releases_the_answer() -> None:
    """Cancelled while the flow waits (a token lock, a slow refresh): the answer is released."""
    sender, flow = Sender(401), Flow(stall=True)
    task = asyncio.create_task(drive(flow_of(flow), sender, release))
    await asyncio.wait_for(flow.stalled.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [a.released for a in sender.answers] == [1]
    assert flow.closed


async def test_sends_are_bounded_to_one_retry() -> None:
    """A flow asking for a third send is not obeyed: two sends, the second answer returned."""
    sender, flow = Sender(401, 401, 401), Flow(retries=5)
    answer = await drive(flow_of(flow), sender, release)
    assert len(sender.answers) == 2 and answer is sender.answers[1]
    assert [a.released for a in sender.answers] == [1, 0]
    assert flow.closed


async def test_a_failing_retry_send_leaves_nothing_unreleased() -> None:
    """The retry's send failing: the first answer was released, the flow is closed."""
    flow = Flow()
    sender = Sender(401)  # no second status: the second send raises IndexError
    with pytest.raises(IndexError):
        await drive(flow_of(flow), sender, release)
    assert [a.released for a in sender.answers] == [1]
    assert flow.closed


# --------------------------------------------------------------------------- over a real pool


@pytest.fixture
async def provider(aiohttp_server: Any) -> tuple[str, dict[str, int]]:
    """Every resource answers 401; the token endpoint issues one token, then fails with 500."""
    seen = {"tokens": 0, "resources": 0}

    async def token(_request: web.Request) -> web.Response:
        seen["tokens"] += 1
        if seen["tokens"] == 1:
            return web.json_response({"access_token": "tok1", "expires_in": 3600})
        return web.json_response({"error": "server_error"}, status=500)

    async def resource(_request: web.Request) -> web.Response:
        seen["resources"] += 1
        return web.json_response({"error": "invalid_token"}, status=401)

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_route("*", "/{tail:.*}", resource)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/"), seen


def scheme_for(url: str) -> OAuth2ClientCredentials:
    ctx = UpstreamContext(name="up", url=URL(url), timeout=5)
    return OAuth2ClientCredentials(OAuth2Options(token_url="/token", backoff_initial=30), ctx)


CRED: Credential = credential({"client_id": "id"}, {"client_secret": "SECR_driver"})


async def test_three_401s_with_a_failing_refresh_leak_no_pooled_connection(
    provider: tuple[str, dict[str, int]],
) -> None:
    """Pool of 2, three 401s whose refresh fails: three SC4008, no wait, no leaked connection."""
    url, seen = provider
    scheme = scheme_for(url)
    pool = http1.Pool(URL(url), None, limit=2, timeout=2)
    async with aiohttp.ClientSession() as session:
        scheme.bind(session)
        for _ in range(3):
            req = outbound("GET", url + "/v1/x")
            with pytest.raises(SidecarError) as caught:
                await send(pool, scheme, req, CRED, None, None)
            assert caught.value.code == "SC4008"  # not SC4006: the third did not wait
            assert caught.value.headers[SENT_HEADER] == "complete"
            assert pool.in_use == 0
        assert pool.idle_count <= 2
    await pool.close()
    assert seen["resources"] == 3
    counts = scheme.counters()  # every token request the endpoint failed is counted as failed
    assert counts["token_failures"] == seen["tokens"] - 1 >= 1
    assert counts["token_requests"] == seen["tokens"]
