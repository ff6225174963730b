"""A lean, pooled HTTP/1.1 client for the proxy hot path.

Why it exists: aiohttp's ``ClientSession`` cost about a quarter of the sidecar's CPU per proxied
request (URL objects, tracing hooks, cookie and redirect machinery, a dozen objects per call).
A proxy needs much less: keep-alive connections to one origin, a request head written as one
string, and the answer streamed back. Responses are parsed by ``httptools`` (llhttp, Node's
parser), never by hand; only the request head is built here.

What it deliberately does not do: redirects, cookies, decompression (bodies pass through as
received), proxies, ``Expect: 100-continue`` (interim responses are skipped), pipelining,
upgrades, HTTP/2. HTTP/1.1 only, one origin per :class:`Pool`.

Three files: this one, the pool (slots, idle connections, retry, the request head);
``connection.py``, one connection (writing a request, parsing its answer, interim and framing
rules); ``response.py``, what a request gives back (:class:`Response`, the errors and ``sent``).

Timeouts: ``timeout`` bounds everything up to the response head (waiting for a free connection,
connecting, sending the request body, the head itself), then each wait for more body bytes;
``pool_timeout`` bounds the wait for a free connection alone (kind ``"pool"``, nothing sent).
A streamed request body whose source stalls is not interrupted; the caller owns that source.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable

from yarl import URL

from sidecar.proxy.connection import Connection as _Conn
from sidecar.proxy.response import SENT, Response, UpstreamConnectionError, UpstreamTimeout

__all__ = ["SENT", "Pool", "Response", "UpstreamConnectionError", "UpstreamTimeout"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NEEDS_LENGTH = frozenset({"POST", "PUT", "PATCH"})
# Written by the pool itself (framing, Host) or meaningful only to one hop: never a scheme's.
_WIRE_OWNED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer"}
    | {"upgrade", "proxy-connection"}
)


def _framing(
    method: str, body: bytes | AsyncIterator[bytes] | None, content_length: int | None
) -> tuple[str, bytes | None, AsyncIterator[bytes] | None]:
    """The framing header, and the body as bytes to send with the head or as a stream."""
    if body is None or isinstance(body, bytes):
        if body:
            return f"Content-Length: {len(body)}\r\n", body, None
        return ("Content-Length: 0\r\n" if method in _NEEDS_LENGTH else ""), None, None
    if content_length is None:
        return "Transfer-Encoding: chunked\r\n", None, body
    return f"Content-Length: {content_length}\r\n", None, body


def _expire(waiter: asyncio.Future[_Conn | None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("no free connection in time", "pool"))


class Pool:
    """Keep-alive connections to one origin (scheme://host:port)."""

    def __init__(
        self,
        url: URL,
        ssl_context: ssl.SSLContext | None,
        *,
        limit: int = 256,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
        pool_timeout: float | None = None,
    ) -> None:
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) origin: {url.origin()}")
        self._host = url.raw_host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        self._suffix = f" HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._keepalive = keepalive_timeout
        self._pool_timeout = timeout if pool_timeout is None else pool_timeout
        self._idle: deque[_Conn] = deque()  # most recently used on the right
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._open = 0  # connections counted against limit: connecting, busy or idle
        self._closed = False
        self._tls_gen = 0  # bumped by use_tls; a connection of an older one is not reused

    @property
    def idle_count(self) -> int:
        """Open connections waiting in the pool for the next request."""
        return len(self._idle)

    @property
    def in_use(self) -> int:
        """Slots taken by a request: connecting, sending, or holding an unreleased answer."""
        return self._open - len(self._idle)

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        content_length: int | None = None,
    ) -> Response:
        if self._closed:
            raise UpstreamConnectionError("pool is closed", "pool_closed")
        loop = asyncio.get_running_loop()
        framing, data, stream = _framing(method, body, content_length)
        head = self._head(method, target, headers, framing)
        deadline = loop.time() + self._timeout
        retry = stream is None and method in _IDEMPOTENT
        fresh = False
        written = 0  # the most any attempt wrote: what the caller may tell the app
        while True:
            try:
                conn = await self._acquire(loop, deadline, fresh)
            except (UpstreamConnectionError, UpstreamTimeout) as exc:
                exc.sent = SENT[written]
                raise
            try:
                return await conn.send(
                    head, data, stream, content_length, method == "HEAD", deadline
                )
            except (UpstreamConnectionError, UpstreamTimeout) as exc:
                written = max(written, conn.written)
                exc.sent = SENT[written]
                # A kept-alive connection the upstream closed as we reused it: resend once if
                # nothing was sent yet, or the request is idempotent and fully replayable.
                if (
                    isinstance(exc, UpstreamTimeout)
                    or fresh
                    or not conn.reused
                    or conn.got_bytes
                    or (conn.active and not retry)
                ):
                    raise
                fresh = True

    def _head(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], framing: str
    ) -> bytes:
        """The request head, encoded once; CR, LF or a space that would split it is refused,
        and so is a framing or connection header the app's request could not bring (the
        pipeline drops those): one a scheme set would be a second Content-Length (smuggling)."""
        pairs = list(headers)
        if any(name.lower() in _WIRE_OWNED for name, _ in pairs):
            raise ValueError("a framing or connection header set by a scheme")
        lines = [f"{name}: {value}\r\n" for name, value in pairs]
        text = f"{method} {target}{self._suffix}{''.join(lines)}{framing}\r\n"
        crlf = len(lines) + (4 if framing else 3)
        if text.count("\n") != crlf or text.count("\r") != crlf or " " in target:
            raise ValueError("CR, LF or space inside the request line or a header")
        return text.encode("utf-8", "surrogateescape")  # as aiohttp decoded the app's bytes

    def use_tls(self, ssl_context: ssl.SSLContext) -> None:
        """New connections use ``ssl_context`` (a replaced client certificate); idle ones close
        now, busy ones after their current request (``_put_idle``), never in the middle of it."""
        if self._ssl is None:
            return
        self._ssl = ssl_context
        self._tls_gen += 1
        for conn in list(self._idle):
            conn.close()

    async def close(self) -> None:
        """Close idle connections and refuse new requests; requests in flight finish."""
        self._closed = True
        idle = list(self._idle)
        for conn in idle:
            conn.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamConnectionError("pool is closed", "pool_closed"))
        if idle:
            await asyncio.wait([conn.lost for conn in idle], timeout=1.0)

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, deadline: float, fresh: bool
    ) -> _Conn:
        idle = self._idle
        while True:
            if self._closed:
                raise UpstreamConnectionError("pool is closed", "pool_closed")
            if not fresh:
                oldest = loop.time() - self._keepalive
                while idle:
                    conn = idle.pop()
                    conn.idle = False
                    if conn.idle_since > oldest and not conn.transport.is_closing():
                        return conn
                    conn.close()
            elif idle and self._open >= self._limit:  # make room for the new connection
                conn = idle.popleft()
                conn.idle = False
                conn.close()
            if self._open < self._limit:
                self._open += 1
                return await self._connect(loop, deadline)
            got = await self._queue(loop, min(deadline, loop.time() + self._pool_timeout))
            if got is None:  # a slot was handed over
                return await self._connect(loop, deadline)
            if not fresh:
                return got
            got.close()

    async def _queue(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn | None:
        """Wait, first come first served, for a connection or a free slot."""
        waiter: asyncio.Future[_Conn | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                got = waiter.result()  # granted, then cancelled before running: pass it on
                if got is None:
                    self._slot_freed()
                else:
                    self._put_idle(got)
            raise
        finally:
            timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Conn:
        """Open a connection in a slot already counted in ``_open``."""
        conn = _Conn(self, loop)
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + self._connect_timeout)):
                await loop.create_connection(
                    lambda: conn,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except BaseException as exc:
            conn.close()
            where = f"{self._host}:{self._port}"
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"connecting to {where} timed out", "connect") from exc
            if isinstance(exc, ssl.SSLError):
                raise UpstreamConnectionError(f"TLS with {where} failed: {exc}", "tls") from exc
            if isinstance(exc, OSError):
                raise UpstreamConnectionError(
                    f"cannot connect to {where}: {exc}", "connect"
                ) from exc
            raise
        return conn

    def _put_idle(self, conn: _Conn) -> None:
        conn.active = False
        conn.reused = True
        conn.resp = None
        stale = conn.tls_gen != self._tls_gen  # made with a replaced client certificate
        if self._closed or conn.dead or conn.transport.is_closing() or stale:
            conn.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        now = conn.loop.time()
        conn.idle_since = now
        conn.idle = True
        idle = self._idle
        idle.append(conn)
        while idle[0].idle_since < now - self._keepalive:
            idle[0].close()

    def _slot_freed(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter: _open unchanged
                return
        self._open -= 1
