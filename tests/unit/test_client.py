"""sidecar.http1 against real local servers: framing, reuse, limits, flow control, timeouts, TLS.

Every test builds its own servers (no fixtures), so ``test_under_uvloop`` can run the same
coroutines again on uvloop, the loop the sidecar uses in production.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import uvloop
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from sidecar.proxy.client import Pool, Response, UpstreamConnectionError, UpstreamTimeout

MiB = 1024 * 1024
BIG = os.urandom(5 * MiB)
BIG_SHA = hashlib.sha256(BIG).hexdigest()


class Origin:
    """What a test server saw."""

    def __init__(self) -> None:
        self.url = URL()
        self.peers: set[int] = set()  # client ports: one per connection
        self.connections = 0  # raw servers: accepted connections
        self.active = 0
        self.max_active = 0
        self.order: list[int] = []
        self.seen: list[bytes] = []  # raw servers: request heads as received


# --------------------------------------------------------------------------- aiohttp origin


def _app(state: Origin) -> web.Application:
    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        assert request.transport is not None
        state.peers.add(request.transport.get_extra_info("peername")[1])
        state.active += 1
        state.max_active = max(state.max_active, state.active)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            state.active -= 1

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "target": request.raw_path,
                "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
                "length": len(body),
                "sha": hashlib.sha256(body).hexdigest(),
            }
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        out.enable_chunked_encoding()
        await out.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await out.write(part)
            await asyncio.sleep(0.01)
        await out.write_eof()
        return out

    async def big(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse()
        out.content_length = len(BIG)
        await out.prepare(request)
        for i in range(0, len(BIG), 256 * 1024):
            await out.write(BIG[i : i + 256 * 1024])
        await out.write_eof()
        return out

    async def upload(request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        async for chunk in request.content.iter_chunked(64 * 1024):
            digest.update(chunk)
        out = web.StreamResponse(
            headers={
                "X-Upload-Sha": digest.hexdigest(),
                "X-TE": request.headers.get("Transfer-Encoding", ""),
            }
        )
        out.enable_chunked_encoding()
        await out.prepare(request)
        for i in range(0, len(BIG), 100_000):
            await out.write(BIG[i : i + 100_000])
        await out.write_eof()
        return out

    async def cookies(request: web.Request) -> web.Response:
        out = web.Response(text="c")
        out.headers.add("Set-Cookie", "a=1")
        out.headers.add("X-Mid", "m")
        out.headers.add("Set-Cookie", "b=2")
        return out

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["n"]))

    async def head(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(text="slow")

    async def order(request: web.Request) -> web.Response:
        state.order.append(int(request.match_info["i"]))
        await asyncio.sleep(0.005)
        return web.Response(text="o")

    async def close(request: web.Request) -> web.Response:
        out = web.Response(text="bye")
        out.force_close()
        return out

    app = web.Application(middlewares=[track], client_max_size=64 * MiB)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/status/{n}", status)
    app.router.add_get("/head", head)
    app.router.add_get("/hang", hang)
    app.router.add_get("/slow", slow)
    app.router.add_get("/order/{i}", order)
    app.router.add_get("/close", close)
    return app


@asynccontextmanager
async def web_origin(tls: ssl.SSLContext | None = None) -> AsyncIterator[Origin]:
    state = Origin()
    runner = web.AppRunner(
        _app(state), handler_cancellation=True, access_log=None, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    state.url = URL(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
    try:
        yield state
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- raw origin

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Origin], Awaitable[None]]


@asynccontextmanager
async def raw_origin(handler: Handler) -> AsyncIterator[Origin]:
    """A bare TCP server for answers no real server gives (garbage, silence, early close)."""
    state = Origin()
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.url = URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader, state: Origin) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    state.seen.append(head)
    return head


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# --------------------------------------------------------------------------- helpers


@asynccontextmanager
async def pool_for(
    origin: Origin, tls: ssl.SSLContext | None = None, **kw: Any
) -> AsyncIterator[Pool]:
    pool = Pool(origin.url, tls, **kw)
    try:
        yield pool
    finally:
        await pool.close()


async def get(
    pool: Pool, target: str = "/echo", method: str = "GET", **kw: Any
) -> tuple[Response, bytes]:
    resp = await pool.request(method, target, kw.pop("headers", ()), kw.pop("body", None), **kw)
    try:
        return resp, await resp.read()
    finally:
        resp.release()


async def stream_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.cache
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only a CA made here) for 127.0.0.1/localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "http1 test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file, ca_file = (os.path.join(tmp, n) for n in ("c.pem", "k.pem", "ca.pem"))
        with open(cert_file, "wb") as f:
            f.write(leaf.public_bytes(pem))
        with open(key_file, "wb") as f:
            f.write(
                key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        with open(ca_file, "wb") as f:
            f.write(ca.public_bytes(pem))
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
        client = ssl.create_default_context(cafile=ca_file)
    return server, client


# --------------------------------------------------------------------------- reuse and limits


async def test_keepalive_reuse_and_request_head() -> None:
    """Sequential requests share one connection; target and headers arrive verbatim, after Host."""
    async with web_origin() as origin, pool_for(origin) as pool:
        for i in range(5):
            resp, body = await get(
                pool, f"/echo?a={i}&b=%2F%20", headers=[("X-One", "1"), ("x-two", "z")]
            )
            assert resp.status == 200
            seen = json.loads(body)
            assert seen["target"] == f"/echo?a={i}&b=%2F%20"
            assert seen["headers"] == [
                ["Host", f"127.0.0.1:{origin.url.port}"],
                ["X-One", "1"],
                ["x-two", "z"],
            ]
        assert len(origin.peers) == 1


async def test_request_framing_on_the_wire() -> None:
    """Each kind of body gets exactly the framing it needs, byte for byte, on one connection."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        while True:
            head = await read_head(reader, state)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    state.seen.append(await reader.readexactly(int(line.split(b":")[1])))
            if b"chunked" in head:
                body = b""
                while not body.endswith(b"0\r\n\r\n"):
                    body += await reader.read(65536)
                state.seen.append(body)
            writer.write(ok())

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defgh"

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        host = f"Host: 127.0.0.1:{origin.url.port}\r\n".encode()
        await get(pool, "/a%20b?q=%2F", headers=[("X-A", "1"), ("x-b", "2")])
        await get(pool, "/p", "POST", body=b"hello")
        await get(pool, "/p", "POST")
        await get(pool, "/p", "GET", body=b"")
        await get(pool, "/s", "PUT", body=parts())
        await get(pool, "/s", "PUT", body=parts(), content_length=8)
        assert origin.seen == [
            b"GET /a%20b?q=%2F HTTP/1.1\r\n" + host + b"X-A: 1\r\nx-b: 2\r\n\r\n",
            b"POST /p HTTP/1.1\r\n" + host + b"Content-Length: 5\r\n\r\n",
            b"hello",
            b"POST /p HTTP/1.1\r\n" + host + b"Content-Length: 0\r\n\r\n",
            b"",
            b"GET /p HTTP/1.1\r\n" + host + b"\r\n",
            b"PUT /s HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n",
            b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n",
            b"PUT /s HTTP/1.1\r\n" + host + b"Content-Length: 8\r\n\r\n",
            b"abcdefgh",
        ]
        assert origin.connections == 1


