"""PlaceToPay: published tranKey vectors, body signing driven by hand, verify() on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes import placetopay
from sidecar.schemes.base import Credential, OutboundRequest, UpstreamContext, UpstreamResponse
from sidecar.schemes.placetopay import PlaceToPay, PlaceToPayOptions, make_auth, tran_key
from tests.unit.conftest import credential, outbound

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

VECTOR_NONCE = b"ifYEPnAcJbpDVR1t"
VECTOR_SEED = "2016-10-26T21:37:00+00:00"
CTX = UpstreamContext(name="placetopay", url=URL("https://checkout.test"))
CRED = credential({"login": "site-login"}, {"secret_key": "ABCD1234"})


def scheme(hash: str = "sha256", upstream: UpstreamContext = CTX) -> PlaceToPay:
    return PlaceToPay(PlaceToPayOptions.model_validate({"hash": hash}), upstream)


def expected(auth: dict[str, str], secret: str, hash: str) -> str:
    """tranKey recomputed from the sent nonce and seed, independently of the scheme."""
    raw = base64.b64decode(auth["nonce"])
    digest = hashlib.new(hash, raw + auth["seed"].encode() + secret.encode()).digest()
    return base64.b64encode(digest).decode()


async def sign(s: PlaceToPay, body: bytes | None, headers: dict[str, str] | None = None) -> Any:
    request = outbound("POST", "https://checkout.test/api/session", body, headers)
    return await s.auth_flow(request, CRED).__anext__()


def test_published_vectors_sha1_and_sha256() -> None:
    """The dnetix/redirection vectors and the docs' SHA-256 variant come out exactly."""
    assert tran_key(VECTOR_NONCE, VECTOR_SEED, "ABCD1234", "sha1") == "Xi5xrRwrqPU21WE2JI4hyMaCvQ8="
    assert (
        tran_key(VECTOR_NONCE, VECTOR_SEED, "ABCD1234", "sha256")
        == "NDlpEEAIe8sbKZ6mGWQrZwbyBB62J1LcyP/a/o7LRqY="
    )


def test_make_auth_with_vector_inputs() -> None:
    """make_auth carries Base64(rawNonce) as nonce and the seed unchanged."""
    auth = make_auth("site-login", "ABCD1234", "sha256", raw_nonce=VECTOR_NONCE, seed=VECTOR_SEED)
    assert auth == {
        "login": "site-login",
        "tranKey": "NDlpEEAIe8sbKZ6mGWQrZwbyBB62J1LcyP/a/o7LRqY=",
        "nonce": "aWZZRVBuQWNKYnBEVlIxdA==",
        "seed": VECTOR_SEED,
    }


def test_make_auth_fresh_nonce_and_seed_with_offset() -> None:
    """Each call draws 16 new random bytes and a seconds-precision seed with a UTC offset."""
    first, second = make_auth("l", "k", "sha256"), make_auth("l", "k", "sha256")
    assert len(base64.b64decode(first["nonce"])) == 16
    assert first["nonce"] != second["nonce"]
    seed = datetime.fromisoformat(first["seed"])
    assert seed.tzinfo is not None and seed.microsecond == 0
    assert first["tranKey"] == expected(first, "k", "sha256")


