"""The upstream side of the proxy against hostile and failing providers, through the sidecar.

Each provider here is our own on loopback: a raw asyncio server for bytes no real server sends
(a 1xx with a body, a close mid-request), or the shipped OAuth2 sandbox peer. The app side is a
raw socket too, so the assertions are on the exact bytes the app receives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest

from sidecar.errors import SidecarError
from sidecar.proxy.listener import error_answer
from sidecar.sandbox import oauth2
from sidecar.sandbox.oauth2 import OAUTH2_STATE
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar, api_key_upstream

KEY = "SECR_upstream_safety_1"
SENT = "X-Sidecar-Request-Sent"
PAYNET = ("paynet-client", "SECR_paynet_client_secret")

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawProvider:
    """A bare TCP provider: what it does per connection is the test's ``serve``."""

    def __init__(self) -> None:
        self.connections = 0
        self.received: list[bytes] = []  # per connection, every byte read
        self.closed = asyncio.Event()  # set when a connection's handler has closed it

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.received[-1] += head
        return head

    async def read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        data = await reader.readexactly(n)
        self.received[-1] += data
        return data


@asynccontextmanager
async def raw_provider(
    serve: Callable[[RawProvider, Any, Any], Awaitable[None]],
) -> AsyncIterator[tuple[RawProvider, int]]:
    """Start a raw provider on loopback; yields it and its port."""
    state = RawProvider()
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        state.connections += 1
        state.received.append(b"")
        try:
            await serve(state, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()
            state.closed.set()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield state, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def sidecar_for(
    make_config: MakeConfig, make_sidecar: MakeSidecar, url: str, **extra: Any
) -> Sidecar:
    """A sidecar with one api_key upstream ``up`` at ``url``, its credential stored."""
    sc = await make_sidecar(make_config({"up": api_key_upstream(url, "up", **extra)}))
    await sc.runtime.store.put("up", "up", "sandbox", {"api_key": KEY}, {})
    return sc


async def exchange(sc: Sidecar, data: bytes) -> bytes:
    """Send raw bytes to the proxy listener and read until it closes."""
    reader, writer = await asyncio.open_connection(sc.proxy.host, sc.proxy.port)
    writer.write(data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    return raw


def expected_refusal(code: str, message: str, sent: str) -> bytes:
    """The sidecar's own answer for ``code``, as the listener frames it (connection closing)."""
    err = SidecarError(code, message)
    err.headers[SENT] = sent
    return error_answer(err, False)[0]


def header(raw: bytes, name: str) -> str | None:
    """One header's value in a raw answer's head, or None."""
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.decode().lower() == name.lower():
            return value.decode()
    return None


FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET /up/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 150 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHELLO\r\n0\r\n\r\n",
        b"HTTP/1.1 199 X\r\nContent-Length: 5\r\n\r\nHELLO",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",  # framed, even if empty
    ],
    ids=["chunked", "content-length", "empty-length"],
)
async def test_interim_answer_with_a_body_is_502_and_never_reaches_the_app(
    make_config: MakeConfig, make_sidecar: MakeSidecar, interim: bytes
) -> None:
    """A 1xx carrying a body is 502 SC4025 to the app, none of its bytes, connection dropped."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        await state.read_head(reader)
        writer.write(interim + FINAL)
        await writer.drain()
        assert await reader.read() == b""  # the sidecar discards the connection

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET)
        message = "Upstream 127.0.0.1 sent a 1xx answer with a body"
        assert raw == expected_refusal("SC4025", message, "complete")
        assert b"HELLO" not in raw and b"ok" not in raw.split(b"\r\n\r\n", 1)[1]
        await asyncio.wait_for(provider.closed.wait(), 5)
        pool = sc.runtime.upstreams["up"].pool
        assert pool is not None and (pool.in_use, pool.idle_count) == (0, 0)


async def test_plain_interim_answers_are_skipped(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """100 and 103 without a body are dropped; the app gets exactly the final answer."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        await state.read_head(reader)
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + FINAL
        )
        await reader.read()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET)
        assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def test_interim_with_connection_close_is_skipped(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A 103 saying Connection: close is still only an interim answer (RFC 9110 §15.2): the
    app gets the final one, not a 502."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        await state.read_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nConnection: close\r\n\r\n" + FINAL)
        await reader.read()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET)
        assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def test_refusal_of_head_has_no_body_and_keeps_the_next_answer_in_place(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """An answer with Transfer-Encoding: gzip is 502 SC4029; to HEAD it carries no body (RFC 9110
    §9.3.2), so the pipelined GET's answer after it is read as itself."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz")
        else:
            writer.write(FINAL)
        await writer.drain()
        await reader.read()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, b"HEAD /up/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + GET)
        err = SidecarError("SC4029", "Upstream 127.0.0.1 sent an unrelayable coding")
        err.headers[SENT] = "complete"
        refusal = error_answer(err, True, head=True)[0]
        assert refusal.endswith(b"\r\n\r\n") and header(refusal, "Content-Length") != "0"
        assert (
            raw == refusal + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )


# --------------------------------------------------------------------------- was it sent?

POST_HEAD = (
    b"POST /up/pay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
)


async def test_request_sent_none_when_the_upstream_closes_before_reading(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """An upstream that closes at accept, before the TLS handshake: 502 and ``none``."""

    async def serve(_state: RawProvider, _reader: Any, _writer: Any) -> None:
        return None  # closed at once: not a byte read

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"https://127.0.0.1:{port}")
        raw = await exchange(sc, POST_HEAD + b"0123456789")
        assert raw.startswith(b"HTTP/1.1 502 ") and header(raw, "X-Sidecar-Error") == "SC4007"
        assert header(raw, SENT) == "none"
        assert provider.received == [b""]


async def test_request_sent_partial_when_the_upstream_closes_mid_body(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """The upstream reads the head and 4 of 10 body bytes, then closes: 502 and ``partial``."""

    async def serve(state: RawProvider, reader: Any, _writer: Any) -> None:
        await state.read_head(reader)
        await state.read(reader, 4)

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        pool = sc.runtime.upstreams["up"].pool
        assert pool is not None
        reader, writer = await asyncio.open_connection(sc.proxy.host, sc.proxy.port)
        writer.write(POST_HEAD + b"0123")
        await asyncio.wait_for(provider.closed.wait(), 5)
        for _ in range(500):  # until the sidecar has seen the close (its slot is freed)
            if pool.in_use == 0:
                break
            await asyncio.sleep(0.01)
        writer.write(b"456789")  # the rest of the body, which the upstream will never get
        raw = await reader.read()
        writer.close()
        assert raw.startswith(b"HTTP/1.1 502 ") and header(raw, "X-Sidecar-Error") == "SC4007"
        assert header(raw, SENT) == "partial"
        assert provider.received[0].endswith(b"\r\n\r\n0123")


async def test_request_sent_complete_when_the_upstream_read_it_all(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """The upstream reads the whole POST and closes without an answer: 502 and ``complete``."""

    async def serve(state: RawProvider, reader: Any, _writer: Any) -> None:
        await state.read_head(reader)
        await state.read(reader, 10)

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, POST_HEAD + b"0123456789")
        assert raw.startswith(b"HTTP/1.1 502 ") and header(raw, "X-Sidecar-Error") == "SC4007"
        assert header(raw, SENT) == "complete"
        assert provider.received[0].endswith(b"\r\n\r\n0123456789")


async def test_timeout_after_the_whole_request_says_complete(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A 504 for no answer in time also says the request went out whole."""

    async def serve(state: RawProvider, reader: Any, _writer: Any) -> None:
        await state.read_head(reader)
        await reader.read()  # never answers

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}", timeout=0.3)
        raw = await exchange(sc, GET)
        assert raw.startswith(b"HTTP/1.1 504 ") and header(raw, "X-Sidecar-Error") == "SC4006"
        assert header(raw, SENT) == "complete"