def test_host_header_omits_default_port() -> None:
    """Host names the port only when it is not the scheme's default, and brackets IPv6 literals."""
    assert "\r\nHost: example.com\r\n" in Pool(URL("https://example.com:443/x"), None)._suffix
    assert "\r\nHost: example.com\r\n" in Pool(URL("http://example.com/x"), None)._suffix
    assert "\r\nHost: example.com:8443\r\n" in Pool(URL("https://example.com:8443"), None)._suffix
    assert "\r\nHost: [::1]:8080\r\n" in Pool(URL("http://[::1]:8080"), None)._suffix


async def test_head_and_small_body_leave_in_one_write() -> None:
    """A small body goes out in the same write as the head: one syscall, not two."""
    async with web_origin() as origin, pool_for(origin) as pool:
        await get(pool)
        transport = pool._idle[-1].transport
        writes: list[bytes] = []
        real = transport.write
        transport.write = lambda data: (writes.append(bytes(data)), real(data))[1]  # type: ignore[method-assign]
        resp, _body = await get(pool, "/echo", "POST", body=b"x" * 1000, headers=[("A", "b")])
        assert resp.status == 200
        assert len(writes) == 1
        assert writes[0].endswith(b"\r\n\r\n" + b"x" * 1000)


async def test_concurrent_requests_and_limit() -> None:
    """Concurrent requests never hold more than ``limit`` connections, and the count stays exact."""
    async with web_origin() as origin, pool_for(origin) as pool:
        results = await asyncio.gather(*(get(pool, "/slow") for _ in range(32)))
        assert all(r.status == 200 and b == b"slow" for r, b in results)
        assert len(origin.peers) <= 32
        assert pool._open == len(pool._idle) <= 32
    async with web_origin() as origin, pool_for(origin, limit=4) as pool:
        results = await asyncio.gather(*(get(pool, "/slow") for _ in range(32)))
        assert all(r.status == 200 for r, _ in results)
        assert len(origin.peers) <= 4
        assert origin.max_active <= 4
        assert pool._open <= 4