async def test_flow_puts_auth_first_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The body gains auth (first, compact JSON), keeps other keys, and the seed is "now"."""
    fixed = datetime.fromisoformat("2024-05-01T10:20:30.123456-05:00")
    monkeypatch.setattr(placetopay, "now", lambda: fixed)
    monkeypatch.setattr(placetopay, "_SEED", (0, ""))  # nothing formatted this second yet
    body = json.dumps(
        {"locale": "es_CO", "payment": {"reference": "r-1", "amount": {"total": 10}}}
    ).encode()
    sent = await sign(scheme(), body)
    assert sent.body.startswith(b'{"auth":{"login":"site-login",') and b" " not in sent.body
    parsed = json.loads(sent.body)
    assert list(parsed) == ["auth", "locale", "payment"]
    assert parsed["payment"] == {"reference": "r-1", "amount": {"total": 10}}
    assert parsed["auth"]["seed"] == "2024-05-01T10:20:30-05:00"
    assert parsed["auth"]["tranKey"] == expected(parsed["auth"], "ABCD1234", "sha256")


async def test_flow_replaces_app_auth_and_fixes_headers() -> None:
    """An auth the app sent is overwritten; Content-Type is JSON and Content-Length is dropped."""
    body = b'{"auth": {"login": "app", "tranKey": "x"}, "x": "\xc3\xa9"}'
    sent = await sign(scheme("sha1"), body, {"Content-Type": "text/plain", "Content-Length": "99"})
    parsed = json.loads(sent.body)
    assert parsed["auth"]["login"] == "site-login"
    assert parsed["auth"]["tranKey"] == expected(parsed["auth"], "ABCD1234", "sha1")
    assert parsed["x"] == "é"
    assert sent.headers.getall("Content-Type") == ["application/json"]
    assert "Content-Length" not in sent.headers


@pytest.mark.parametrize("body", [None, b"", b"[1, 2]", b"not json", b'"auth"', b"\xff"])
async def test_flow_refuses_a_body_that_is_not_a_json_object(body: bytes | None) -> None:
    """Anything but a JSON object is SC4009, and the message carries no secret."""
    with pytest.raises(SidecarError) as info:
        await sign(scheme(), body)
    assert info.value.code == "SC4009"
    assert "ABCD1234" not in str(info.value)


async def test_flow_yields_once() -> None:
    """PlaceToPay has nothing to refresh, so even a 401 ends the flow."""
    flow = scheme().auth_flow(
        OutboundRequest("POST", CTX.join("api/session"), CIMultiDict(), b"{}"), CRED
    )
    await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(UpstreamResponse(401, CIMultiDict()))


def test_declared_fields_and_options() -> None:
    """Fields match the design table; unknown option keys are refused."""
    s = scheme()
    assert (s.public_fields, s.secret_fields, s.optional_fields) == (
        ("login",),
        ("secret_key",),
        (),
    )
    assert s.requires_request_body and not s.replays_request
    with pytest.raises(ValueError, match="extra"):
        PlaceToPayOptions.model_validate({"hash": "sha256", "bogus": 1})
    with pytest.raises(ValueError):
        PlaceToPayOptions.model_validate({"hash": "md5"})


def peer(seen: list[dict[str, Any]], status: int = 0) -> web.Application:
    """A tiny PlaceToPay: checks auth like the docs, then says the session does not exist."""

    async def query(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        seen.append({"path": request.path, "type": request.content_type, "body": body})
        if status:
            return web.json_response({"status": {"message": "boom"}}, status=status)
        auth = body["auth"]
        if auth["login"] != "site-login":
            return web.json_response(
                {"status": {"message": "Authentication failed 101"}}, status=401
            )
        if auth["tranKey"] != expected(auth, "ABCD1234", "sha256"):
            return web.json_response(
                {"status": {"message": "Authentication failed 102"}}, status=401
            )
        return web.json_response(
            {"status": {"message": "The requested session does not exist"}}, status=404
        )

    app = web.Application()
    app.router.add_post(r"/api/session/{id:\d+}", query)
    return app


async def verify(server: TestServer, cred: Credential, timeout: float = 5.0) -> None:
    ctx = UpstreamContext(name="placetopay", url=server.make_url("/"), timeout=timeout)
    async with aiohttp.ClientSession() as http:
        await scheme(upstream=ctx).verify(cred, http)


async def test_verify_accepts_a_good_credential(aiohttp_server: ServerFactory) -> None:
    """A 404 for the impossible session means the auth was accepted; only auth is sent."""
    seen: list[dict[str, Any]] = []
    await verify(await aiohttp_server(peer(seen)), CRED)
    assert seen[0]["path"] == "/api/session/0" and seen[0]["type"] == "application/json"
    assert list(seen[0]["body"]) == ["auth"]


@pytest.mark.parametrize(
    "fields,secrets",
    [
        ({"login": "site-login"}, {"secret_key": "wrong"}),
        ({"login": "nobody"}, {"secret_key": "ABCD1234"}),
    ],
)
async def test_verify_rejects_codes_101_and_102(
    aiohttp_server: ServerFactory, fields: dict[str, str], secrets: dict[str, str]
) -> None:
    """A 401 ending in an auth code is VerificationFailed with the Pismo-style message."""
    server = await aiohttp_server(peer([]))
    with pytest.raises(VerificationFailed, match="placetopay - API Invalid credential"):
        await verify(server, credential(fields, secrets))


async def test_verify_server_error_and_unreachable_are_sc2006(
    aiohttp_server: ServerFactory, unused_tcp_port: int
) -> None:
    """A 5xx or a closed port cannot tell valid from invalid: SC2006, not a verdict."""
    with pytest.raises(SidecarError) as info:
        await verify(await aiohttp_server(peer([], status=503)), CRED)
    assert info.value.code == "SC2006"
    ctx = UpstreamContext(name="placetopay", url=URL(f"http://127.0.0.1:{unused_tcp_port}"))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(SidecarError) as info:
            await scheme(upstream=ctx).verify(CRED, http)
    assert info.value.code == "SC2006"


async def test_verify_timeout_is_sc2006(aiohttp_server: ServerFactory) -> None:
    """A provider slower than the upstream timeout is unreachable, not invalid."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/session/0", slow)
    with pytest.raises(SidecarError) as info:
        await verify(await aiohttp_server(app), CRED, timeout=0.2)
    assert info.value.code == "SC2006"


def test_seed_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within a second the seed text is reused; the next second formats a new one."""
    clock = [1_700_000_000.2]
    calls: list[int] = []

    def fake_now() -> datetime:
        calls.append(1)
        return datetime.fromtimestamp(clock[0]).astimezone()

    monkeypatch.setattr(placetopay, "now", fake_now)
    monkeypatch.setattr(placetopay.time, "time", lambda: clock[0])
    monkeypatch.setattr(placetopay, "_SEED", (0, ""))
    first = placetopay.current_seed()
    clock[0] += 0.7
    assert placetopay.current_seed() == first and len(calls) == 1
    clock[0] += 0.2  # the next second
    second = placetopay.current_seed()
    assert second != first and len(calls) == 2
    assert datetime.fromisoformat(second) - datetime.fromisoformat(first) == timedelta(seconds=1)
