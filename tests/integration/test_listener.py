"""The proxy listener's own HTTP/1.1 handling, on the wire: framing, keep-alive, refusals.

These speak raw bytes to the listener, because the properties under test (pipelining order,
re-framing, 100-continue, what happens on garbage) are invisible through a client library.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from sidecar.proxy import listener as proxyserver
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar, api_key_upstream

KEY = "SECR_listener_key_1"


class Peer:
    def __init__(self) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/chunked", self.chunked)
        app.router.add_route("*", "/gated", self.gated)
        app.router.add_route("*", "/empty", self.empty)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") == KEY
        body = await request.read()
        self.bodies.append(body)
        digest = hashlib.sha256(body).hexdigest()
        return web.json_response(
            {"path": request.raw_path, "len": len(body), "sha256": digest},
            status=200 if ok else 401,
            headers=[
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("X-Raw", "MiXeD"),
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "for the next hop only"),
            ],
        )

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"part%d;" % i)
        await resp.write_eof()
        return resp

    async def empty(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def gated(self, request: web.Request) -> web.StreamResponse:
        """A streamed answer that stops half-way until the test releases it."""
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first;")
        self.entered.set()
        await self.release.wait()
        await resp.write(b"second;")
        await resp.write_eof()
        return resp


@pytest.fixture
async def peer(aiohttp_server: Any) -> tuple[Peer, str]:
    p = Peer()
    server = await aiohttp_server(p.app())
    return p, str(server.make_url("/")).rstrip("/")


@pytest.fixture
async def sidecar(
    peer: tuple[Peer, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> Sidecar:
    sc = await make_sidecar(make_config({"peer": api_key_upstream(peer[1], "peer")}))
    r = await sc.admin.put(
        "/v1/credentials/peer", json={"upstream": "peer", "fields": {"api_key": KEY}}
    )
    assert r.status == 201
    return sc


class Answer:
    """One response parsed by httptools (the test does not parse HTTP by hand either)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done = False

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class Answers:
    """Parser callbacks collecting every response on one connection, however reads split them."""

    def __init__(self) -> None:
        self.done: list[Answer] = []
        self.current: Answer | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Answer()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()
        self.current.done = True
        self.done.append(self.current)
        self.current = None

    def closed(self) -> None:
        """The connection ended: a close-delimited body ends here."""
        if self.current is not None and self.current.headers:
            self.current.status = self.parser.get_status_code()
            self.done.append(self.current)
            self.current = None


async def read_answers(
    reader: asyncio.StreamReader, answers: int, wait: float = 5
) -> tuple[list[Answer], bool]:
    """Read ``answers`` responses; (answers, whether the server closed)."""
    got = Answers()
    closed = False
    while len(got.done) < answers:
        chunk = await asyncio.wait_for(reader.read(65536), wait)
        if not chunk:
            closed = True
            got.closed()
            break
        got.parser.feed_data(chunk)
    if not closed:
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:  # closed with our bytes unread: the kernel sends a reset
            closed = True
    return got.done, closed