async def test_waiters_are_served_in_order() -> None:
    """Requests queued for a connection get it first come, first served: none starves."""
    async with web_origin() as origin, pool_for(origin, limit=1) as pool:
        await asyncio.gather(*(get(pool, f"/order/{i}") for i in range(10)))
        assert origin.order == list(range(10))
        assert len(origin.peers) == 1


async def test_waiting_for_a_free_connection_times_out() -> None:
    """Waiting for a free connection is bounded (kind pool), and the held one stays usable."""
    async with web_origin() as origin, pool_for(origin, limit=1, timeout=0.3) as pool:
        held = await pool.request("GET", "/echo", (), None)  # holds the only connection
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("GET", "/echo", (), None)
        assert 0.25 < time.monotonic() - started < 2
        assert caught.value.kind == "pool"
        await held.read()
        assert pool._open == 1
        await get(pool)
        assert len(origin.peers) == 1


# --------------------------------------------------------------------------- response framing


async def test_chunked_response() -> None:
    """A chunked body arrives de-chunked, and its clean end leaves the connection reusable."""
    async with web_origin() as origin, pool_for(origin) as pool:
        resp = await pool.request("GET", "/chunked", (), None)
        assert resp.content_length is None
        assert [c async for c in resp.iter_chunks()] in (
            [b"one,", b"two,", b"three"],
            [b"one,two,three"],
        )
        resp.release()
        resp, body = await get(pool, "/chunked")
        assert body == b"one,two,three"
        assert len(origin.peers) == 1


@pytest.mark.parametrize(
    ("head", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\nX: y\r\n\r\n", False),  # close-delimited
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", False),  # close-delimited
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", True),
    ],
)
async def test_close_delimited_and_keep_alive(head: bytes, reused: bool) -> None:
    """Length-less bodies end at EOF; a connection is reused only where keep-alive is allowed."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        while True:
            await read_head(reader, state)
            writer.write(head + b"hello ")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"world")
            if b"Content-Length" not in head:
                return  # the body ends with the connection
            await writer.drain()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        for _ in range(2):
            resp, body = await get(pool, "/")
            assert body == b"hello world"
            assert resp.content_length == (11 if b"Content-Length" in head else None)
        assert origin.connections == (1 if reused else 2)


async def test_head_204_304_have_no_body() -> None:
    """Bodiless answers do not wait for a body, and HEAD still reports the Content-Length."""
    async with web_origin() as origin, pool_for(origin) as pool:
        resp, body = await get(pool, "/head", "HEAD")
        assert (resp.status, body, resp.content_length) == (200, b"", 1234)
        for code in (204, 304):
            resp, body = await get(pool, f"/status/{code}")
            assert (resp.status, body) == (code, b"")
        resp, body = await get(pool, "/head")
        assert len(body) == 1234
        assert len(origin.peers) == 1


async def test_body_after_a_head_answer_is_not_taken_for_the_next_response() -> None:
    """Bytes after a HEAD answer close the connection, so they cannot pose as the next response."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        while True:
            await read_head(reader, state)
            # A broken server: a body after the HEAD answer, itself shaped like a response.
            writer.write(ok(b"no", b"X-Real: 1\r\n") + ok(b"forged"))

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        resp, body = await get(pool, "/", "HEAD")
        assert (resp.status, body, resp.headers["X-Real"]) == (200, b"", "1")
        resp, body = await get(pool, "/")
        assert body == b"no"
        assert origin.connections == 2


@pytest.mark.parametrize("later", [False, True])
async def test_bytes_after_a_complete_response_spoil_the_connection(later: bool) -> None:
    """Unasked-for bytes after a response, early or late, keep its connection out of the pool."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        while True:
            await read_head(reader, state)
            writer.write(ok(b"real"))
            if later:
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(ok(b"forged"))

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        for _ in range(2):
            resp = await pool.request("GET", "/", (), None)
            await asyncio.sleep(0.05)
            assert await resp.read() == b"real"
        assert origin.connections == 2


async def test_interim_responses_are_skipped() -> None:
    """1xx answers are dropped, so the caller sees only the final status, reason and headers."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + ok(b"final", b"X-Final: 1\r\n")
        )
        await reader.read()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        resp, body = await get(pool, "/", "POST", body=b"x", headers=[("Expect", "100-continue")])
        assert (resp.status, resp.reason, body) == (200, "OK", b"final")
        assert resp.raw_headers == [(b"Content-Length", b"5"), (b"X-Final", b"1")]


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 150 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHELLO\r\n0\r\n\r\n",
        b"HTTP/1.1 199 X\r\nContent-Length: 5\r\n\r\nHELLO",
        b"HTTP/1.1 103 Early\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["chunked", "content-length", "empty-length"],
)
async def test_interim_answer_with_a_body_is_refused(interim: bytes) -> None:
    """A framed 1xx is kind interim, its bytes never surface, and the connection is dropped."""
    closed = asyncio.Event()

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(interim + ok())
        await writer.drain()
        if await reader.read() == b"":
            closed.set()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await get(pool, "/")
        assert (caught.value.kind, caught.value.sent) == ("interim", "complete")
        await asyncio.wait_for(closed.wait(), 5)
        assert (pool.in_use, pool.idle_count) == (0, 0)
        assert origin.connections == 1  # not retried: the upstream had answered


