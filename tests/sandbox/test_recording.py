"""The request log every peer keeps: bounded, raw, and blind to admin calls."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient

from sidecar.sandbox.api_key_peer import API_KEY_STATE, ApiKeyPeerConfig, make_app
from sidecar.sandbox.recording import MAX_SEEN


async def test_log_keeps_the_last_hundred(aiohttp_client: AiohttpClient) -> None:
    """After 105 requests only the newest 100 are kept, oldest first."""
    client = await aiohttp_client(make_app(ApiKeyPeerConfig(required_headers={"K": "v"})))
    for i in range(MAX_SEEN + 5):
        async with client.get(f"/n/{i}", headers={"K": "v"}):
            pass
    seen = client.app[API_KEY_STATE].seen
    assert len(seen) == MAX_SEEN == 100
    assert (seen[0].path, seen[-1].path) == ("/n/5", "/n/104")


async def test_log_records_raw_request(aiohttp_client: AiohttpClient) -> None:
    """Method, raw path, raw query, headers (case-insensitive) and body bytes are kept."""
    client = await aiohttp_client(make_app(ApiKeyPeerConfig(required_headers={"K": "v"})))
    async with client.post("/a%2Fb?q=%20", headers={"K": "v"}, data=b"secret-body"):
        pass
    (seen,) = client.app[API_KEY_STATE].seen
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "POST",
        "/a%2Fb",
        "q=%20",
        b"secret-body",
    )
    assert seen.headers["k"] == "v"
    assert seen.contains("secret-body") and not seen.contains("absent")


async def test_refused_requests_are_logged(aiohttp_client: AiohttpClient) -> None:
    """A refused request is evidence too: it is logged before the auth check."""
    client = await aiohttp_client(make_app(ApiKeyPeerConfig(required_headers={"K": "v"})))
    async with client.get("/x", headers={"K": "leaked-value"}) as resp:
        assert resp.status == 401
    assert client.app[API_KEY_STATE].saw("leaked-value")


async def test_admin_calls_not_logged(aiohttp_client: AiohttpClient) -> None:
    """Calls under /_sandbox/ are the test harness talking, not provider traffic."""
    client = await aiohttp_client(make_app(ApiKeyPeerConfig(required_headers={"K": "v"})))
    async with client.get("/_sandbox/anything"):
        pass
    assert not client.app[API_KEY_STATE].seen
