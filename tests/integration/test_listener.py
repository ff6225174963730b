"""The proxy listener's own HTTP/1.1 handling, on the wire: framing, keep-alive, refusals.

These speak raw bytes to the listener, because the properties under test (pipelining order,
re-framing, 100-continue, what happens on garbage) are invisible through a client library.
"""

from __future__ import annotations

import asyncio
import hashlib
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

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/chunked", self.chunked)
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

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


async def exchange(sc: Sidecar, data: bytes, answers: int = 1) -> tuple[list[Answer], bool]:
    """Send raw bytes; read ``answers`` responses; (answers, whether the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sc.proxy.port)
    writer.write(data)
    done: list[Answer] = []
    current = Answer()
    parser = httptools.HttpResponseParser(current)
    closed = False
    try:
        while len(done) < answers:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                closed = True
                if current.headers:  # a close-delimited body ends here
                    current.status = parser.get_status_code()
                    done.append(current)
                break
            rest = chunk
            while rest:
                try:
                    parser.feed_data(rest)
                    rest = b""
                except httptools.HttpParserUpgrade:  # pragma: no cover - not expected
                    rest = b""
                if current.done:
                    current.status = parser.get_status_code()
                    done.append(current)
                    current = Answer()
                    parser = httptools.HttpResponseParser(current)
        if not closed:
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
            except TimeoutError:
                closed = False
    finally:
        writer.close()
    return done, closed


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
    """A request already on its way is answered in full before a later garbage line closes the connection."""
    data = b"GET /peer/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\ngarbage\r\n\r\n"
    answers, closed = await exchange(sidecar, data, answers=2)
    assert [a.status for a in answers] == [200]
    assert answers[0].body == b"part0;part1;part2;part3;part4;"
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