def answer_with(data: bytes) -> Handler:
    """An origin that answers every request with ``data``, then waits for the client to go."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(data)
        await writer.drain()
        await reader.read()

    return serve


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 103 Early\r\nConnection: close\r\nLink: </s>\r\n\r\n",
        b"HTTP/1.1 150 X\r\n\r\n",
        b"HTTP/1.1 102 P\r\nConnection: close\r\n\r\nHTTP/1.1 103 E\r\nX-Hint: 1\r\n\r\n",
    ],
    ids=["103-close", "150-no-body", "two"],
)
async def test_valid_interim_answers_never_spoil_the_final_one(interim: bytes) -> None:
    """A bodiless 1xx, even one saying Connection: close, is skipped (RFC 9110 §15.2); its
    fields neither frame nor join the final answer, which arrives whole and reusable."""
    async with raw_origin(answer_with(interim + ok(b"final"))) as origin, pool_for(origin) as pool:
        resp, body = await get(pool, "/")
        assert (resp.status, body) == (200, b"final")
        assert resp.raw_headers == [(b"Content-Length", b"5")]


@pytest.mark.parametrize("step", [1, 2, 3, 7])
async def test_interim_answers_split_across_reads(step: int) -> None:
    """Wherever the reads split the heads (inside CR LF CR LF too), each 1xx ends where it
    ends and its Connection: close does not reach the final answer, whose trailer is dropped."""
    answer = (
        b"HTTP/1.1 103 E\r\nConnection: close\r\n\r\nHTTP/1.1 102 P\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
    )

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        for i in range(0, len(answer), step):
            writer.write(answer[i : i + step])
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        resp, body = await get(pool, "/")
        assert (resp.status, body) == (200, b"ok")
        assert resp.raw_headers == [(b"Transfer-Encoding", b"chunked")]


@pytest.mark.parametrize(
    "coding",
    [
        b"gzip",
        b"identity",
        b"xchunked",
        b"chunked, identity",
        b"chunked, chunked",
        b"gzip, chunked",
    ],
)
async def test_transfer_codings_other_than_chunked_are_refused(coding: bytes) -> None:
    """An answer whose body the relay could not re-frame is kind framing (502 SC4029), so no
    byte of a body of unknown coding reaches the app (RFC 9112 §6.1; h11 refuses them too)."""
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n5\r\nHELLO\r\n0\r\n\r\n"
    async with raw_origin(answer_with(answer % coding)) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await get(pool, "/")
        assert caught.value.kind == "framing"
        assert (pool.in_use, pool.idle_count) == (0, 0)


async def test_two_transfer_encoding_fields_are_refused() -> None:
    """Two Transfer-Encoding fields, even each ``chunked``, are refused (h11 refuses them)."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    )
    async with raw_origin(answer_with(answer)) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await get(pool, "/")
        assert caught.value.kind == "framing"


async def test_trailers_are_dropped_and_value_whitespace_stripped() -> None:
    """Trailer fields never join the head (RFC 9110 §6.5.1), and a value loses its trailing
    whitespace (RFC 9112 §5), so the relayed head is what a correct parser reads."""
    answer = (
        b"HTTP/1.1 200 OK\r\nX-A: b \t\r\nTransfer-Encoding: Chunked \r\n\r\n"
        b"2\r\nok\r\n0\r\nX-Trailer: t\r\nSet-Cookie: s=1\r\n\r\n"
    )
    async with raw_origin(answer_with(answer)) as origin, pool_for(origin) as pool:
        resp, body = await get(pool, "/")
        assert body == b"ok"
        assert resp.raw_headers == [(b"X-A", b"b"), (b"Transfer-Encoding", b"Chunked")]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 a\x00b\r\nContent-Length: 2\r\n\r\nok",
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 103 E\r\n\r\n\rHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["nul-in-reason", "crlf-before-status", "cr-after-interim"],
)
async def test_bytes_a_status_line_cannot_hold_are_refused(answer: bytes) -> None:
    """A control byte in the reason phrase, or CR/LF before a status line, is bad HTTP (RFC 9112
    §4, §2.2 allows empty lines only before a request); llhttp alone lets them through."""
    async with raw_origin(answer_with(answer)) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await get(pool, "/")
        assert caught.value.kind == "protocol"


