"""Intercepted CONNECT tunnels: the TLS handshake after the 200, and the protocol that serves one.

``ProxyProtocol`` answers a CONNECT itself (``_upgraded``): a host that interception terminates
(``proxy/intercept.py``) gets the 200 line and the connection is handed to :func:`tunnel`, which
moves it under TLS with a leaf from the sidecar's CA; a :class:`TunnelProtocol`, the plain
connection's code with a router bound to that host, then serves it. Tunnels are connections of
the listener like the others: keep-alive, pipelining, limits and graceful stop are the same.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from sidecar.logging import get_logger
from sidecar.proxy import intercept
from sidecar.proxy.listener import ProxyProtocol

if TYPE_CHECKING:
    from sidecar.proxy.listener import ProxyListener
    from sidecar.proxy.pipeline import Router

log = get_logger("sidecar.proxy")

TUNNEL_READ = 64 * 1024  # decrypted bytes an intercepted connection takes per read


class TunnelProtocol(ProxyProtocol, asyncio.BufferedProtocol):
    """``ProxyProtocol`` on an intercepted TLS transport, reading through a buffer of its own.

    Why: given a plain protocol, the TLS layer (uvloop's and asyncio's ``SSLProtocol``)
    decrypts each read into a fresh 256 KiB ``bytes``; given a buffered one, into this buffer.
    Everything else is the plain connection's code.
    """

    def __init__(self, listener: ProxyListener, router: Router) -> None:
        super().__init__(listener, router)
        self._buffer = bytearray(TUNNEL_READ)
        # A view, not the bytearray: asyncio's SSL layer reads a second TLS record into
        # ``buf[offset:]``, which for a bytearray is a copy, so those bytes were lost (zeros).
        self._view = memoryview(self._buffer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))


class _Early(asyncio.Protocol):
    """The tunnel's protocol during the handshake: TLS can deliver the client's first bytes
    before ``start_tls`` returns, so they are kept for the protocol that then serves them."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep the transport: the requests already received are answered first

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def tunnel(listener: ProxyListener, transport: asyncio.Transport, host: str) -> None:
    """Start the TLS handshake of an answered CONNECT; the task is kept until it ends."""
    task = asyncio.get_running_loop().create_task(_handshake(listener, transport, host))
    listener.handshakes.add(task)

    def done(task: asyncio.Task[None]) -> None:
        listener.handshakes.discard(task)
        if task.cancelled():  # by stop(), possibly before the handshake even began
            transport.abort()

    task.add_done_callback(done)


async def _handshake(listener: ProxyListener, transport: asyncio.Transport, host: str) -> None:
    """TLS with the host's leaf, then the same protocol serves the tunnel, routed by host."""
    assert listener.interceptor is not None
    loop = asyncio.get_running_loop()
    early = _Early()
    try:
        ctx = listener.interceptor.context(host)
        tls = await loop.start_tls(
            transport,
            early,
            ctx,
            server_side=True,
            ssl_handshake_timeout=intercept.HANDSHAKE_TIMEOUT,
        )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        log.info("intercept_handshake_failed", host=host, error=type(exc).__name__)
        transport.close()
        return
    except Exception:
        log.exception("intercept_failed", host=host)
        transport.close()
        return
    if tls is None or early.lost:
        return
    if listener.stopping:  # the stop began during the handshake: this tunnel never serves
        tls.abort()
        return
    protocol = TunnelProtocol(listener, listener.interceptor.router(host))
    tls.set_protocol(protocol)
    protocol.connection_made(tls)  # start_tls does not call it for a server-side switch
    log.debug("intercept_established", host=host)
    for data in early.data:
        protocol.data_received(data)
    if early.eof and not protocol.eof_received():
        tls.close()  # as on a plain connection: the client's EOF ends it