async def exchange(
    sc: Sidecar, data: bytes, answers: int = 1, wait: float = 5
) -> tuple[list[Answer], bool]:
    """Send raw bytes; read ``answers`` responses; (answers, whether the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy.port)
    writer.write(data)
    try:
        return await read_answers(reader, answers, wait)
    finally:
        writer.close()


async def test_keep_alive_and_pipelined_requests_answer_in_order(sidecar: Sidecar) -> None:
    """Five requests sent at once on one connection get five answers, in order, and the connection stays open."""
    request = b"GET /peer/v1/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    data = b"".join(request % i for i in range(5))
    answers, closed = await exchange(sidecar, data, answers=5)
    assert [a.status for a in answers] == [200] * 5
    assert [a.body.split(b'"path": "')[1].split(b'"')[0] for a in answers] == [
        b"/v1/%d" % i for i in range(5)
    ]
    assert not closed


async def test_upstream_headers_relayed_byte_for_byte(sidecar: Sidecar) -> None:
    """The provider's header bytes reach the app as sent (case, duplicates), minus hop-by-hop ones."""
    answers, _ = await exchange(sidecar, b"GET /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    (a,) = answers
    assert [v for n, v in a.headers if n == b"set-cookie"] == [b"a=1", b"b=2"]
    assert a.header(b"x-raw") == b"MiXeD"
    assert a.header(b"x-hop") is None  # named in the upstream's Connection header
    assert a.header(b"content-length") == str(len(a.body)).encode()


async def test_chunked_answer_rechunked_for_http11_and_closed_for_http10(sidecar: Sidecar) -> None:
    """An unsized answer is chunked for an HTTP/1.1 app and close-delimited for an HTTP/1.0 one."""
    answers, closed = await exchange(sidecar, b"GET /peer/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answers[0].body == b"part0;part1;part2;part3;part4;"
    assert answers[0].header(b"transfer-encoding") == b"chunked"
    assert not closed
    answers, closed = await exchange(sidecar, b"GET /peer/chunked HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert answers[0].body == b"part0;part1;part2;part3;part4;"
    assert answers[0].header(b"transfer-encoding") is None
    assert closed


async def test_204_and_head_have_no_body(sidecar: Sidecar) -> None:
    """A 204 carries no body, so the next pipelined answer is framed right after it."""
    data = (
        b"GET /peer/empty HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /peer/v1/after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    answers, _ = await exchange(sidecar, data, answers=2)
    assert [a.status for a in answers] == [204, 200]
    assert answers[0].body == b""
    # HEAD: the provider's Content-Length is relayed, and not one body byte follows it.
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.proxy.port)
    try:
        writer.write(b"HEAD /peer/v1/h HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Length: " in head
        writer.write(b"GET /peer/v1/next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        following = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert following.startswith(b"HTTP/1.1 200 ")  # not body bytes of the HEAD answer
    finally:
        writer.close()


async def test_chunked_request_body_streams_through_intact(sidecar: Sidecar, peer: Any) -> None:
    """A chunked 1 MiB upload reaches the provider byte for byte."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 65536]), payload[i : i + 65536])
        for i in range(0, len(payload), 65536)
    )
    head = b"POST /peer/v1/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    answers, _ = await exchange(sidecar, head + framed + b"0\r\n\r\n")
    assert answers[0].status == 200
    assert hashlib.sha256(payload).hexdigest().encode() in answers[0].body
    assert peer[0].bodies[-1] == payload


async def test_expect_100_continue_is_answered(sidecar: Sidecar) -> None:
    """A client that waits for 100 Continue gets it, then its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.proxy.port)
    try:
        writer.write(
            b"POST /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert final.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"GET /peer/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /peer/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["garbage", "two-lengths", "length-and-chunked"],
)
async def test_malformed_or_ambiguous_framing_is_refused_and_closed(
    sidecar: Sidecar, peer: Any, data: bytes
) -> None:
    """Garbage and smuggling-shaped framing get 400 SC4011, a closed connection and no upstream call."""
    before = len(peer[0].bodies)
    answers, closed = await exchange(sidecar, data)
    assert answers[0].status == 400
    assert answers[0].header(b"x-sidecar-error") == b"SC4011"
    assert closed
    assert len(peer[0].bodies) == before  # nothing reached the upstream


async def test_oversized_head_is_431(sidecar: Sidecar, peer: Any) -> None:
    """A head over the limits gets 431 SC4013 and a closed connection."""
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    before = len(peer[0].bodies)
    pipelined = b"GET /peer/v1/after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answers, closed = await exchange(
        sidecar, b"GET /peer/x HTTP/1.1\r\n" + headers + b"\r\n" + pipelined
    )
    await asyncio.sleep(0.3)  # time enough for a wrongly started request to reach the peer
    assert len(peer[0].bodies) == before  # the request behind it was not forwarded either
    assert answers[0].status == 431
    assert answers[0].header(b"x-sidecar-error") == b"SC4013"
    assert closed


async def test_refusal_keeps_the_connection(sidecar: Sidecar) -> None:
    """A refused request does not cost the app its keep-alive connection."""
    data = b"GET /nowhere/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /peer/v1/y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answers, closed = await exchange(sidecar, data, answers=2)
    assert [a.status for a in answers] == [403, 200]
    assert answers[0].header(b"x-sidecar-error") == b"SC4001"
    assert not closed


async def test_client_gone_mid_body_does_not_break_the_listener(sidecar: Sidecar) -> None:
    """A client that leaves mid-upload does not disturb the next client."""
    _, writer = await asyncio.open_connection("127.0.0.1", sidecar.proxy.port)
    writer.write(b"POST /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nabc")
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.2)
    answers, _ = await exchange(sidecar, b"GET /peer/v1/ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answers[0].status == 200


@pytest.mark.parametrize("enabled", [True, False])
async def test_access_log_line_per_request_only_when_enabled(
    peer: tuple[Peer, str], make_config: MakeConfig, make_sidecar: MakeSidecar, enabled: bool
) -> None:
    """logging.access_log adds one proxy_access line per request (no id, no query); off, none."""
    cfg = make_config({"peer": api_key_upstream(peer[1], "peer")}, logging={"access_log": enabled})
    sc = await make_sidecar(cfg)
    r = await sc.admin.put(
        "/v1/credentials/peer", json={"upstream": "peer", "fields": {"api_key": KEY}}
    )
    assert r.status == 201
    with capture_logs() as logs:
        ok = await sc.proxy.get("/peer/v1/orders/12345?token=q")
        body = await ok.read()
        refused = await sc.proxy.get("/nowhere/x")
        assert (ok.status, refused.status) == (200, 403)
    lines = [e for e in logs if e["event"] == "proxy_access"]
    if not enabled:
        assert lines == []
        return
    assert [(e["status"], e["code"], e["upstream"]) for e in lines] == [
        (200, None, "peer"),
        (403, "SC4001", None),
    ]
    assert lines[0]["bytes_out"] == len(body)
    assert lines[0]["path_template"] == "/v1/orders/{id}"  # no id, no query
    assert all(e["duration_ms"] >= 0 for e in lines)
    assert KEY not in repr(logs)


@pytest.mark.parametrize("sent", [b"", b"GET /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_idle_and_stalled_connections_are_closed(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    """A keep-alive connection left idle, or a head that never ends, is closed after KEEPALIVE."""
    monkeypatch.setattr(proxyserver, "KEEPALIVE", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.proxy.port)
    try:
        writer.write(sent)
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed, nothing answered
    finally:
        writer.close()


async def test_pipelined_requests_with_bodies_keep_their_bodies(
    sidecar: Sidecar, peer: Any
) -> None:
    """Pipelined uploads of different sizes each reach the provider with their own body."""

    def post(body: bytes) -> bytes:
        return b"POST /peer/v1/p HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )

    bodies = [b"first", b"", b"x" * 70000, b"last"]
    answers, _ = await exchange(sidecar, b"".join(post(b) for b in bodies), answers=4)
    assert [a.status for a in answers] == [200] * 4
    assert peer[0].bodies[-4:] == bodies


async def test_connection_close_and_http10_are_honoured(sidecar: Sidecar) -> None:
    """Connection: close and plain HTTP/1.0 end the connection; HTTP/1.0 keep-alive is kept and said so."""
    _, closed = await exchange(
        sidecar, b"GET /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert closed
    answers, closed = await exchange(sidecar, b"GET /peer/v1/x HTTP/1.0\r\n\r\n")
    assert answers[0].status == 200 and closed
    answers, closed = await exchange(
        sidecar, b"GET /peer/v1/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    assert answers[0].status == 200 and not closed
    assert answers[0].header(b"connection") == b"keep-alive"


async def test_garbage_after_a_good_request_still_lets_it_finish(sidecar: Sidecar) -> None:
    """A request parsed before a garbage line is answered in full, then the garbage gets its 400 and the close."""
    data = b"GET /peer/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\ngarbage\r\n\r\n"
    answers, closed = await exchange(sidecar, data, answers=2)
    assert [a.status for a in answers] == [200, 400]
    assert answers[0].body == b"part0;part1;part2;part3;part4;"
    assert answers[1].header(b"x-sidecar-error") == b"SC4011"
    assert closed


async def test_upgrade_requests_are_answered_plainly_and_not_tunnelled(sidecar: Sidecar) -> None:
    """A WebSocket upgrade is proxied as a plain request; what follows it is never read."""
    data = (
        b"GET /peer/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /peer/v1/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    answers, closed = await exchange(sidecar, data, answers=2)
    assert [a.status for a in answers] == [200]
    assert b"/v1/ws" in answers[0].body
    assert closed


async def test_more_pipelined_requests_than_the_queue_holds_are_all_answered(
    sidecar: Sidecar,
) -> None:
    """Past MAX_PIPELINE queued requests the socket is paused, then resumed: none is lost."""
    count = proxyserver.MAX_PIPELINE * 3
    data = b"".join(b"GET /peer/v1/n%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i for i in range(count))
    answers, closed = await exchange(sidecar, data, answers=count)
    assert [a.status for a in answers] == [200] * count
    assert [a.body.split(b'"path": "')[1].split(b'"')[0] for a in answers] == [
        b"/v1/n%d" % i for i in range(count)
    ]
    assert not closed


async def internal_error(sc: Sidecar) -> list[dict[str, Any]]:
    """One request that must end in 500 SC1000 and a closed connection; what was logged."""
    with capture_logs() as logs:
        answers, closed = await exchange(sc, b"GET /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answers[0].status == 500
    assert answers[0].header(b"x-sidecar-error") == b"SC1000"
    assert closed
    return logs


async def test_an_internal_error_is_500_sc1000_and_closes(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the pipeline answers 500 SC1000 (audited), not a hung or half-written answer."""

    async def broken(*_args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxyserver.proxy, "forward", broken)
    logs = await internal_error(sidecar)
    audited = [e for e in logs if e["event"] == "proxy_request"]
    assert [(e["status"], e["code"]) for e in audited] == [(500, "SC1000")]


async def test_a_failing_parser_callback_is_ours_not_the_clients(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in our own parser callback is 500 SC1000 and logged, not 400 SC4011."""

    def broken(_self: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxyserver.ProxyProtocol, "_incoming", broken)
    logs = await internal_error(sidecar)
    assert [e["error"] for e in logs if e["event"] == "proxy_parser_callback_failed"] == [
        "RuntimeError"
    ]


# -- issue 12: framing both ways, limits while bytes arrive, one refusal path ----------------


class Recorded:
    """What one connection to the recording provider carried."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = 0  # whole requests llhttp saw on it
        self.eof = False


class Recorder(asyncio.Protocol):
    """A provider of our own: records every byte it is sent, answers 200 to each whole request."""

    def __init__(self, server: RecordingUpstream) -> None:
        self.server = server
        self.seen = Recorded()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.append(self.seen)
        self.server.changed()

    def data_received(self, data: bytes) -> None:
        self.seen.data += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()
        self.server.changed()

    def on_headers_complete(self) -> None:
        self.server.heads += 1

    def on_message_complete(self) -> None:
        self.seen.complete += 1
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def eof_received(self) -> None:
        self.seen.eof = True
        self.server.changed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.seen.eof = True
        self.server.changed()


class RecordingUpstream:
    """A loopback server of Recorder connections; ``until`` waits for a condition on them."""

    def __init__(self) -> None:
        self.conns: list[Recorded] = []
        self.heads = 0
        self._event = asyncio.Event()
        self.server: asyncio.Server | None = None

    def changed(self) -> None:
        self._event.set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def until(self, condition: Callable[[], bool], wait: float = 5) -> None:
        async with asyncio.timeout(wait):
            while not condition():
                self._event.clear()
                await self._event.wait()


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingUpstream]:
    rec = RecordingUpstream()
    loop = asyncio.get_running_loop()
    rec.server = await loop.create_server(lambda: Recorder(rec), "127.0.0.1", 0)
    yield rec
    rec.server.close()
    await rec.server.wait_closed()


async def recording_sidecar(
    rec: RecordingUpstream, make_config: MakeConfig, make_sidecar: MakeSidecar, **extra: Any
) -> Sidecar:
    """A sidecar whose upstream ``rec`` is the recording provider, with a stored credential."""
    upstream = api_key_upstream(rec.url, "rec", **extra.pop("upstream", {}))
    sc = await make_sidecar(make_config({"rec": upstream}, **extra))
    r = await sc.admin.put(
        "/v1/credentials/rec", json={"upstream": "rec", "fields": {"api_key": KEY}}
    )
    assert r.status == 201
    return sc


@pytest.fixture
async def rsc(
    recorder: RecordingUpstream, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> Sidecar:
    return await recording_sidecar(recorder, make_config, make_sidecar)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle(condition: Callable[[], bool]) -> bool:
    """Let closes scheduled for the next loop turns happen; whether ``condition`` came true."""
    for _ in range(200):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


CHUNKED = b"POST /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"POST /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: identity\r\n\r\n",
        CHUNKED + b"FFFFFFFFFFFFFFFFFF\r\n",
        CHUNKED + b"5\nhello\n0\n\n",
        CHUNKED + b"5\r\nhelloXX",
        CHUNKED.replace(b": chunked", b": identity, chunked") + b"0\r\n\r\n",
        CHUNKED.replace(b": chunked", b": gzip") + b"0\r\n\r\n",
        CHUNKED.replace(b": chunked", b": chunked, chunked") + b"0\r\n\r\n",
        CHUNKED.replace(b"Host", b"Transfer-Encoding: gzip\r\nHost") + b"0\r\n\r\n",
        b"GET /rec/x\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET  /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /rec/x  HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /rec/x HTTP/1.1\r\nAccept: */*\r\n\r\n",
        b"\rGET /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ],
    ids=[
        "te-identity",
        "chunk-size-overflow",
        "lf-only-chunk-lines",
        "garbage-after-chunk",
        "te-identity-chunked",
        "te-gzip",
        "te-chunked-chunked",
        "te-two-fields",
        "no-http-version",
        "two-sp-before-target",
        "two-sp-before-version",
        "http11-without-host",
        "bare-cr-before-line",
    ],
)
async def test_head_refused_in_its_own_read_never_reaches_the_upstream(
    rsc: Sidecar, recorder: RecordingUpstream, data: bytes
) -> None:
    """Input llhttp rejects in the read that completed the head, or a head it accepts that
    h11 and RFC 9112 refuse (a coding other than chunked, no version, a doubled SP, 1.1 without
    Host): 400 SC4011, closed, not a byte upstream, logged once, no socket or task left."""
    rounds = 20
    fds, tasks = open_fds(), len(asyncio.all_tasks())
    with capture_logs() as logs:
        for _ in range(rounds):
            answers, closed = await exchange(rsc, data)
            assert [a.status for a in answers] == [400]
            assert answers[0].header(b"x-sidecar-error") == b"SC4011"
            assert closed
    assert recorder.conns == []  # not even the head (nor the credential) left the pod
    refused = [e for e in logs if e["event"] == "proxy_refused"]
    assert [e["code"] for e in refused] == ["SC4011"] * rounds
    assert await settle(lambda: not rsc.proxy.server.listener.connections)  # type: ignore[attr-defined]
    assert await settle(lambda: open_fds() <= fds), (fds, open_fds())
    assert await settle(lambda: len(asyncio.all_tasks()) <= tasks)
    print(f"fds {fds} -> {open_fds()}, tasks {tasks} -> {len(asyncio.all_tasks())}")


async def test_trailing_whitespace_of_header_values_is_not_forwarded(
    rsc: Sidecar, recorder: RecordingUpstream
) -> None:
    """SP and HTAB after a field value are not part of it (RFC 9112 §5): the provider gets the
    value without them, inner whitespace kept."""
    data = b"GET /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ows: a \tb \t \r\nX-Tab: c\t\r\n\r\n"
    answers, _ = await exchange(rsc, data)
    assert [a.status for a in answers] == [200]
    (upstream,) = recorder.conns
    assert b"\r\nX-Ows: a \tb\r\n" in upstream.data
    assert b"\r\nX-Tab: c\r\n" in upstream.data


async def test_empty_lines_and_body_bytes_before_a_request_line_are_no_refusal(
    rsc: Sidecar, recorder: RecordingUpstream
) -> None:
    """CRLF lines before a request line are skipped (RFC 9112 §2.2), and a body that ends in CR
    or LF is no empty line: the request after it is forwarded, not refused."""
    get = b"GET /rec/y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    post = b"POST /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\n"
    data = b"\r\n\r\n" + get + b"\r\n" + post + b"ab\r" + get + post + b"a\r\n" + get
    answers, _ = await exchange(rsc, data, answers=5)
    assert [a.status for a in answers] == [200] * 5
    assert sum(c.complete for c in recorder.conns) == 5


async def test_bad_chunk_while_streaming_aborts_the_upstream_request(
    rsc: Sidecar, recorder: RecordingUpstream
) -> None:
    """A body already streaming upstream that turns malformed: the upstream connection is closed
    without the last chunk, the app gets 400 SC4011 and a close, refused (and audited) once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rsc.proxy.port)
    with capture_logs() as logs:
        try:
            writer.write(CHUNKED + b"5\r\nhello\r\n")
            await recorder.until(
                lambda: bool(recorder.conns) and b"hello" in recorder.conns[0].data
            )
            writer.write(b"zz\r\n")  # not a chunk size
            answers, closed = await read_answers(reader, 1)
        finally:
            writer.close()
        await recorder.until(lambda: recorder.conns[0].eof)
    (upstream,) = recorder.conns
    assert [a.status for a in answers] == [400]
    assert answers[0].header(b"x-sidecar-error") == b"SC4011"
    assert closed
    assert upstream.complete == 0  # the provider never saw a whole request
    assert upstream.data.endswith(b"5\r\nhello\r\n")  # no terminating chunk followed
    refused = [e for e in logs if e["event"] == "proxy_refused"]
    assert [(e["code"], e["method"]) for e in refused] == [("SC4011", "POST")]
    assert [e["code"] for e in logs if e["event"] == "proxy_request"] == ["SC4011"]


async def test_client_gone_mid_body_aborts_the_upstream_request(
    rsc: Sidecar, recorder: RecordingUpstream
) -> None:
    """An app that leaves mid-upload: the upstream request is cut short, and it is one refusal
    (SC4015) in the log, not an unhandled error."""
    _, writer = await asyncio.open_connection("127.0.0.1", rsc.proxy.port)
    with capture_logs() as logs:
        writer.write(b"POST /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nabc")
        await recorder.until(
            lambda: bool(recorder.conns) and recorder.conns[0].data.endswith(b"abc")
        )
        writer.close()
        await recorder.until(lambda: recorder.conns[0].eof)
        assert await settle(lambda: any(e["event"] == "proxy_refused" for e in logs))
    assert recorder.conns[0].complete == 0
    assert [e["code"] for e in logs if e["event"] == "proxy_refused"] == ["SC4015"]
    assert [e for e in logs if e["event"] == "proxy_unhandled"] == []


def count_reads(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Bytes each listener connection received, by connection: an observer around data_received."""
    seen: dict[int, int] = {}
    original = proxyserver.ProxyProtocol.data_received

    def counting(self: proxyserver.ProxyProtocol, data: bytes) -> None:
        seen[id(self)] = seen.get(id(self), 0) + len(data)
        original(self, data)

    monkeypatch.setattr(proxyserver.ProxyProtocol, "data_received", counting)
    return seen


async def flood(sock: socket.socket, blocks: list[bytes]) -> int:
    """Write blocks until the peer stops reading; the bytes the local socket accepted."""
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        for block in blocks:
            await loop.sock_sendall(sock, block)
            sent += len(block)
    except OSError:  # reset or broken pipe: the sidecar closed
        pass
    return sent


async def flood_head(sc: Sidecar, blocks: list[bytes]) -> tuple[list[Answer], bool, int]:
    """Send a head that never ends while reading what comes back on a plain socket (a stream
    reader would drop an answer that arrived before the reset the sidecar's close causes)."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", sc.proxy.port))
    sock.setblocking(False)
    sending = asyncio.create_task(flood(sock, blocks))
    got = Answers()
    closed = False
    try:
        async with asyncio.timeout(10):
            while not closed:
                try:
                    chunk = await loop.sock_recv(sock, 65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got.parser.feed_data(chunk)
                else:
                    closed = True
                    got.closed()
    finally:
        sent = await sending
        sock.close()
    return got.done, closed, sent


READ_MAX = 256 * 1024  # the most one socket read hands data_received (asyncio and uvloop)


async def test_never_ending_header_line_is_cut_at_the_head_limit(
    rsc: Sidecar, recorder: RecordingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header line that never ends is refused 431 once MAX_HEAD bytes of head were fed to the
    parser, and the sidecar stops reading there (bounded memory, linear cost)."""
    reads = count_reads(monkeypatch)
    blocks = [b"POST /rec/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX: "] + [b"a" * 65536] * 128  # 8 MiB
    started = time.perf_counter()
    with capture_logs() as logs:
        answers, closed, sent = await flood_head(rsc, blocks)
    print(
        f"sent {sent} B, sidecar read {list(reads.values())} B in {time.perf_counter() - started:.3f} s"
    )
    assert [a.status for a in answers] == [431]
    assert answers[0].header(b"x-sidecar-error") == b"SC4013"
    assert closed
    refused = [e for e in logs if e["event"] == "proxy_refused"]
    assert [(e["code"], e["head_bytes"]) for e in refused] == [("SC4013", proxyserver.MAX_HEAD)]
    (read,) = reads.values()
    assert proxyserver.MAX_HEAD <= read <= proxyserver.MAX_HEAD + READ_MAX
    assert recorder.conns == []


async def test_many_short_header_lines_are_refused_at_the_count_limit(
    rsc: Sidecar, recorder: RecordingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 MiB of ``X:a`` lines are refused 431 at the header-count limit, not read to the end."""
    reads = count_reads(monkeypatch)
    lines = b"X:a\r\n" * (64 * 1024 // 5)
    blocks = [b"GET /rec/x HTTP/1.1\r\n"] + [lines] * (12 * 16)  # 12 MiB of headers
    with capture_logs() as logs:
        answers, closed, sent = await flood_head(rsc, blocks)
    print(f"sent {sent} B, sidecar read {list(reads.values())} B")
    assert [a.status for a in answers] == [431]
    assert answers[0].header(b"x-sidecar-error") == b"SC4013"
    assert closed
    assert [e["code"] for e in logs if e["event"] == "proxy_refused"] == ["SC4013"]
    (read,) = reads.values()
    assert read <= READ_MAX  # refused within the first read: 129 headers are 645 bytes
    assert recorder.conns == []


async def test_100_continue_waits_for_the_answer_ahead_of_it(sidecar: Sidecar, peer: Any) -> None:
    """A pipelined request expecting 100 Continue behind a streamed answer gets it only after
    that answer ended, when its own body is first read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.proxy.port)
    continue_ = b"HTTP/1.1 100 Continue\r\n\r\n"
    try:
        writer.write(
            b"GET /peer/gated HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"POST /peer/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await asyncio.wait_for(peer[0].entered.wait(), 5)  # the first answer is streaming
        peer[0].release.set()
        raw = await asyncio.wait_for(reader.readuntil(continue_), 5)
        ahead = Answers()
        ahead.parser.feed_data(raw[: -len(continue_)])
        assert [(a.status, a.body) for a in ahead.done] == [(200, b"first;second;")]
        assert ahead.current is None  # nothing half-parsed: the 100 came after a whole answer
        writer.write(b"hello")
        answers, _ = await read_answers(reader, 1)
        assert [a.status for a in answers] == [200]
        assert b'"len": 5' in answers[0].body
    finally:
        writer.close()


async def test_stalled_bodies_time_out_and_free_the_upstream_pool(
    recorder: RecordingUpstream,
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bodies that stall get 408 SC4014 after listen.body_idle_timeout, their upstream requests
    are cut and the pool slots they held go at once to a fast request that waited for one."""
    stalled = 30
    sc = await recording_sidecar(
        recorder,
        make_config,
        make_sidecar,
        listen={"body_idle_timeout": 0.5},
        upstream={"timeout": 3},
    )
    pool = sc.runtime.upstreams["rec"].pool
    assert pool is not None
    monkeypatch.setattr(pool, "_limit", stalled)  # the stalled requests fill the pool exactly
    head = b"POST /rec/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n0123456789"
    conns = [await asyncio.open_connection("127.0.0.1", sc.proxy.port) for _ in range(stalled)]
    try:
        started = time.perf_counter()
        for _, writer in conns:
            writer.write(head)
        await recorder.until(lambda: recorder.heads >= stalled)
        fast, _ = await exchange(sc, b"GET /rec/fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        fast_done = time.perf_counter() - started
        slow = [await read_answers(reader, 1) for reader, _ in conns]
        print(
            f"fast answered after {fast_done:.3f} s; stalls answered by {time.perf_counter() - started:.3f} s"
        )
    finally:
        for _, writer in conns:
            writer.close()
    assert [a.status for a in fast] == [200]
    assert [(a.status, a.header(b"x-sidecar-error")) for (answers, _) in slow for a in answers] == [
        (408, b"SC4014")
    ] * stalled
    assert all(closed for _, closed in slow)
    await recorder.until(lambda: sum(c.eof for c in recorder.conns) >= stalled)
    assert sum(c.complete for c in recorder.conns) == 1  # only the fast request was whole


async def test_a_large_head_after_pipelined_requests_is_not_miscounted(
    rsc: Sidecar, recorder: RecordingUpstream
) -> None:
    """A legitimate head just under the limit, pipelined behind other requests in the same
    read, is served: the limit counts only its own bytes, never its neighbours'."""
    small = b"GET /rec/s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 1500  # about 48 KiB
    lines = b"".join(b"X-%03d: %s\r\n" % (i, b"v" * 590) for i in range(100))  # 60 KiB
    big = b"GET /rec/big HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n"
    assert len(small) + len(big) > proxyserver.MAX_HEAD > len(big)
    answers, closed = await exchange(rsc, small + big, answers=1501)
    assert [a.status for a in answers] == [200] * 1501
    assert not closed
    assert sum(c.complete for c in recorder.conns) == 1501


async def test_a_queued_request_whose_body_breaks_never_starts(
    peer: tuple[Peer, str],
    recorder: RecordingUpstream,
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
) -> None:
    """A pipelined upload queued behind a streaming answer, whose chunked body turns out
    malformed before its turn: it never reaches the upstream; the answer ahead completes, then
    400 SC4011 and a close."""
    upstreams = {
        "peer": api_key_upstream(peer[1], "peer"),
        "rec": api_key_upstream(recorder.url, "rec"),
    }
    sc = await make_sidecar(make_config(upstreams))
    for name in upstreams:
        r = await sc.admin.put(
            f"/v1/credentials/{name}", json={"upstream": name, "fields": {"api_key": KEY}}
        )
        assert r.status == 201
    reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy.port)
    try:
        with capture_logs() as logs:
            writer.write(
                b"GET /peer/gated HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + CHUNKED + b"5\r\nhello\r\n"
            )
            await asyncio.wait_for(peer[0].entered.wait(), 5)
            writer.write(b"zz\r\n")  # the queued body breaks while the answer ahead streams
            assert await settle(lambda: any(e["event"] == "proxy_refused" for e in logs))
        peer[0].release.set()
        answers, closed = await read_answers(reader, 2)
    finally:
        writer.close()
    assert [a.status for a in answers] == [200, 400]
    assert answers[0].body == b"first;second;"
    assert answers[1].header(b"x-sidecar-error") == b"SC4011"
    assert closed
    assert recorder.conns == []  # the queued upload never left the pod, not even its head


async def test_stalled_body_read_whole_is_408_with_nothing_sent(
    recorder: RecordingUpstream, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A scheme that reads the body before sending (PlaceToPay) and a body that stalls:
    408 SC4014 and a close, and not a byte reached the provider."""
    upstream = {
        "url": recorder.url,
        "scheme": "placetopay",
        "credential": "p2p",
        "environment": "sandbox",
    }
    sc = await make_sidecar(make_config({"p2p": upstream}, listen={"body_idle_timeout": 0.3}))
    r = await sc.admin.put(
        "/v1/credentials/p2p",
        json={"upstream": "p2p", "fields": {"login": "l", "secret_key": "s"}},
    )
    assert r.status == 201
    before = sum(len(c.data) for c in recorder.conns)  # (saving may have probed the provider)
    answers, closed = await exchange(
        sc, b'POST /p2p/api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"a":'
    )
    assert [(a.status, a.header(b"x-sidecar-error")) for a in answers] == [(408, b"SC4014")]
    assert closed
    assert sum(len(c.data) for c in recorder.conns) == before  # not a byte of it was sent
