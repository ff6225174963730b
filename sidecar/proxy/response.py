"""What a request to an upstream gives back: a :class:`Response`, or an error that says how much
of the request was sent.

Every :class:`UpstreamTimeout` and :class:`UpstreamConnectionError` from
:meth:`sidecar.proxy.client.Pool.request` says in ``sent`` how much of the request was written to
the upstream: ``"none"``, ``"partial"`` (the head, or the head and part of the body) or
``"complete"``, the most over the attempts made, so a caller can tell a payment that never left
from one that may have landed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from multidict import CIMultiDict

if TYPE_CHECKING:
    from sidecar.proxy.connection import Connection

SENT = ("none", "partial", "complete")  # how much of a request was written, by rank


class _Sent:
    """How much of a request an error left behind; ``"none"`` until the pool says otherwise."""

    sent: str = "none"


class UpstreamTimeout(_Sent, Exception):
    """No free connection, no connection, no response head or no body bytes in time."""

    def __init__(self, message: str, kind: str = "response") -> None:
        super().__init__(message)
        self.kind = kind  # "pool", "connect", "response" or "body"


class UpstreamConnectionError(_Sent, Exception):
    """Connecting failed, TLS failed, the upstream closed early or spoke bad HTTP."""

    def __init__(self, message: str, kind: str = "closed") -> None:
        super().__init__(message)
        # "connect", "tls", "closed", "protocol", "interim", "framing" or "pool_closed"
        self.kind = kind


class Response:
    """A response head; the body is read with :meth:`iter_chunks` or :meth:`read`."""

    __slots__ = ("_conn", "_headers", "content_length", "raw_headers", "reason", "status")

    def __init__(self, conn: Connection, status: int, length: int | None) -> None:
        self._conn: Connection | None = conn
        self._headers: CIMultiDict[str] | None = None
        self.status = status
        self.reason = conn.reason.decode("latin-1")
        self.raw_headers = conn.raw  # exactly as received
        # The header's value, also for HEAD and 304 (which carry no body): what a relay forwards.
        self.content_length = length

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers decoded as latin-1, built on first use."""
        if self._headers is None:
            self._headers = CIMultiDict(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers
            )
        return self._headers

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (de-chunked); the connection is released at the end."""
        conn = self._conn
        while conn is not None and self._conn is conn:
            if conn.chunks:
                yield conn.take()
            elif conn.done:
                self.release()
            elif conn.exc is not None:
                exc = conn.exc
                self.release()
                raise exc
            else:
                await conn.wait_body()

    async def read(self) -> bytes:
        conn = self._conn
        if conn is not None and conn.done:  # the whole body is already here: no generator
            data = conn.take() if conn.chunks else b""
            self.release()
            return data
        return b"".join([chunk async for chunk in self.iter_chunks()])

    def release(self) -> None:
        """Idempotent: a fully read, reusable connection goes back to the pool, else it closes."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if conn.done and conn.keep_alive and conn.sent and not conn.chunks and conn.exc is None:
            conn.pool._put_idle(conn)
        else:
            conn.close()