# --------------------------------------------------------------------------- was it sent?


async def test_sent_is_none_when_nothing_was_written() -> None:
    """No connection, no byte written: ``none``."""
    pool = Pool(URL(f"http://127.0.0.1:{closed_port()}"), None)
    with pytest.raises(UpstreamConnectionError) as caught:
        await pool.request("POST", "/", (), b"pay")
    assert caught.value.sent == "none"
    await pool.close()


async def test_sent_is_partial_when_the_upstream_left_mid_body() -> None:
    """The head and part of a streamed body were written when the upstream closed: ``partial``."""
    gone, read = asyncio.Event(), asyncio.Event()

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        await reader.readexactly(4)
        read.set()  # and the connection closes

    async def body() -> AsyncIterator[bytes]:
        yield b"0123"
        await gone.wait()
        yield b"456789"

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        task = asyncio.create_task(get(pool, "/", "POST", body=body(), content_length=10))
        await asyncio.wait_for(read.wait(), 5)
        while pool.in_use:  # until the upstream's close reached the pool
            await asyncio.sleep(0.01)
        gone.set()
        with pytest.raises(UpstreamConnectionError) as caught:
            await task
        assert caught.value.sent == "partial"


async def test_sent_is_complete_when_the_whole_request_was_written() -> None:
    """The upstream read the whole request, then closed or stayed silent: ``complete``."""

    async def close_after(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        await reader.readexactly(3)

    async with raw_origin(close_after) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await get(pool, "/", "POST", body=b"pay")
        assert caught.value.sent == "complete"

    async def silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        await reader.read()

    async with raw_origin(silent) as origin, pool_for(origin, timeout=0.2) as pool:
        with pytest.raises(UpstreamTimeout) as timed_out:
            await get(pool, "/", "POST", body=stream_of(b"pay"))
        assert (timed_out.value.kind, timed_out.value.sent) == ("response", "complete")


async def test_pool_timeout_bounds_only_the_wait_for_a_connection() -> None:
    """Past pool_timeout a waiter gets kind pool with nothing sent; the held request goes on."""
    async with web_origin() as origin, pool_for(origin, limit=1, pool_timeout=0.1) as pool:
        held = await pool.request("GET", "/echo", (), None)
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("POST", "/echo", (), b"pay")
        assert (caught.value.kind, caught.value.sent) == ("pool", "none")
        assert (pool.in_use, pool.idle_count) == (1, 0)
        await held.read()
        assert (pool.in_use, pool.idle_count) == (0, 1)
        assert len(origin.peers) == 1


async def test_duplicate_headers_and_latin1() -> None:
    """Repeated headers keep order and every value; non-ASCII bytes decode as latin-1, unharmed."""
    async with web_origin() as origin, pool_for(origin) as pool:
        resp, _ = await get(pool, "/cookies")
        names = [k for k, _ in resp.raw_headers]
        assert (
            names.index(b"Set-Cookie")
            < names.index(b"X-Mid")
            < len(names) - 1 - names[::-1].index(b"Set-Cookie")
        )
        assert [v for k, v in resp.raw_headers if k == b"Set-Cookie"] == [b"a=1", b"b=2"]
        assert resp.headers.getall("set-cookie") == ["a=1", "b=2"]

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(b"HTTP/1.1 299 Tr\xe8s bien\r\nX-Caf: caf\xe9\r\nContent-Length: 0\r\n\r\n")
        await reader.read()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        resp, _ = await get(pool, "/")
        assert (resp.status, resp.reason, resp.headers["x-caf"]) == (299, "Très bien", "café")
        assert resp.raw_headers[0] == (b"X-Caf", b"caf\xe9")


# --------------------------------------------------------------------------- stale connections


async def closes_on_second_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
) -> None:
    await read_head(reader, state)
    writer.write(ok())
    await read_head(reader, state)  # the reused connection: dropped without a word


async def test_stale_connection_is_retried_for_idempotent_requests() -> None:
    """A kept-alive connection the upstream dropped is replayed once when the request is safe to."""
    async with raw_origin(closes_on_second_request) as origin, pool_for(origin) as pool:
        await get(pool, "/")
        for method, body in (("GET", None), ("PUT", b"data"), ("DELETE", None)):
            resp, got = await get(pool, "/", method, body=body)
            assert (resp.status, got) == (200, b"ok")
        assert origin.connections == 4


async def test_stale_connection_is_not_retried_for_post_or_a_streamed_body() -> None:
    """Requests that may have had effect, or cannot be replayed, fail instead of being resent."""
    async with raw_origin(closes_on_second_request) as origin, pool_for(origin) as pool:
        for method, body in (("POST", b"pay"), ("PATCH", None), ("PUT", stream_of(b"data"))):
            await get(pool, "/")
            with pytest.raises(UpstreamConnectionError):
                await get(pool, "/", method, body=body)
        assert origin.connections == 3
        assert pool._open == 0


