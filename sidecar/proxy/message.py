"""One HTTP/1.1 message on the listener's side: the request as parsed, its body as it arrives,
and the head of an answer as it is framed for the app.

Why a module of its own: the pipeline, audit and the tunnel code take a request of this type
without importing the server that parses it, and the framing rules sit in one short place.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus

from multidict import CIMultiDict

from sidecar import audit
from sidecar.errors import SidecarError
from sidecar.proxy.pipeline import HOP_BY_HOP

HIGH_WATER = 256 * 1024  # unread request body bytes before the socket stops being read
SMALL = 64 * 1024  # answers up to this size leave in one write, headers included
PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}
_HOP_BY_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b""})


def relayed(raw: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Header lines to pass on: all but hop-by-hop ones and those the Connection header names."""
    lines: list[bytes] = []
    named: set[bytes] = set()
    for name, value in raw:
        lower = name.lower()
        if lower not in _HOP_BY_HOP:
            lines.append(b"%s: %s\r\n" % (name, value))
        elif lower == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    if named - _CONNECTION_OPTIONS:
        lines = [line for line in lines if line.split(b":", 1)[0].lower() not in named]
    return lines


_ERROR_HEAD = (
    b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\nX-Sidecar-Error: %s\r\n%s\r\n"
)


def error_answer(err: SidecarError, keep: bool, head: bool = False) -> tuple[bytes, int]:
    """The sidecar's own answer, the JSON error body marked with ``X-Sidecar-Error``; and the
    body's length, for the access line.

    An answer to HEAD keeps the Content-Length the body would have but carries no body (RFC 9110
    §9.3.2): body bytes after it would be read as the start of the next answer.
    """
    body = json.dumps(err.body()).encode()
    close = b"" if keep else b"Connection: close\r\n"
    close += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in err.headers.items())
    phrase = PHRASES.get(err.status, b"")
    lines = _ERROR_HEAD % (err.status, phrase, len(body), err.code.encode(), close)
    return (lines, 0) if head else (lines + body, len(body))


@dataclass(frozen=True, slots=True)
class Frame:
    """How an answer is framed for this client, and whether the connection survives it."""

    lines: list[bytes]
    keep: bool
    bodiless: bool
    chunked: bool
    small: bool  # known length, at most SMALL: it leaves in one write with the head

    @classmethod
    def choose(cls, req: Incoming, status: int, length: int | None) -> Frame:
        """The upstream's length if it gave one; else chunked (HTTP/1.1) or until close (1.0)."""
        keep = req.keep_alive
        bodiless = req.method == "HEAD" or status in (204, 304) or status < 200
        lines: list[bytes] = []
        chunked = False
        if length is not None and status != 204 and status >= 200:
            lines.append(b"Content-Length: %d\r\n" % length)
        elif not bodiless and req.version == "1.1":
            lines.append(b"Transfer-Encoding: chunked\r\n")
            chunked = True
        elif not bodiless:
            keep = False  # HTTP/1.0 without a length: the body ends when the connection does
        if not keep:
            lines.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")  # HTTP/1.0 keeps only when told
        lines.append(b"\r\n")
        small = not bodiless and length is not None and length <= SMALL
        return cls(lines, keep, bodiless, chunked, small)


class Body:
    """A request body as it arrives; the socket is paused while too much is unread.

    Reading it is what answers ``Expect: 100-continue``, and a read that waits longer than
    ``timeout`` for the next bytes fails with 408 SC4014.
    """

    __slots__ = (
        "_chunks",
        "_continue",
        "_done",
        "_error",
        "_size",
        "_timeout",
        "_transport",
        "_waiter",
        "abandoned",
    )

    def __init__(self, transport: asyncio.Transport, timeout: float, expect: bool) -> None:
        self._transport = transport
        self._timeout = timeout
        self._continue = expect
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.abandoned = False

    @property
    def complete(self) -> bool:
        return self._done and self._error is None

    def feed(self, data: bytes) -> None:
        if self._done or self.abandoned:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._transport.pause_reading()
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done, self._error = True, error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stalled(self) -> None:
        self.finish(SidecarError("SC4014"))

    async def iter_any(self) -> AsyncIterator[bytes]:
        if self._continue:  # as uvicorn: on the first read, never while another answer is out
            self._continue = False
            if not (self._chunks or self._done or self._transport.is_closing()):
                self._transport.write(_CONTINUE)  # RFC 9110 §10.1.1: omitted once bytes came
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                was_over = self._size > HIGH_WATER
                self._size -= len(chunk)
                if was_over and self._size <= HIGH_WATER:
                    self._transport.resume_reading()
                yield chunk
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                loop = asyncio.get_running_loop()
                self._waiter = loop.create_future()
                timer = loop.call_later(self._timeout, self._stalled)
                try:
                    await self._waiter
                finally:
                    timer.cancel()
                    self._waiter = None

    def iter_chunked(self, _n: int) -> AsyncIterator[bytes]:
        """Chunks as they arrive (at most a socket read each); the size is not padded to n."""
        return self.iter_any()


class Incoming:
    """One parsed request, as the pipeline takes it (and audit and proxy keys read it)."""

    __slots__ = (
        "content",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "raw_path",
        "spend",
        "version",
    )

    def __init__(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        version: str,
        keep_alive: bool,
        content: Body | None,
        content_length: int | None,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.content = content
        self.content_length = content_length
        self.spend: audit.Spend | None = None  # the audit record, once begun

    async def read_whole(self, limit: int, too_large: SidecarError) -> bytes:
        """The whole body, or ``too_large`` as soon as it is known to exceed ``limit``:
        declared by Content-Length, or counted while the bytes arrive."""
        if self.content_length is not None and self.content_length > limit:
            raise too_large
        if self.content is None:
            return b""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)
