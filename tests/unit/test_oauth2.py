"""OAuth2 client credentials: caching, single flight, expiry, one retry on 401, backoff, verify."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.base import Credential, OutboundRequest, UpstreamContext, UpstreamResponse
from sidecar.schemes.oauth2 import OAuth2ClientCredentials, OAuth2Options
from tests.unit.conftest import credential, outbound

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
CRED = credential({"client_id": "app-1"}, {"client_secret": "s3cret"})
UNAUTHORIZED = UpstreamResponse(401, CIMultiDict())
OK = UpstreamResponse(200, CIMultiDict())


@dataclass
class TokenServer:
    """A tiny token endpoint whose answers a test can change between calls."""

    url: URL = field(default_factory=URL)
    seen: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    raw: bytes | None = None
    expires_in: object = 3600
    delay: float = 0.0
    http: aiohttp.ClientSession = field(init=False)

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.seen.append({"form": form, "authorization": request.headers.get("Authorization")})
        await asyncio.sleep(self.delay)
        if self.raw is not None or self.status != 200:
            return web.Response(status=self.status, body=self.raw or b'{"echo": "s3cret"}')
        if form.get("client_secret", "s3cret") != "s3cret":
            return web.json_response({"error": "invalid_client"}, status=401)
        body: dict[str, object] = {"access_token": f"t{len(self.seen)}", "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)


@pytest.fixture
async def server(aiohttp_server: ServerFactory) -> AsyncIterator[TokenServer]:
    """The token server at ``/oauth/token`` and a pooled session, as ``bind()`` receives it."""
    state = TokenServer()
    app = web.Application()
    app.router.add_post("/oauth/token", state.token)
    state.url = (await aiohttp_server(app)).make_url("/")
    async with aiohttp.ClientSession() as state.http:
        yield state


def make(server: TokenServer, **options: Any) -> OAuth2ClientCredentials:
    opts = OAuth2Options.model_validate(
        {"token_url": "/oauth/token", "token_timeout": 0.5, **options}
    )
    scheme = OAuth2ClientCredentials(opts, UpstreamContext("paynet", server.url, timeout=30))
    scheme.bind(server.http)
    scheme.jitter = lambda step: step  # exact back-off steps; production jitters 50-100 %
    return scheme


async def first_send(scheme: OAuth2ClientCredentials, cred: Credential = CRED) -> str:
    flow = scheme.auth_flow(outbound(), cred)
    sent = await flow.__anext__()
    await flow.aclose()
    return sent.headers["Authorization"]


async def test_token_in_body_is_cached(server: TokenServer) -> None:
    """The form carries grant, id, secret, scope and extras; the token is fetched once."""
    scheme = make(server, scopes=["rpp:merchant", "reports"], token_params={"aud": "x"})
    assert await first_send(scheme) == "Bearer t1"
    assert await first_send(scheme) == "Bearer t1"
    assert scheme.token_requests == 1 and len(server.seen) == 1
    assert server.seen[0]["form"] == {
        "grant_type": "client_credentials",
        "aud": "x",
        "scope": "rpp:merchant reports",
        "client_id": "app-1",
        "client_secret": "s3cret",
    }
    assert server.seen[0]["authorization"] is None


async def test_basic_client_auth_is_form_encoded_first(server: TokenServer) -> None:
    """RFC 6749 2.3.1: id and secret are form-urlencoded, then Base64; the body has neither."""
    cred = credential({"client_id": "id:with space"}, {"client_secret": "p@ss/word+1é"})
    assert await first_send(make(server, client_auth="basic"), cred) == "Bearer t1"
    expected = base64.b64encode(b"id%3Awith+space:p%40ss%2Fword%2B1%C3%A9").decode()
    assert server.seen[0]["authorization"] == f"Basic {expected}"
    assert server.seen[0]["form"] == {"grant_type": "client_credentials"}


async def test_thousand_concurrent_flows_make_one_token_request(server: TokenServer) -> None:
    """Single flight: an empty cache and 1000 concurrent requests cost one token request."""
    server.delay = 0.05
    scheme = make(server, token_timeout=10)  # 1000 flows on a busy CI core: no 0.5 s deadline
    headers = await asyncio.gather(*(first_send(scheme) for _ in range(1000)))
    assert set(headers) == {"Bearer t1"}
    assert len(server.seen) == 1 and scheme.token_requests == 1


@pytest.mark.parametrize(
    "expires_in,margin,reuse_until,refetch_at",
    [(100, 30, 89.9, 90.0), ("100", 30, 89.9, 90.0), (10, 30, 8.9, 9.0), (None, 0, 49.9, 50.0)],
)
async def test_expiry_margin_is_honoured(
    server: TokenServer,
    expires_in: object,
    margin: float,
    reuse_until: float,
    refetch_at: float,
) -> None:
    """A token is sent until ``margin`` (at most a tenth of its life) before expiry, not after."""
    server.expires_in = expires_in
    scheme = make(server, expiry_margin=margin, default_expires_in=50, refresh_at=0.99)
    clock = [1000.0]
    scheme.clock = lambda: clock[0]
    assert await first_send(scheme) == "Bearer t1"
    clock[0] = 1000.0 + reuse_until
    assert await first_send(scheme) == "Bearer t1"
    clock[0] = 1000.0 + refetch_at
    assert await first_send(scheme) == "Bearer t2"


async def test_background_refresh_keeps_a_valid_token_while_the_endpoint_fails(
    server: TokenServer,
) -> None:
    """Past half its life a token is refreshed in the background; a failed refresh keeps it."""
    server.expires_in = 100
    scheme = make(server)
    clock = [0.0]
    scheme.clock = lambda: clock[0]
    assert await first_send(scheme) == "Bearer t1"
    server.status = 500
    for at in (50.0, 60.0, 89.9):
        clock[0] = at
        assert await first_send(scheme) == "Bearer t1"  # still valid: sent, no 502
        await asyncio.sleep(0.05)  # let the background refresh run (and fail)
    assert len(server.seen) >= 2
    server.status = 200
    clock[0] = 200.0  # expired: a request must wait for a fresh token
    fresh = f"Bearer t{len(server.seen) + 1}"
    assert await first_send(scheme) == fresh
    clock[0] = 260.0  # half-life of the new one: it is still sent, a refresh runs behind it
    before = len(server.seen)
    await first_send(scheme)
    await asyncio.sleep(0.05)
    assert len(server.seen) == before + 1
    assert await first_send(scheme) == f"Bearer t{before + 1}"


async def test_401_refreshes_once_and_retries_once(server: TokenServer) -> None:
    """A 401 brings one token request and one retry with the new token; a second 401 ends it."""
    scheme = make(server)
    flow = scheme.auth_flow(outbound("POST", body=b"{}"), CRED)
    assert (await flow.__anext__()).headers["Authorization"] == "Bearer t1"
    retry = await flow.asend(UNAUTHORIZED)
    assert retry.headers["Authorization"] == "Bearer t2" and retry.body == b"{}"
    with pytest.raises(StopAsyncIteration):
        await flow.asend(UNAUTHORIZED)
    assert len(server.seen) == 2


@pytest.mark.parametrize("status", [200, 403, 500])
async def test_other_statuses_end_the_flow(server: TokenServer, status: int) -> None:
    """Only a 401 means the token was refused; nothing else is retried."""
    flow = make(server).auth_flow(outbound(), CRED)
    await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(UpstreamResponse(status, CIMultiDict()))
    assert len(server.seen) == 1


async def test_thousand_concurrent_401s_make_one_refresh(server: TokenServer) -> None:
    """Refresh happens only while the cached token is the one that failed."""
    server.delay = 0.01
    scheme = make(server, token_timeout=10)  # 1000 flows on a busy CI core: no 0.5 s deadline
    flows = [scheme.auth_flow(outbound(), CRED) for _ in range(1000)]
    await asyncio.gather(*(f.__anext__() for f in flows))
    retries: list[OutboundRequest] = await asyncio.gather(*(f.asend(UNAUTHORIZED) for f in flows))
    assert {r.headers["Authorization"] for r in retries} == {"Bearer t2"}
    assert len(server.seen) == 2


async def test_a_replaced_credential_gets_its_own_token(server: TokenServer) -> None:
    """Tokens are cached per (name, version), so a new version never reuses the old token."""
    scheme = make(server)
    assert await first_send(scheme) == "Bearer t1"
    newer = credential({"client_id": "app-1"}, {"client_secret": "s3cret"}, version=2)
    assert await first_send(scheme, newer) == "Bearer t2"
    assert await first_send(scheme, newer) == "Bearer t2"
    other = credential({"client_id": "b"}, {"client_secret": "s3cret"}, name="other")
    assert await first_send(scheme, other) == "Bearer t3"


async def test_failure_hides_body_and_backs_off(server: TokenServer) -> None:
    """A 500 is SC4008 without the body; retries wait 1s, 2s, capped at 3s; success resets."""
    server.status = 500
    scheme = make(server, backoff_initial=1.0, backoff_max=3.0)
    clock = [0.0]
    scheme.clock = lambda: clock[0]

    async def attempt(at: float) -> str:
        clock[0] = at
        with pytest.raises(SidecarError) as info:
            await first_send(scheme)
        assert info.value.code == "SC4008" and "s3cret" not in str(info.value)
        return info.value.message

    assert await attempt(0.0) == "paynet: token endpoint failed (HTTP 500)"
    assert "next try in 0.5s" in await attempt(0.5)
    for at in (1.0, 3.0, 6.0, 9.0):
        await attempt(at)
    assert "next try in 0.1s" in await attempt(11.9)
    assert len(server.seen) == 5
    server.status = 200
    clock[0] = 12.0
    assert await first_send(scheme) == "Bearer t6"
    server.status = 500
    await attempt(1e6)
    assert "next try in 1.0s" in await attempt(1e6)


@pytest.mark.parametrize(
    "raw", [b"<html/>", b'{"token_type": "bearer"}', b'{"access_token": "a\\r\\nb"}', b"[]"]
)
async def test_unusable_token_answers_are_sc4008(server: TokenServer, raw: bytes) -> None:
    """A 200 that is not JSON, lacks access_token, or has one unfit for a header is SC4008."""
    server.raw = raw
    with pytest.raises(SidecarError) as info:
        await first_send(make(server))
    assert info.value.code == "SC4008"


async def test_timeout_and_refused_connection_are_sc4008(
    server: TokenServer, unused_tcp_port: int
) -> None:
    """A token endpoint that is slow or closed fails the request with SC4008."""
    server.delay = 2.0
    with pytest.raises(SidecarError, match="TimeoutError") as info:
        await first_send(make(server))
    assert info.value.code == "SC4008"
    closed = make(server, token_url=f"http://127.0.0.1:{unused_tcp_port}/token")
    with pytest.raises(SidecarError, match="ClientConnectorError"):
        await first_send(closed)


async def test_verify_accepts_and_caches_nothing(server: TokenServer) -> None:
    """A successful token request verifies; the candidate's token is not cached."""
    scheme = make(server)
    await scheme.verify(CRED, server.http)
    assert await first_send(scheme) == "Bearer t2"