async def test_server_closing_after_every_response() -> None:
    """A server that silently closes after each answer costs new connections, never failures."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(ok())  # no "Connection: close", then gone

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        for _ in range(5):
            _resp, body = await get(pool, "/")
            assert body == b"ok"
        assert origin.connections == 5


async def test_a_fresh_connection_failing_is_not_retried() -> None:
    """Only a reused connection earns a retry: a new one that fails raises at once (kind closed)."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await get(pool, "/")
        assert caught.value.kind == "closed"
        assert origin.connections == 1


async def test_idle_connections_expire_and_closing_ones_are_skipped() -> None:
    """Idle connections past keepalive_timeout, or already closing, are replaced, not reused."""
    async with web_origin() as origin, pool_for(origin, keepalive_timeout=0.1) as pool:
        await get(pool)
        await asyncio.sleep(0.2)
        await get(pool)
        assert len(origin.peers) == 2
        pool._idle[-1].transport.close()  # closing, but connection_lost not delivered yet
        resp, _ = await get(pool)
        assert resp.status == 200
        assert len(origin.peers) == 3
        assert pool._open == 1


# --------------------------------------------------------------------------- bodies and flow control


async def test_large_bodies_both_ways() -> None:
    """Multi-megabyte bodies, streamed or as bytes, arrive intact both ways on one connection."""
    async with web_origin() as origin, pool_for(origin) as pool:
        for length in (None, len(BIG)):
            resp = await pool.request("POST", "/upload", (), stream_of(BIG), length)
            assert resp.headers["X-Upload-Sha"] == BIG_SHA
            assert resp.headers["X-TE"] == ("chunked" if length is None else "")
            digest, size = hashlib.sha256(), 0
            async for chunk in resp.iter_chunks():
                digest.update(chunk)
                size += len(chunk)
            resp.release()
            assert (size, digest.hexdigest()) == (len(BIG), BIG_SHA)
        resp, body = await get(pool, "/echo", "PUT", body=BIG)
        assert json.loads(body)["sha"] == BIG_SHA
        assert len(origin.peers) == 1


