"""CONNECT on the one engine: the listener answers it, and serves the tunnel like any connection.

Raw sockets throughout, so what crosses the wire is exactly what is asserted: a refused CONNECT
is answered and closed by the listener (nothing after it is read, by any engine), and inside a
tunnel keep-alive, pipelining, Host checks and graceful stop behave as on a plain connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from structlog.testing import capture_logs

from sidecar.proxy.listener import ProxyListener
from tests.intercept.conftest import HOST, SLOW, WALLETS, Intercepting
from tests.proxyserver import ProxyTestServer

GET_WALLETS = f"GET /api/v1/wallets/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
BIG = 100 * 1024


def listener(it: Intercepting) -> ProxyListener:
    server = it.sidecar.proxy.server
    assert isinstance(server, ProxyTestServer)
    return server.listener


async def connect(
    it: Intercepting, target: str, extra: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """CONNECT (with ``extra`` header lines) and the answer's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", it.sidecar.proxy.port)
    writer.write(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target.encode(), b"x", extra))
    await writer.drain()
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


async def tunnel(it: Intercepting) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An established, TLS-verified tunnel to the IntaSend host."""
    reader, writer, head = await connect(it, f"{HOST}:443")
    assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    ctx = ssl.create_default_context(cafile=str(it.ca_file))
    await writer.start_tls(ctx, server_hostname=HOST)
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One answer with a Content-Length: status, head and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return int(head[9:12]), head, await reader.readexactly(length)


async def rest(reader: asyncio.StreamReader) -> bytes:
    """Whatever still arrives until the sidecar closes (a reset counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize(
    "follow",
    [
        b"GET /intasend/api/v1/wallets/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX: " + b"a" * BIG + b"\r\n\r\n",
    ],
    ids=["valid-request", "100KiB-head"],
)
async def test_refused_connect_is_answered_and_closed_by_the_listener(
    intercepting: Intercepting, follow: bytes
) -> None:
    """403 SC4001 with Connection: close, then nothing more: what follows is never read."""
    reader, writer, head = await connect(intercepting, "example.com:443")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"X-Sidecar-Error: SC4001\r\n" in head and b"Connection: close\r\n" in head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert b"SC4001" in await reader.readexactly(length)
    try:
        writer.write(follow)
        await writer.drain()
    except ConnectionError:
        pass  # already closed: that is the point
    assert await rest(reader) == b""
    writer.close()
    assert intercepting.peer.seen == []


async def test_connect_with_an_oversized_head_is_431_from_the_listener(
    intercepting: Intercepting,
) -> None:
    """A 100 KiB CONNECT head is refused by the listener's head limit, as any other request."""
    reader, writer, head = await connect(intercepting, f"{HOST}:443", b"X: %s\r\n" % (b"a" * BIG))
    assert head.startswith(b"HTTP/1.1 431 ") and b"SC4013" in head
    await rest(reader)
    writer.close()


async def test_connect_with_tls_bytes_before_the_answer_is_refused(
    intercepting: Intercepting,
) -> None:
    """Bytes sent behind the CONNECT head, before the 200, cannot be kept across the switch."""
    _, writer, head = await connect(intercepting, f"{HOST}:443", b"\r\n\x16\x03\x01")
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 ") and b"SC4011" in head


async def test_several_requests_share_one_tunnel(intercepting: Intercepting) -> None:
    """Keep-alive inside the tunnel: three requests in turn, one connection, three answers."""
    reader, writer = await tunnel(intercepting)
    for _ in range(3):
        writer.write(GET_WALLETS)
        status, head, body = await answer(reader)
        assert (status, json.loads(body)) == (200, WALLETS)
        assert b"connection: close" not in head.lower()
    writer.close()
    assert len(intercepting.peer.seen) == 3


async def test_pipelined_requests_in_a_tunnel_are_answered_in_order(
    intercepting: Intercepting,
) -> None:
    """Three requests in one TLS write get their three answers, in the order sent."""
    reader, writer = await tunnel(intercepting)
    other = f"GET /api/v1/other/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    writer.write(GET_WALLETS + other + GET_WALLETS)
    statuses = [(await answer(reader))[0] for _ in range(3)]
    writer.close()
    assert statuses == [200, 404, 200]
    assert [s["path"] for s in intercepting.peer.seen] == [
        "/api/v1/wallets/",
        "/api/v1/other/",
        "/api/v1/wallets/",
    ]


async def test_host_mismatch_in_a_tunnel_is_refused_and_the_tunnel_kept(
    intercepting: Intercepting,
) -> None:
    """A request naming a foreign Host is refused (421 SC1015, the host guard runs first); the next good one on the tunnel is served."""
    reader, writer = await tunnel(intercepting)
    writer.write(b"GET /api/v1/wallets/ HTTP/1.1\r\nHost: other.example\r\n\r\n" + GET_WALLETS)
    status, head, _ = await answer(reader)
    assert (status, b"X-Sidecar-Error: SC1015" in head) == (421, True)
    assert (await answer(reader))[0] == 200
    writer.close()
    assert len(intercepting.peer.seen) == 1


@pytest.mark.parametrize(
    "request_line",
    [f"CONNECT {HOST}:443 HTTP/1.1", f"GET https://{HOST}/api/v1/wallets/ HTTP/1.1"],
    ids=["connect", "absolute-form"],
)
async def test_only_origin_form_requests_are_served_in_a_tunnel(
    intercepting: Intercepting, request_line: str
) -> None:
    """No tunnel in a tunnel, and no absolute-form target: refused, nothing sent upstream."""
    reader, writer = await tunnel(intercepting)
    writer.write(f"{request_line}\r\nHost: {HOST}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith((b"HTTP/1.1 403 ", b"HTTP/1.1 400 "))
    assert intercepting.peer.seen == []


async def test_stop_drains_a_busy_tunnel_then_closes_it(intercepting: Intercepting) -> None:
    """Graceful stop: the request in flight inside a tunnel gets its whole answer, then EOF."""
    reader, writer = await tunnel(intercepting)
    writer.write(f"GET {SLOW} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    await asyncio.wait_for(intercepting.peer.arrived.wait(), 5)
    assert len(listener(intercepting).connections) == 1  # the tunnel is tracked
    stopping = asyncio.create_task(listener(intercepting).stop(10.0))
    await asyncio.sleep(0)  # stop() runs its first round: the busy tunnel is left open
    intercepting.peer.release.set()
    status, _, body = await answer(reader)
    assert (status, json.loads(body)) == (200, WALLETS)
    assert await rest(reader) == b""
    await asyncio.wait_for(stopping, 10)
    writer.close()
    assert listener(intercepting).connections == set()


async def test_stop_closes_a_tunnel_whose_handshake_never_came(
    intercepting: Intercepting,
) -> None:
    """A CONNECT answered 200 whose client never starts TLS does not hold the stop."""
    reader, writer, head = await connect(intercepting, f"{HOST}:443")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(listener(intercepting).handshakes) == 1
    await asyncio.wait_for(listener(intercepting).stop(10.0), 3)
    assert await rest(reader) == b""
    writer.close()
    assert listener(intercepting).handshakes == set()


async def test_refused_connect_is_counted_and_audited_like_any_refusal(
    intercepting: Intercepting,
) -> None:
    """The listener's one error path: the refusal is logged, audited and counted by its code."""
    registry = intercepting.sidecar.runtime.metrics.registry

    def refused() -> float:
        return registry.get_sample_value("sidecar_proxy_refused_total", {"code": "SC4001"}) or 0.0

    before = refused()
    with capture_logs() as logs:
        reader, writer, head = await connect(intercepting, "example.com:443")
        await rest(reader)
        writer.close()
        await asyncio.sleep(0)  # audit lines are written at the end of the loop's turn
    assert head.startswith(b"HTTP/1.1 403 ")
    [line] = [e for e in logs if e["event"] == "proxy_request"]
    assert (line["method"], line["status"], line["code"]) == ("CONNECT", 403, "SC4001")
    assert refused() == before + 1