@pytest.mark.parametrize("status,raw", [(401, None), (400, b'{"error": "invalid_client"}')])
async def test_verify_rejects_invalid_client(
    server: TokenServer, status: int, raw: bytes | None
) -> None:
    """A 401, or invalid_client in a 400, means the provider said no."""
    if raw is not None:
        server.status, server.raw = status, raw
    bad = credential({"client_id": "app-1"}, {"client_secret": "wrong"})
    with pytest.raises(VerificationFailed, match="paynet - API Invalid credential"):
        await make(server).verify(bad, server.http)


async def test_verify_unreachable_or_broken_is_sc2006(
    server: TokenServer, unused_tcp_port: int
) -> None:
    """A 500 or a closed port cannot tell valid from invalid: SC2006."""
    server.status = 500
    for scheme in (
        make(server),
        make(server, token_url=f"http://127.0.0.1:{unused_tcp_port}/token"),
    ):
        with pytest.raises(SidecarError) as info:
            await scheme.verify(CRED, server.http)
        assert info.value.code == "SC2006" and "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "options,error",
    [
        ({"token_url": "ftp://x/token"}, "absolute https URL or a path"),
        ({"token_url": "https:///token"}, "absolute https URL or a path"),
        ({"token_url": ""}, "absolute https URL or a path"),
        ({"token_url": "/t", "token_params": {"client_secret": "x"}}, "client_secret"),
        ({"token_url": "/t", "bogus": 1}, "extra"),
        ({}, "token_url"),
    ],
)
def test_options_are_validated(options: dict[str, Any], error: str) -> None:
    """Bad token URLs, reserved form keys and unknown keys are refused at load."""
    with pytest.raises(ValueError, match=error):
        OAuth2Options.model_validate(options)


