"""The proxy listener: a lean HTTP/1.1 server in front of the pipeline in ``proxy/pipeline.py``.

Why not ``aiohttp.web`` here: every proxied request paid for aiohttp's request and response
objects, its router and middleware chain, and the payload writer; with the aiohttp client that
was over half of the sidecar's CPU per request (bench/README.md). This server keeps only what a
proxy needs. Parsing is llhttp's, through ``httptools``: nothing here parses HTTP by hand.

What it does itself: keep-alive and pipelining (answered in order), ``Expect: 100-continue``,
request bodies streamed with flow control both ways, the sidecar's own refusals, and relaying
the upstream's answer byte for byte (its header bytes are not re-encoded), re-framed for the
client (Content-Length as given, else chunked, else close-delimited for HTTP/1.0). Byte for byte
but for the secrets the sidecar injected: ``proxy/scrub.py`` scans the head (502 SC4030 if one
is there) and masks them in the body with as many ``*`` as it streams (``scrub_answers``).

How a read becomes requests, and the limits and framing rules that refuse a head before it is
queued, are in ``proxy/reader.py`` (:class:`RequestReader`, which :class:`ProxyProtocol`
extends). The rules kept here, on the serving side:

- An error in a body that is already streaming fails the body's iterator; the pool client then
  closes the upstream connection without finishing the message (RFC 9112 §6.3: an incomplete
  message), so the provider never sees a complete request.
- ``100 Continue`` is written when the body is first read, which is only ever done by the
  request at the head of the queue, so it never lands inside another answer (RFC 9110 §10.1.1).
- A body that sends nothing for ``listen.body_idle_timeout`` seconds fails; its upstream
  connection is closed at once, which frees the pool slot.

CONNECT is answered here too, so every mode runs on this one engine: a CONNECT to a host that
interception terminates (``proxy/intercept.py``) gets the 200 line, the connection moves under
TLS, and a ``connect.TunnelProtocol`` (this protocol on the TLS transport) serves the tunnel with
a router bound to that host (``proxy/connect.py``); any other CONNECT is refused (403) on the
error path of every other refusal, and the connection closed. Tunnels are connections of the
listener like the others: keep-alive, pipelining, limits and graceful stop are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, cast

from sidecar import audit
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.proxy import client as http1
from sidecar.proxy import intercept, scrub, tokens
from sidecar.proxy import pipeline as proxy
from sidecar.proxy.message import PHRASES, Frame, Incoming, error_answer, relayed
from sidecar.proxy.reader import MAX_HEAD as MAX_HEAD
from sidecar.proxy.reader import RequestReader
from sidecar.runtime import Runtime

if TYPE_CHECKING:
    from sidecar.proxy.pipeline import Router

log = get_logger("sidecar.proxy")

KEEPALIVE = 75.0  # idle keep-alive connections are closed after this (aiohttp's default)
MAX_PIPELINE = 16


class ProxyProtocol(RequestReader):
    """One client connection: parse, answer requests one at a time, in order.

    ``router`` picks each request's upstream: ``pipeline.route`` on a plain connection, the
    tunnel's ``intercept.TunnelRouter`` on an intercepted TLS connection.
    """

    def __init__(self, listener: ProxyListener, router: Router = proxy.route) -> None:
        self.listener = listener
        self.rt = listener.rt
        self.router = router
        self.loop = asyncio.get_running_loop()
        super().__init__(self.rt.config.listen.body_idle_timeout)
        self._farewell: SidecarError | None = None  # answered once the queue ahead is done
        self._pipeline: deque[Incoming] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- transport callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.listener.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self._closing = True
        self._cancel_idle()
        lost = SidecarError("SC4015")
        for req in (self._receiving, *self._pipeline):
            if req is not None and req.content is not None:
                req.content.finish(lost)
        self._pipeline.clear()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        if self._paused and not self._closing:
            self._drained = self.loop.create_future()
            await self._drained

    # -- requests ---------------------------------------------------------------------------

    def _queue(self, req: Incoming) -> None:
        # Queued, not started: the read it came in may still turn out malformed (_dispatch).
        self._pipeline.append(req)
        if len(self._pipeline) >= MAX_PIPELINE + (not self._busy):
            self._transport().pause_reading()

    def _dispatch(self) -> None:
        """Start the first queued request if none is in flight (after a whole read was fed)."""
        if self._pipeline and not self._busy and not self._closing:
            self._start(self._pipeline.popleft())

    def _start(self, req: Incoming) -> None:
        self._cancel_idle()
        self._busy = True
        self._task = self.loop.create_task(self._serve(req))

    async def _serve(self, req: Incoming) -> None:
        keep = False
        try:
            keep = await self._respond(req)
        except Exception:
            log.exception("proxy_unhandled")
        finally:
            self._busy = False
            self._task = None
            if req.content is not None and not req.content.complete:
                req.content.abandoned = True
                keep = False  # the rest of an unread body cannot be skipped reliably
            transport = self.transport
            if transport is None:
                pass  # moved under TLS: the tunnel's own protocol serves it now
            elif (
                self._closing
                or not keep
                or self.listener.stopping
                or (self._last and not self._pipeline)
            ):
                if self._farewell is not None and keep and not self._closing:
                    transport.write(error_answer(self._farewell, False)[0])
                self._closing = True
                transport.close()
            elif self._pipeline:
                if len(self._pipeline) == MAX_PIPELINE and not self._last:
                    transport.resume_reading()
                self._start(self._pipeline.popleft())
            else:
                self._arm_idle()

    async def _respond(self, req: Incoming) -> bool:
        """Run the pipeline and write the answer; False when the connection must close."""
        rt = self.rt
        audit.begin(req)
        try:
            upstream, reply, started, secrets = await proxy.forward(rt, req, self.router)
        except SidecarError as err:  # a refusal, or the body failed (SC4011, SC4014, SC4015)
            keep = req.keep_alive and (req.content is None or req.content.complete)
            return self._refuse(err, req, keep)
        except tokens.LocalAnswer as answer:  # an emulated token endpoint answered
            return self._answer(answer, req)
        except Exception:
            log.exception("proxy_unhandled")
            return self._refuse(SidecarError("SC1000"), req, False)
        try:
            scanner = scrub.scanner(upstream.name, reply, req.method == "HEAD", secrets)
            keep, sent = await self._relay(req, reply, scanner)
        except SidecarError as err:  # the answer holds a secret or cannot be scanned
            err.headers[proxy.SENT_HEADER] = "complete"  # it reached the provider: it answered
            keep = req.keep_alive and (req.content is None or req.content.complete)
            return self._refuse(err, req, keep)
        finally:
            reply.release()
        if scanner is not None and scanner.hits:
            scrub.redacted(rt.metrics, upstream.name, scanner.hits)
        proxy.account_spend(rt, req, upstream, reply.status, started, sent)
        return keep

    def _answer(self, answer: tokens.LocalAnswer, req: Incoming) -> bool:
        """An answer the sidecar makes itself (not an error), framed like a relayed one."""
        frame = Frame.choose(req, answer.status, len(answer.body))
        lines = [b"%s: %s\r\n" % pair for pair in answer.headers]
        head = b"".join([b"HTTP/1.1 200 OK\r\n", *lines, *frame.lines])
        self._transport().write(head if frame.bodiless else head + answer.body)
        audit.spent(req, answer.status)
        if self.rt.config.logging.access_log:
            audit.access(req, answer.status, 0 if frame.bodiless else len(answer.body))
        return frame.keep and (req.content is None or req.content.complete)

    async def _relay(
        self, req: Incoming, reply: http1.Response, scanner: scrub.Scanner | None = None
    ) -> tuple[bool, int]:
        """The upstream's status and headers as received, re-framed for this client.

        Returns whether the connection may be kept, and the body bytes relayed.
        """
        status = reply.status
        reason = reply.reason.encode("latin-1", "replace") or PHRASES.get(status, b"")
        frame = Frame.choose(req, status, reply.content_length)
        head = b"".join(
            [b"HTTP/1.1 %d %s\r\n" % (status, reason), *relayed(reply.raw_headers), *frame.lines]
        )
        transport = self._transport()
        if frame.bodiless:
            transport.write(head)
            return frame.keep, 0
        if not frame.small:
            transport.write(head)
            complete, sent = await self._stream(reply, frame.chunked, scanner)
            return complete and frame.keep, sent
        try:
            body = await reply.read()
        except (http1.UpstreamTimeout, http1.UpstreamConnectionError) as exc:
            proxy.body_aborted(reply, exc)
            transport.close()  # nothing was sent yet: the app sees a closed connection
            return False, 0
        if scanner is not None:
            body = scanner.whole(body)
        transport.write(head + body)
        return frame.keep, len(body)

    async def _stream(
        self, reply: http1.Response, chunked: bool, scanner: scrub.Scanner | None
    ) -> tuple[bool, int]:
        """A large or unsized body, chunk by chunk, under the client's flow control.

        With a scanner, each chunk is what it lets out (its tail waits for the next chunk),
        and its held-back tail is written at the end: an empty piece is never written, since
        an empty chunk would end a chunked body.
        """
        sent = 0
        try:
            async for chunk in reply.iter_chunks():
                if self._closing:
                    return False, sent  # the client is gone
                sent += await self._write_piece(scanner.feed(chunk) if scanner else chunk, chunked)
        except (http1.UpstreamTimeout, http1.UpstreamConnectionError) as exc:
            proxy.body_aborted(reply, exc)
            self._transport().close()  # the client must see a cut answer, not a short one
            return False, sent
        if scanner is not None:
            sent += await self._write_piece(scanner.end(), chunked)
        if chunked:
            self._transport().write(b"0\r\n\r\n")
        return True, sent

    async def _write_piece(self, piece: bytes, chunked: bool) -> int:
        """One piece of a streamed body, framed; nothing for an empty one."""
        if piece:
            self._transport().write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await self.drain()
        return len(piece)

    # -- refusals: every answer the listener makes itself is written by _refuse --------------

    def _refuse(self, err: SidecarError, req: Incoming | None, keep: bool) -> bool:
        """Count, log (and audit, for a parsed request) once; answer unless the client is gone."""
        answer, sent = error_answer(err, keep, req is not None and req.method == "HEAD")
        if req is not None:
            proxy.account_refusal(self.rt, req, err, sent)
        else:
            self._account_input(err)
        if not self._closing and self.transport is not None:
            self.transport.write(answer)
        return keep

    def _account_input(self, err: SidecarError) -> None:
        """Log and count a refusal of input that never became a request (nothing to audit)."""
        size = max(self._head_bytes, self._head_size)  # head bytes read when it was refused
        log.info("proxy_refused", code=err.code, status=err.status, method=None, head_bytes=size)
        self.rt.metrics.refused.labels(err.code).inc()

    def _refuse_input(self, err: SidecarError) -> None:
        """Input llhttp rejected or that broke a limit: none of it goes upstream; 400/431, close.

        Nothing more is read. A request already streaming its body upstream has the error
        raised in its body, which aborts the upstream request; its own cycle answers. Otherwise
        the requests parsed before the bad input are answered first, then the refusal.
        """
        if self._closing or self._last or self.transport is None:
            return
        self._last = True
        self.transport.pause_reading()
        bad, self._receiving = self._receiving, None
        if bad is not None and self._pipeline and self._pipeline[-1] is bad:
            self._pipeline.pop()  # parsed but never started: it is dropped, nothing was sent
        elif bad is not None and bad.content is not None and self._busy:
            bad.content.finish(err)  # streaming: the upstream request is cut, then answered
            return
        if self._busy or self._pipeline:
            self._account_input(err)  # counted now: the client may be gone by its turn
            self._farewell = err  # written by _serve after the last answer ahead of it
            return
        self._refuse(err, None, False)
        self._closing = True
        self.transport.close()

    def _upgraded(self, rest: bytes) -> None:
        """CONNECT is answered here; other upgrades are not proxied."""
        method = self.parser.get_method()
        if method != b"CONNECT" or self._busy or self._pipeline:
            # An ``Upgrade:`` request was answered (or is being) as a plain request; what
            # follows it on the wire is another protocol, so nothing more is read.
            self._transport().pause_reading()
            self._last = True
            if not self._busy:
                self._closing = True
                self._transport().close()
            return
        req = self._incoming()
        audit.begin(req)
        try:
            host = self._authorize(req, rest)
        except SidecarError as err:
            # Refused on the one refusal path; nothing after the CONNECT is read.
            self._transport().pause_reading()
            self._last = True
            self._refuse(err, req, False)
            self._closing = True
            self._transport().close()
            return
        self._handoff(host)

    def _authorize(self, req: Incoming, rest: bytes) -> str:
        """The CONNECT host, if interception terminates it; else the refusal to answer."""
        interceptor = self.listener.interceptor
        if interceptor is None or isinstance(self.router, intercept.TunnelRouter):
            raise SidecarError("SC4001", "CONNECT tunnels are not allowed")
        host = interceptor.authorize(req.raw_path)
        if rest:  # TLS bytes sent before the 200: they would be lost in the switch to TLS
            raise SidecarError("SC4011", "Data sent before the CONNECT was answered")
        return host

    def _handoff(self, host: str) -> None:
        """Answer 200 and move the connection under TLS; the listener serves the tunnel."""
        transport = self._transport()
        transport.pause_reading()  # until start_tls reads it: nothing reaches this parser now
        self._cancel_idle()
        self.listener.connections.discard(self)
        self.transport = None
        self._closing = True
        transport.write(intercept.ESTABLISHED)
        self.listener.tunnel(transport, host)

    # -- idle connections -------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self._cancel_idle()
        self._idle = self.loop.call_later(KEEPALIVE, self.close_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    @property
    def idle(self) -> bool:
        """No request in flight and no body arriving (a head may be half sent)."""
        return not self._busy and self._receiving is None

    def close_idle(self) -> None:
        if self.idle and self.transport is not None and not self._closing:
            self._closing = True
            self.transport.close()


class ProxyListener:
    """The listening socket, its connections (intercepted tunnels included) and the interceptor."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.interceptor = intercept.install(rt) if rt.config.intercept.enabled else None
        self.connections: set[ProxyProtocol] = set()
        self.handshakes: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        if self.interceptor is not None:
            self.interceptor.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ProxyProtocol(self), host, port, reuse_address=True, backlog=1024
        )

    def tunnel(self, transport: asyncio.Transport, host: str) -> None:
        """Start the TLS handshake of an answered CONNECT (``connect.py``), kept until it ends."""
        # Imported here: connect.py subclasses ProxyProtocol, so it imports this module.
        from sidecar.proxy import connect

        connect.tunnel(self, transport, host)

    async def stop(self, grace: float) -> None:
        """Stop accepting; in-flight requests get ``grace`` seconds; idle keep-alives close now.

        Intercepted tunnels are connections like the others: an idle one closes at once, a busy
        one finishes its request first. TLS handshakes not yet done are cut.
        """
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self.handshakes):
            task.cancel()
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self.connections):
                conn.close_idle()
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