async def test_request_body_respects_write_flow_control() -> None:
    """A streamed upload waits while the upstream reads nothing: the write buffer stays bounded."""
    total = 32 * MiB
    largest = 0

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        await asyncio.sleep(0.3)  # not reading: the client's buffers fill up
        digest, left = hashlib.sha256(), total
        while left:
            data = await reader.read(min(left, 1024 * 1024))
            digest.update(data)
            left -= len(data)
        writer.write(ok(digest.hexdigest().encode()))
        await reader.read()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        real = pool._connect
        conns: list[Any] = []

        async def spy(*args: Any) -> Any:
            conns.append(await real(*args))
            return conns[-1]

        pool._connect = spy  # type: ignore[method-assign]
        block = os.urandom(64 * 1024)

        async def body() -> AsyncIterator[bytes]:
            nonlocal largest
            for _ in range(total // len(block)):
                largest = max(largest, conns[0].transport.get_write_buffer_size())
                yield block

        _resp, got = await get(pool, "/", "POST", body=body(), content_length=total)
        assert got == hashlib.sha256(block * (total // len(block))).hexdigest().encode()
        assert largest <= 256 * 1024


async def test_response_body_pauses_reading_when_unread() -> None:
    """An unread body stops the socket being read, so memory stays bounded; nothing is lost."""
    async with web_origin() as origin, pool_for(origin) as pool:
        resp = await pool.request("GET", "/big", (), None)
        conn = resp._conn
        assert conn is not None
        await asyncio.sleep(0.3)
        assert conn.read_paused
        assert 256 * 1024 < conn.buffered <= 1024 * 1024
        body = await resp.read()
        assert hashlib.sha256(body).hexdigest() == BIG_SHA
        await get(pool)
        assert len(origin.peers) == 1


async def test_release_without_reading_closes_the_connection() -> None:
    """An unread body makes a connection unusable, so release closes it; twice is harmless."""
    async with web_origin() as origin, pool_for(origin) as pool:
        resp = await pool.request("GET", "/echo", (), None)
        await asyncio.sleep(0.05)  # the whole body is buffered: still not reusable
        resp.release()
        resp.release()
        assert pool._open == 0
        assert await resp.read() == b""
        await get(pool)
        assert len(origin.peers) == 2


async def test_streamed_body_must_match_content_length() -> None:
    """A streamed body that breaks its declared length raises and does not leak the connection."""
    async with web_origin() as origin, pool_for(origin) as pool:
        with pytest.raises(ValueError, match="longer"):
            await pool.request("PUT", "/echo", (), stream_of(b"x" * 20), 10)
        with pytest.raises(ValueError, match="shorter"):
            await pool.request("PUT", "/echo", (), stream_of(b"x" * 5), 10)
        assert pool._open == 0


async def test_crlf_in_the_head_is_refused() -> None:
    """CR or LF smuggled into a header or target is refused, so no request can be split."""
    pool = Pool(URL("http://127.0.0.1:1"), None)
    for headers, target in (
        ([("X", "a\r\nEvil: 1")], "/"),
        ([("X\n", "a")], "/"),
        ([], "/ HTTP/1.1\r\n"),
    ):
        with pytest.raises(ValueError, match="CR, LF"):
            await pool.request("GET", target, headers, None)
    await pool.close()


async def test_framing_headers_from_a_scheme_are_refused() -> None:
    """A Content-Length, Transfer-Encoding, Host or hop header reaching the pool (only a scheme
    can add one: the pipeline drops the app's) would be smuggling: refused, nothing sent."""
    pool = Pool(URL("http://127.0.0.1:1"), None)
    for name in ("Content-Length", "transfer-encoding", "HOST", "Connection", "TE", "Upgrade"):
        with pytest.raises(ValueError, match="framing or connection header"):
            await pool.request("POST", "/", [(name, "5")], b"hello")
    await pool.close()


# --------------------------------------------------------------------------- timeouts and failures


async def test_no_answer_times_out() -> None:
    """An upstream that never answers times out after ``timeout`` (kind response), slot freed."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        await reader.read()

    async with raw_origin(serve) as origin, pool_for(origin, timeout=0.3) as pool:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("GET", "/", (), None)
        assert 0.25 < time.monotonic() - started < 2
        assert caught.value.kind == "response"
        assert pool._open == 0


async def test_refused_connection() -> None:
    """A refused connection is reported as kind connect and does not hold a slot."""
    pool = Pool(URL(f"http://127.0.0.1:{closed_port()}"), None)
    with pytest.raises(UpstreamConnectionError) as caught:
        await pool.request("GET", "/", (), None)
    assert caught.value.kind == "connect"
    assert pool._open == 0
    await pool.close()


async def test_connect_timeout_covers_the_tls_handshake() -> None:
    """A TLS handshake that never finishes is cut off by connect_timeout, not the longer timeout."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await reader.read()  # accepts, never speaks TLS

    async with raw_origin(serve) as origin:
        url = origin.url.with_scheme("https")
        pool = Pool(url, tls_contexts()[1], connect_timeout=0.2, timeout=5)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("GET", "/", (), None)
        assert time.monotonic() - started < 1.5
        assert caught.value.kind == "connect"
        assert pool._open == 0
        await pool.close()


async def test_body_stalling_mid_stream_times_out() -> None:
    """A body that stalls times out (kind body) after handing over the bytes that did arrive."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await reader.read()

    async with raw_origin(serve) as origin, pool_for(origin, timeout=0.3) as pool:
        resp = await pool.request("GET", "/", (), None)
        chunks = []
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            async for chunk in resp.iter_chunks():
                chunks.append(chunk)
        assert 0.25 < time.monotonic() - started < 2
        assert chunks == [b"0123456789"]
        assert caught.value.kind == "body"
        resp.release()
        assert pool._open == 0


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_upstream_closing_mid_body(answer: bytes) -> None:
    """A body cut short raises instead of passing as complete, and its connection is not pooled."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.02)

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        resp = await pool.request("GET", "/", (), None)
        with pytest.raises(UpstreamConnectionError):
            await resp.read()
        resp.release()
        assert pool._open == 0
        assert not pool._idle


async def test_malformed_response() -> None:
    """Bad HTTP raises kind protocol and really closes the connection, which cannot be trusted."""
    closed = asyncio.Event()

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(b"garbage\r\n\r\n")
        await reader.read()  # returns once the client closed the connection
        closed.set()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError) as caught:
            await pool.request("GET", "/", (), None)
        assert caught.value.kind == "protocol"
        await asyncio.wait_for(closed.wait(), 2)
        assert pool._open == 0


async def test_endless_response_head() -> None:
    """A response head that never ends is cut off at a bound (protocol), not buffered forever."""

    async def serve(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Origin
    ) -> None:
        await read_head(reader, state)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        with suppress(ConnectionError):
            for i in range(100_000):
                writer.write(b"X-%d: %s\r\n" % (i, b"a" * 1000))
                await writer.drain()

    async with raw_origin(serve) as origin, pool_for(origin) as pool:
        with pytest.raises(UpstreamConnectionError, match="too large") as caught:
            await pool.request("GET", "/", (), None)
        assert caught.value.kind == "protocol"
        assert pool._open == 0


async def test_tls_verified_and_untrusted() -> None:
    """TLS verifies by IP and by name, with reuse; a certificate from an unknown CA fails as tls."""
    server, client = tls_contexts()
    async with web_origin(server) as origin:
        for url in (origin.url, origin.url.with_host("localhost")):
            pool = Pool(url, client)
            resp, _body = await get(pool, "/echo")
            assert resp.status == 200
            await get(pool, "/echo")
            await pool.close()
        assert len(origin.peers) == 2
        pool = Pool(origin.url, ssl.create_default_context())
        with pytest.raises(UpstreamConnectionError) as caught:
            await pool.request("GET", "/echo", (), None)
        assert caught.value.kind == "tls"
        assert pool._open == 0
        await pool.close()


async def test_cancelled_requests_free_their_slots() -> None:
    """Requests cancelled at any stage give back their slots: no leak, and never over the limit."""
    async with web_origin() as origin, pool_for(origin, limit=4) as pool:
        for batch in range(30):
            tasks = [asyncio.ensure_future(get(pool, "/hang")) for _ in range(10)]
            for _ in range(batch % 4):
                await asyncio.sleep(0.002)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert pool._open <= 4
        assert pool._open == 0
        _resp, body = await get(pool, "/slow")
        assert body == b"slow"


async def test_a_connection_granted_to_a_cancelled_waiter_is_passed_on() -> None:
    """A connection or slot granted to a waiter cancelled before it ran is kept, not leaked."""
    async with web_origin() as origin, pool_for(origin, limit=1) as pool:
        for read in (True, False):  # handed over as a connection, or as a free slot
            held = await pool.request("GET", "/echo", (), None)
            waiting = asyncio.ensure_future(get(pool))
            await asyncio.sleep(0.05)  # queued; the held body has arrived
            if read:
                await held.read()  # no suspension: the connection goes to the waiter now
            else:
                held.release()  # unread: closed, its slot goes to the waiter
            waiting.cancel()  # granted, but cancelled before it ran
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert (pool._open, len(pool._idle)) == ((1, 1) if read else (0, 0))
        resp, _ = await get(pool)
        assert resp.status == 200
        assert len(origin.peers) == 2


async def test_pool_close() -> None:
    """Closing a pool drops idle connections, lets requests in flight finish, then refuses more."""
    async with web_origin() as origin:
        pool = Pool(origin.url, None)
        await asyncio.gather(get(pool, "/slow"), get(pool, "/slow"))
        idle = pool._idle[0]
        in_flight = asyncio.ensure_future(get(pool, "/slow"))
        await asyncio.sleep(0.01)
        await pool.close()
        assert idle.dead
        assert not pool._idle
        _resp, body = await in_flight
        assert body == b"slow"
        assert pool._open == 0
        with pytest.raises(UpstreamConnectionError) as caught:
            await pool.request("GET", "/echo", (), None)
        assert caught.value.kind == "pool_closed"


# --------------------------------------------------------------------------- the same on uvloop

UVLOOP_CASES = [
    test_keepalive_reuse_and_request_head,
    test_request_framing_on_the_wire,
    test_concurrent_requests_and_limit,
    test_waiters_are_served_in_order,
    test_chunked_response,
    test_head_204_304_have_no_body,
    test_body_after_a_head_answer_is_not_taken_for_the_next_response,
    test_interim_responses_are_skipped,
    test_trailers_are_dropped_and_value_whitespace_stripped,
    test_sent_is_partial_when_the_upstream_left_mid_body,
    test_pool_timeout_bounds_only_the_wait_for_a_connection,
    test_a_connection_granted_to_a_cancelled_waiter_is_passed_on,
    test_stale_connection_is_retried_for_idempotent_requests,
    test_stale_connection_is_not_retried_for_post_or_a_streamed_body,
    test_server_closing_after_every_response,
    test_idle_connections_expire_and_closing_ones_are_skipped,
    test_large_bodies_both_ways,
    test_request_body_respects_write_flow_control,
    test_response_body_pauses_reading_when_unread,
    test_release_without_reading_closes_the_connection,
    test_no_answer_times_out,
    test_body_stalling_mid_stream_times_out,
    test_malformed_response,
    test_endless_response_head,
    test_tls_verified_and_untrusted,
    test_cancelled_requests_free_their_slots,
    test_pool_close,
]


@pytest.mark.parametrize("case", UVLOOP_CASES, ids=[c.__name__[5:] for c in UVLOOP_CASES])
def test_under_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    """The loop-sensitive cases hold on uvloop too, the loop the sidecar runs in production."""
    uvloop.run(case())  # type: ignore[arg-type]