def test_token_url_resolution_and_fields() -> None:
    """A path joins the upstream URL; an absolute URL stands; fields match the design."""
    ctx = UpstreamContext("paynet", URL("https://api.paynet.test/base"))
    relative = OAuth2ClientCredentials(OAuth2Options(token_url="v1/auth/token"), ctx)
    assert str(relative.token_url) == "https://api.paynet.test/base/v1/auth/token"
    absolute = OAuth2ClientCredentials(OAuth2Options(token_url="https://auth.test/t"), ctx)
    assert str(absolute.token_url) == "https://auth.test/t"
    assert (relative.public_fields, relative.secret_fields) == (("client_id",), ("client_secret",))
    assert relative.replays_request and not relative.requires_request_body
    properties = OAuth2Options.model_json_schema()["properties"].values()
    assert all(p.get("description") for p in properties)


@pytest.mark.parametrize(
    "path",
    ["oauth/token", "/", "/oauth/../token", "/oauth/%74oken", "/oauth//token", "/t?x=1", "/t#f"],
)
def test_token_path_is_validated(path: str) -> None:
    """token_path must be a plain absolute path: no dots, escapes, empty segments or query."""
    with pytest.raises(ValueError, match="token_path"):
        OAuth2Options.model_validate({"token_url": "/t", "token_path": path})


def test_token_path_defaults_and_trailing_slash() -> None:
    """Emulation is off by default; a trailing slash is dropped, extras are a closed list."""
    assert OAuth2Options(token_url="/t").token_path is None
    opts = OAuth2Options.model_validate({"token_url": "/t", "token_path": "/oauth/token/"})
    assert (opts.token_path, opts.token_lifetime, opts.token_extras) == ("/oauth/token", 3600, [])
    with pytest.raises(ValueError, match="token_extras"):
        OAuth2Options.model_validate({"token_url": "/t", "token_extras": ["refresh_token"]})