# --------------------------------------------------------------------------- pool limits


async def test_pool_full_is_503_after_pool_timeout_and_nothing_is_sent(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """With max_connections 1 held by a slow request, a second waits pool_timeout, then 503."""
    release = asyncio.Event()

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        while True:
            await state.read_head(reader)
            await release.wait()
            writer.write(FINAL)
            await writer.drain()

    async with raw_provider(serve) as (provider, port):
        url = f"http://127.0.0.1:{port}"
        sc = await sidecar_for(
            make_config, make_sidecar, url, max_connections=1, pool_timeout=0.2, timeout=10
        )
        slow = asyncio.create_task(exchange(sc, GET.replace(b"/x", b"/slow")))
        while not provider.received or not provider.received[0]:
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        raw = await exchange(sc, GET.replace(b"/x", b"/fast"))
        print(f"pool full: 503 after {asyncio.get_running_loop().time() - started:.3f}s")
        assert raw.startswith(b"HTTP/1.1 503 ") and header(raw, "X-Sidecar-Error") == "SC4026"
        assert header(raw, SENT) == "none"
        assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["code"] == "SC4026"
        release.set()
        assert (await slow).endswith(b"\r\n\r\nok")
        assert provider.connections == 1
        assert b"/fast" not in b"".join(provider.received)
        assert b"".join(provider.received).count(b"GET /") == 1


# --------------------------------------------------------------------------- auth driver


async def oauth2_sidecar(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar, **extra: Any
) -> tuple[Any, Sidecar]:
    """The sandbox OAuth2 peer behind a sidecar whose pool holds two connections."""
    app = oauth2.make_app(oauth2.OAuth2Config(clients=dict([PAYNET])))
    server = await aiohttp_server(app)
    upstream = {
        "url": str(server.make_url("/")).rstrip("/"),
        "scheme": "oauth2_client_credentials",
        "token_url": "/v1/picasso-guard/auth/token",
        "backoff_initial": 30,
        "credential": "paynet",
        "environment": "sandbox",
        "max_connections": 2,
        "pool_timeout": 0.5,
        **extra,
    }
    sc = await make_sidecar(make_config({"paynet": upstream}))
    fields = {"client_id": PAYNET[0], "client_secret": PAYNET[1]}
    await sc.runtime.store.put("paynet", "paynet", "sandbox", fields, {})
    return app, sc


async def test_a_failed_refresh_after_401_leaks_no_connection(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Pool of 2, three 401s whose refresh fails (then backs off): three 502s, nothing leaked."""
    app, sc = await oauth2_sidecar(aiohttp_server, make_config, make_sidecar)
    r = await sc.proxy.get("/paynet/v1/x")
    assert r.status == 200
    state = app[OAUTH2_STATE]
    state.revoke_all()  # every request now gets a 401 ...
    state.fail_token_requests = 100  # ... and the refresh fails, then waits in back-off
    for _ in range(3):
        r = await sc.proxy.get("/paynet/v1/x")
        assert (r.status, r.headers["X-Sidecar-Error"]) == (502, "SC4008")
        assert r.headers[SENT] == "complete"  # the 401'd attempt went out whole
    pool = sc.runtime.upstreams["paynet"].pool
    assert pool is not None and pool.in_use == 0 and pool.idle_count <= 2
    assert state.rejected == 3
    text = await (await sc.admin.get("/metrics")).text()
    failed = 'sidecar_token_fetches_total{outcome="failed",upstream="paynet"}'
    assert f"{failed} {float(state.injected_failures)}" in text
    assert state.injected_failures >= 1
