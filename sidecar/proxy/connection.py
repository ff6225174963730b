"""One keep-alive connection of a :class:`sidecar.proxy.client.Pool`: it writes a request and
parses the answer with ``httptools`` (llhttp), never by hand.

Interim (1xx) answers carry no body (RFC 9110 15.2): one that declares a framing header
(Content-Length or Transfer-Encoding) is a provider error, kind ``"interim"``, and its connection
is discarded, so no byte of it can be taken for part of the final answer. A valid 1xx is skipped
whatever else it says (``Connection: close`` included): until the final head, llhttp is fed line
by line and gets a fresh parser after each 1xx, so the 1xx's fields never frame the final answer.

Framing the relay cannot redo is refused, kind ``"framing"``: a Transfer-Encoding other than
exactly one ``chunked`` (gzip, identity, ``chunked, chunked``...), since the body would reach the
app decoded of nothing and undeclared (RFC 9112 §6.1, §6.3; h11 refuses them too). Trailer
fields of a chunked body are dropped (RFC 9110 §6.5.1), never added to the head's fields, and
trailing whitespace of a field value is removed (RFC 9112 §5: OWS is not part of the value).

A connection and its pool are one component in two files: the connection frees its pool slot,
goes back to the idle list and reads the pool's timeout and TLS generation itself.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httptools

from sidecar.proxy.response import Response, UpstreamConnectionError, UpstreamTimeout

if TYPE_CHECKING:
    from sidecar.proxy.client import Pool

_HIGH_WATER = 256 * 1024  # unread response bytes past which the socket is no longer read
_INLINE = 64 * 1024  # a bytes body up to this size leaves in the same write as the head
_MAX_HEAD = 256 * 1024  # llhttp itself puts no bound on a response head
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # not in a reason-phrase (RFC 9112 §4)


class _Unexpected(Exception):
    """Raised inside a parser callback to stop llhttp (stray bytes, 101 Switching Protocols)."""


class Connection(asyncio.Protocol):
    """One connection: transport protocol and parser callbacks, one request at a time."""

    transport: asyncio.Transport

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.raw: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.chunks: deque[bytes] = deque()
        self.buffered = 0  # unread body bytes; before the head, the bytes of the head so far
        self.waiter: asyncio.Future[None] | None = None
        self.exc: UpstreamTimeout | UpstreamConnectionError | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.idle_since = 0.0
        self.connected = self.active = self.dead = self.idle = self.reused = False
        self.done = self.keep_alive = self.sent = self.head_only = self.got_bytes = False
        self.read_paused = self.write_paused = False
        self.interim_ended = False  # a 1xx just ended: the next line starts a new message
        self.at_start = False  # the next byte must begin a status line
        self.line_end = False  # the last byte fed before the final head was CR or LF
        self.written = 0  # of this request: an index into SENT
        self.tls_gen = pool._tls_gen  # the pool's TLS context when this connection was made

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # always a stream transport
        self.connected = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.active and not self.done and self.exc is None:
            if exc is None and self.resp is not None and self._ends_at_eof():
                self.done = True  # a close-delimited body ends with the connection
                self.keep_alive = False
            else:
                why = f": {exc}" if exc else ""
                self.exc = UpstreamConnectionError(f"upstream closed the connection{why}")
        self.close()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self.active or self.done or self.dead:  # bytes nobody asked for: unusable
            self.keep_alive = False
            self.close()
            return
        self.got_bytes = True
        if self.resp is None:
            self.buffered += len(data)
            if self.buffered > _MAX_HEAD:
                self._fail(UpstreamConnectionError("response head too large", "protocol"))
                return
        try:
            if self.resp is None or self.head_only:
                self._feed_head(data)
            else:
                self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.keep_alive = False
            self._fail(UpstreamConnectionError(f"bad HTTP from upstream: {exc}", "protocol"))

    def _feed_head(self, data: bytes) -> None:
        """Until the final head, feed llhttp one head at a time (up to each empty line): after a
        1xx a fresh parser reads the next message (llhttp would apply the 1xx's ``Connection:
        close`` to it), and for HEAD the head's end is where the answer ends (llhttp cannot be
        told there is no body). The split only says where llhttp is stopped, never what it reads."""
        view, start, end = memoryview(data), 0, len(data)
        while start < end and not self.done and (self.resp is None or self.head_only):
            if self.at_start:  # llhttp skips CR and LF before a status line; RFC 9112 does not
                self.at_start = False
                if data[start] in b"\r\n":
                    raise httptools.HttpParserError("CR or LF before the status line")
            if self.line_end:  # a read ended inside CR LF CR LF: its end may be the next LF
                stop = data.find(b"\n", start) + 1 or end
            else:
                stop = _head_end(data, start) or end
            self.parser.feed_data(view[start:stop])
            self.line_end = data[stop - 1] in b"\r\n"
            start = stop
            if self.interim_ended:
                self.interim_ended = False
                self.at_start = True
                self.parser = httptools.HttpResponseParser(self)
        if start >= end:
            return
        if self.head_only or self.done:  # a body after a HEAD answer
            self.keep_alive = False
            self.close()
        else:  # the final head ended: the rest is its body, in one call
            self.parser.feed_data(view[start:end])

    # -- parser callbacks
    def on_message_begin(self) -> None:
        if self.done:
            raise _Unexpected("bytes after the end of the response")

    def on_status(self, status: bytes) -> None:
        if _CTL.search(status):  # llhttp lets NUL through; the app would get it in the head
            raise _Unexpected("control byte in the reason phrase")
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is None:  # after the head: a trailer field, dropped (RFC 9110 §6.5.1)
            self.raw.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # interim; 101 would switch protocols, which nobody asked for
            if status == 101:
                raise _Unexpected("101 Switching Protocols")
            self._check_interim()
            return
        self._check_coding()
        length = None
        for name, value in self.raw:
            if len(name) == 14 and name.lower() == b"content-length":
                length = int(value)  # llhttp has already checked it is a number
                break
        self.resp = Response(self, status, length)
        self.buffered = 0
        if self.head_only:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def _check_interim(self) -> None:
        """A 1xx has no body (RFC 9110 15.2); llhttp would deliver one if it were framed."""
        if any(name.lower() in _FRAMING for name, _ in self.raw):
            self._fail(UpstreamConnectionError("interim (1xx) answer with a body", "interim"))
            raise _Unexpected("interim answer with a body")

    def _check_coding(self) -> None:
        """One Transfer-Encoding, exactly ``chunked``, or none: anything else cannot be relayed."""
        codings = [v for n, v in self.raw if len(n) == 17 and n.lower() == b"transfer-encoding"]
        if codings and (len(codings) > 1 or codings[0].strip().lower() != b"chunked"):
            self._fail(UpstreamConnectionError("transfer coding other than chunked", "framing"))
            raise _Unexpected("transfer coding other than chunked")

    def on_body(self, body: bytes) -> None:
        if self.resp is None:  # a body before the final head: never part of the answer
            self._fail(UpstreamConnectionError("interim (1xx) answer with a body", "interim"))
            raise _Unexpected("interim answer with a body")
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        if self.waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # 100 Continue and friends: wait for the real one
            self.raw = []
            self.reason = b""
            self.interim_ended = True
            return
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- helpers
    def _ends_at_eof(self) -> bool:
        """Neither Content-Length nor chunked: the body is delimited by the connection's end."""
        if self.resp is None or self.resp.content_length is not None:
            return False
        for name, value in self.raw:
            if name.lower() == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
                return False
        return True

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def _fail(self, exc: UpstreamTimeout | UpstreamConnectionError) -> None:
        if self.exc is None and not self.done:
            self.exc = exc
            self.keep_alive = False
        self.close()

    def _head_timeout(self) -> None:
        if self.resp is None or not self.sent:  # (the head may have come in this same turn)
            self._fail(UpstreamTimeout(f"no response head within {self.pool._timeout}s"))

    def _body_timeout(self) -> None:
        self._fail(UpstreamTimeout(f"no response bytes for {self.pool._timeout}s", "body"))

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.read_paused:
            self.read_paused = False
            if not self.dead:
                self.transport.resume_reading()
        return data

    async def wait_body(self) -> None:
        timer = self.loop.call_later(self.pool._timeout, self._body_timeout)
        try:
            await self._wait()
        finally:
            timer.cancel()

    def close(self) -> None:
        """Idempotent; frees the pool slot at once (the socket closes on the next loop turn)."""
        if self.active and not self.done and self.exc is None:
            self.exc = UpstreamConnectionError("connection closed before the response ended")
        if not self.dead:
            self.dead = True
            if self.idle:
                self.idle = False
                self.pool._idle.remove(self)
            if self.connected:
                self.transport.close()
            self.pool._slot_freed()
        self._wake()

    async def send(
        self,
        head: bytes,
        body: bytes | None,
        stream: AsyncIterator[bytes] | None,
        length: int | None,
        head_only: bool,
        deadline: float,
    ) -> Response:
        self.got_bytes = False
        self.written = 0
        if self.dead or self.transport.is_closing():  # nothing sent yet: any request may retry
            raise UpstreamConnectionError("connection closed while idle")
        self._begin(head_only, stream is None)
        timer = self.loop.call_at(deadline, self._head_timeout)
        try:
            self._write(head, body)
            if stream is not None:
                await self._stream(stream, length)
            while self.resp is None and self.exc is None:
                await self._wait()
            if self.resp is None:
                raise self.exc or UpstreamConnectionError("no response")
            return self.resp
        except BaseException:
            self.close()
            raise
        finally:
            timer.cancel()

    def _begin(self, head_only: bool, sent: bool) -> None:
        """A fresh parser and per-response state, before the next request goes out."""
        self.parser = httptools.HttpResponseParser(self)
        self.raw = []
        self.reason = b""
        self.resp = None
        self.exc = None
        self.buffered = 0
        self.interim_ended = False
        self.at_start = True
        self.line_end = False
        self.active = True
        self.done = self.keep_alive = False
        self.head_only = head_only
        self.sent = sent

    def _write(self, head: bytes, body: bytes | None) -> None:
        """The head, with a small body in the same write (one packet); a large one is not copied."""
        transport = self.transport
        if body is None:
            transport.write(head)
        elif len(body) <= _INLINE:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        self.written = 2 if self.sent else 1  # a streamed body is still to come

    async def _stream(self, stream: AsyncIterator[bytes], length: int | None) -> None:
        transport = self.transport
        left = length
        async for chunk in stream:
            if not chunk:
                continue
            if self.exc is not None or transport.is_closing():
                return  # the upstream is gone (or answered and left): stop sending
            if left is None:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                left -= len(chunk)
                if left < 0:
                    raise ValueError("request body is longer than its content_length")
                transport.write(chunk)
            while self.write_paused and self.exc is None and not self.dead:
                await self._wait()
        if self.exc is not None or transport.is_closing():
            return
        if left is None:
            transport.write(b"0\r\n\r\n")
        elif left:
            raise ValueError("request body is shorter than its content_length")
        self.sent = True
        self.written = 2


def _head_end(data: bytes, start: int) -> int:
    """Just past the first empty line (LF CRLF or LF LF) from ``start``, or 0: a place where
    llhttp can be paused, at the latest where a head may end."""
    crlf = data.find(b"\n\r\n", start) + 3
    lf = data.find(b"\n\n", start) + 2
    if crlf > 2 and (lf < 2 or crlf < lf):
        return crlf
    return lf if lf > 1 else 0
