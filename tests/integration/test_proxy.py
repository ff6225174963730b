"""The proxy pipeline against real loopback upstreams: routing, refusals, streaming, errors."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar, api_key_upstream

KEY = "SECR_proxy_key_1"


class Echo:
    """A loopback provider that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.connections = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/slow", self.slow)
        app.router.add_route("*", "/redirect", self.redirect)
        app.router.add_route("*", "/big", self.big)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"path": request.raw_path, "headers": dict(request.headers), "body": body})
        status = 200 if request.headers.get("Authorization") == KEY else 401
        return web.json_response(
            {"path": request.raw_path, "len": len(body)},
            status=status,
            headers={"X-Upstream": "yes", "Connection": "keep-alive"},
        )

    async def slow(self, _request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def redirect(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/elsewhere")

    async def big(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 16384)
        await resp.write_eof()
        return resp


@pytest.fixture
async def echo_server(aiohttp_server: Any) -> tuple[Echo, str]:
    echo = Echo()
    server = await aiohttp_server(echo.app())
    return echo, str(server.make_url("/")).rstrip("/")


def upstream(url: str, **extra: Any) -> dict[str, Any]:
    return api_key_upstream(url, "echo", **{"hosts": ["api.provider.test"], "timeout": 1, **extra})


@pytest.fixture
async def sidecar(
    echo_server: tuple[Echo, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> Sidecar:
    _, url = echo_server
    sc = await make_sidecar(make_config({"echo": upstream(url)}))
    r = await sc.admin.put(
        "/v1/credentials/echo", json={"upstream": "echo", "fields": {"api_key": KEY}}
    )
    assert r.status == 201
    return sc


async def test_path_mode_injects_key_and_strips_hop_by_hop(
    sidecar: Sidecar, echo_server: tuple[Echo, str]
) -> None:
    """/<upstream>/<path>?q reaches the upstream with the key; hop-by-hop headers dropped both ways."""
    echo, _ = echo_server
    raw = f"http://{sidecar.proxy.host}:{sidecar.proxy.port}/echo/v1/pay%20ments?x=1&y=%2F"
    r = await sidecar.proxy.session.post(
        URL(raw, encoded=True),
        data=b"hello",
        headers={
            "Proxy-Authorization": "Basic zzz",
            "X-Custom": "kept",
            "Connection": "X-Drop",
            "X-Drop": "1",
        },
    )
    assert r.status == 200 and r.headers["X-Upstream"] == "yes"
    seen = echo.seen[-1]
    assert seen["path"] == "/v1/pay%20ments?x=1&y=%2F" and seen["body"] == b"hello"
    assert seen["headers"]["Authorization"] == KEY and seen["headers"]["X-Custom"] == "kept"
    assert "Proxy-Authorization" not in seen["headers"] and "X-Drop" not in seen["headers"]


async def test_forward_proxy_mode_routes_by_host(
    sidecar: Sidecar, echo_server: tuple[Echo, str]
) -> None:
    """An absolute-form target for a configured host is proxied like path mode."""
    echo, _ = echo_server
    r = await sidecar.proxy.get("/ignored", headers={"Host": "api.provider.test"})
    assert r.status == 403  # origin-form is path mode: 'ignored' is no upstream
    reader, writer = await asyncio.open_connection(sidecar.proxy.host, sidecar.proxy.port)
    writer.write(
        b"GET http://api.provider.test/v1/balance HTTP/1.1\r\nHost: api.provider.test\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and echo.seen[-1]["path"] == "/v1/balance"


async def test_unconfigured_host_is_403_and_no_connection(sidecar: Sidecar) -> None:
    """A host no upstream declares gets 403 SC4001; the target sees no connection."""
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(8)
    target.setblocking(False)
    port = target.getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(sidecar.proxy.host, sidecar.proxy.port)
        writer.write(
            f"GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
        writer.close()
        assert raw.startswith(b"HTTP/1.1 403") and b"SC4001" in raw
        with pytest.raises(BlockingIOError):
            target.accept()
    finally:
        target.close()
    r = await sidecar.proxy.get("/not-an-upstream/x")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (403, "SC4001")


async def test_connect_is_refused_without_interception(sidecar: Sidecar) -> None:
    """CONNECT to a host nobody configured never becomes a tunnel."""
    reader, writer = await asyncio.open_connection(sidecar.proxy.host, sidecar.proxy.port)
    writer.write(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    assert line.startswith(b"HTTP/1.1 403")


async def test_dot_segments_are_refused(sidecar: Sidecar) -> None:
    """A path cannot climb out of the upstream's base path."""
    reader, writer = await asyncio.open_connection(sidecar.proxy.host, sidecar.proxy.port)
    writer.write(b"GET /echo/a/../../b HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400") and b"SC4011" in raw


async def test_wrong_key_rejection_reaches_the_app_unchanged(sidecar: Sidecar) -> None:
    """After a replace with a key the provider refuses, the provider's 401 is relayed as is."""
    rt = sidecar.runtime
    await rt.store.put("echo", "echo", "sandbox", {"api_key": "SECR_other"}, {})
    r = await sidecar.proxy.get("/echo/v1/x")
    assert (
        r.status == 401 and "X-Sidecar-Error" not in r.headers and r.headers["X-Upstream"] == "yes"
    )


async def test_replace_takes_effect_on_next_request(
    sidecar: Sidecar, echo_server: tuple[Echo, str]
) -> None:
    """A replace through the admin API is what the very next proxied request uses."""
    echo, _ = echo_server
    await sidecar.runtime.store.put("echo", "echo", "sandbox", {"api_key": "SECR_v2"}, {})
    await sidecar.proxy.get("/echo/v1/x")
    assert echo.seen[-1]["headers"]["Authorization"] == "SECR_v2"


async def test_disabled_missing_and_wrong_environment_refused_before_sending(
    sidecar: Sidecar, echo_server: tuple[Echo, str]
) -> None:
    """Disabled -> 403 SC4003, deleted -> 503 SC4002, and nothing reaches the provider."""
    echo, _ = echo_server
    before = len(echo.seen)
    await sidecar.admin.patch("/v1/credentials/echo", json={"enabled": False})
    r = await sidecar.proxy.get("/echo/v1/x")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (403, "SC4003")
    await sidecar.admin.delete("/v1/credentials/echo")
    r = await sidecar.proxy.get("/echo/v1/x")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (503, "SC4002")
    assert len(echo.seen) == before


async def test_live_credential_on_sandbox_upstream_refused(
    echo_server: tuple[Echo, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A credential stored for live never signs a request to a sandbox upstream."""
    echo, url = echo_server
    sc = await make_sidecar(make_config({"echo": upstream(url, environment="live")}))
    await sc.admin.put(
        "/v1/credentials/echo", json={"upstream": "echo", "fields": {"api_key": KEY}}
    )
    sc.runtime.upstreams["echo"].cfg = sc.runtime.upstreams["echo"].cfg.model_copy(
        update={"environment": "sandbox"}
    )
    r = await sc.proxy.get("/echo/v1/x")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (403, "SC4004")
    assert echo.seen == []


async def test_timeout_is_504_and_connection_failure_502(
    sidecar: Sidecar, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A slow upstream gives 504 SC4006; a closed port gives 502 SC4007."""
    r = await sidecar.proxy.get("/echo/slow")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (504, "SC4006")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    sc = await make_sidecar(make_config({"echo": upstream(f"http://127.0.0.1:{dead}")}))
    await sc.runtime.store.put("echo", "echo", "sandbox", {"api_key": KEY}, {})
    r = await sc.proxy.get("/echo/x")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (502, "SC4007")


async def test_redirects_are_relayed_not_followed(sidecar: Sidecar) -> None:
    """A 302 goes back to the app; the sidecar never follows it with credentials on."""
    r = await sidecar.proxy.get("/echo/redirect", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "http://127.0.0.1:1/elsewhere"


async def test_large_response_streams_through(sidecar: Sidecar) -> None:
    """A 1 MiB chunked response arrives whole."""
    r = await sidecar.proxy.get("/echo/big")
    assert len(await r.read()) == 64 * 16384


async def test_control_characters_in_headers_refused(
    sidecar: Sidecar, echo_server: tuple[Echo, str]
) -> None:
    """A header value with a control character is refused, never forwarded."""
    echo, _ = echo_server
    before = len(echo.seen)
    reader, writer = await asyncio.open_connection(sidecar.proxy.host, sidecar.proxy.port)
    writer.write(b"GET /echo/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x01b\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    assert raw.split(b" ")[1] == b"400"  # refused by aiohttp's parser or by the proxy
    assert len(echo.seen) == before


async def test_steady_state_makes_zero_vault_requests(sidecar: Sidecar) -> None:
    """1,000 proxied calls after warm-up: the Vault request counter does not move."""
    await sidecar.proxy.get("/echo/warm")
    before = sidecar.vault_requests
    sem = asyncio.Semaphore(32)

    async def call(i: int) -> int:
        async with sem:
            r = await sidecar.proxy.get(f"/echo/v1/{i}")
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(call(i) for i in range(1000)))
    assert statuses.count(200) == 1000
    assert sidecar.vault_requests == before
