"""The proxy listener: a lean HTTP/1.1 server in front of the pipeline in ``proxy/pipeline.py``.

Why not ``aiohttp.web`` here: every proxied request paid for aiohttp's request and response
objects, its router and middleware chain, and the payload writer; with the aiohttp client that
was over half of the sidecar's CPU per request (bench/README.md). This server keeps only what a
proxy needs. Parsing is llhttp's, through ``httptools``: nothing here parses HTTP by hand.

What it does itself: keep-alive and pipelining (answered in order), ``Expect: 100-continue``,
request bodies streamed with flow control both ways, the sidecar's own refusals, and relaying
the upstream's answer byte for byte (its header bytes are not re-encoded), re-framed for the
client (Content-Length as given, else chunked, else close-delimited for HTTP/1.0).

Framing rules it keeps (h11 states them the same way; llhttp enforces the syntax):

- A request reaches the pipeline only after llhttp accepted every byte of the read its head
  came in: a head refused in the same read as ``on_headers_complete`` (``Transfer-Encoding:
  identity``, a bad first chunk) sends nothing upstream and is answered 400 (RFC 9112 §6.1).
- A head llhttp accepts but h11 and RFC 9112 refuse is refused the same way, before it is
  queued: a Transfer-Encoding other than exactly ``chunked`` (§6.1, §6.3), a request line
  without a version (HTTP/0.9) or with more than one SP between its parts (§3), or after a
  bare CR or LF (§2.2: only empty lines may precede it), HTTP/1.1 without Host (§3.2).
  Trailing SP/HTAB of a field value is dropped (§5: not part of it).
- An error in a body that is already streaming fails the body's iterator; the pool client then
  closes the upstream connection without finishing the message (RFC 9112 §6.3: an incomplete
  message), so the provider never sees a complete request.
- The head is bounded while it arrives: bytes fed to llhttp since the message began, and the
  header count, are checked per read and per header, before more is fed (httptools joins a
  partial header line internally, so only the byte count bounds it).
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

import httptools
from multidict import CIMultiDict

from sidecar import audit
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.proxy import client as http1
from sidecar.proxy import intercept, tokens
from sidecar.proxy import pipeline as proxy
from sidecar.proxy.message import PHRASES, Body, Frame, Incoming, error_answer, relayed
from sidecar.runtime import Runtime

if TYPE_CHECKING:
    from sidecar.proxy.pipeline import Router

log = get_logger("sidecar.proxy")

MAX_HEAD = 64 * 1024  # request line plus headers
MAX_HEADERS = 128
KEEPALIVE = 75.0  # idle keep-alive connections are closed after this (aiohttp's default)
MAX_PIPELINE = 16


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp mid-read (httptools re-raises it wrapped)."""


class ProxyProtocol(asyncio.Protocol):
    """One client connection: parse, answer requests one at a time, in order.

    ``router`` picks each request's upstream: ``pipeline.route`` on a plain connection, the
    tunnel's ``intercept.TunnelRouter`` on an intercepted TLS connection.
    """

    def __init__(self, listener: ProxyListener, router: Router = proxy.route) -> None:
        self.listener = listener
        self.rt = listener.rt
        self.router = router
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # URL and header bytes of the head being parsed
        self._in_head = True  # between messages or inside a head: bytes fed are head bytes
        self._head_bytes = 0  # bytes fed to llhttp since the head began (see _feed)
        self._completed = False  # a message ended during the current feed
        # The reads the current head came in, and where in them the next request line is
        # searched from (see _canonical_line): each read is scanned once, not once per head.
        self._parts: list[bytes | memoryview] = []
        self._scanned = 0
        self._floor: int | None = 0  # where the previous message ended in them, if known
        self._begun = False  # on_message_begin came and on_message_complete not yet
        self._body_timeout = self.rt.config.listen.body_idle_timeout
        self._farewell: SidecarError | None = None  # answered once the queue ahead is done
        self._receiving: Incoming | None = None  # the request whose body llhttp is reading
        self._pipeline: deque[Incoming] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # the transport is closed or closing: nothing more is written
        self._last = False  # answer what is in flight and queued, then close; parse no more
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

    def data_received(self, data: bytes) -> None:
        while data:
            data = self._feed(data)
        self._dispatch()  # only now: every byte of this read was accepted (or refused)

    def _feed(self, data: bytes) -> bytes:
        """Feed llhttp at most what the head limit leaves; returns the bytes not yet fed.

        Inside a head, every byte fed counts against MAX_HEAD, and a read that would pass it is
        cut there: a head still open at the limit is refused before one more byte is fed. A head
        that began mid-read (after another message) is counted from the next read on, so at most
        one read is uncounted and a legitimate head is never refused for its neighbours' bytes.
        """
        known = self._in_head
        room = MAX_HEAD - self._head_bytes
        part: bytes | memoryview = data
        if known and len(data) > room:
            part = memoryview(data)[:room]
        self._completed = False
        if not (known and self._begun):  # no head half read: it begins in this read or later
            self._parts.clear()
            self._scanned = 0
            self._floor = 0 if known else None  # a body's end in this read is not known
        self._parts.append(part)
        try:
            self.parser.feed_data(part)
        except httptools.HttpParserUpgrade as upgrade:
            self._dispatch()  # requests ahead of it in this read are served first
            self._upgraded(bytes(part[upgrade.args[0] :]) + data[len(part) :])
            return b""
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):  # a bug of ours, not the client's
                log.error("proxy_parser_callback_failed", error=type(exc.__context__).__name__)
                self._refuse_input(SidecarError("SC1000"))
            return b""
        except httptools.HttpParserError:
            self._refuse_input(SidecarError("SC4011", "Malformed HTTP request"))
            return b""
        if self._in_head:
            if not known or self._completed:
                self._head_bytes = 0  # it began mid-read: counted from the next read
            else:
                self._head_bytes += len(part)
                if self._head_bytes >= MAX_HEAD:  # MAX_HEAD bytes and still no end of head
                    self._refuse_input(SidecarError("SC4013"))
                    return b""
        return data[len(part) :] if part is not data else b""

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # The idle timer keeps running until the head is complete: a client that starts a
        # request and stalls is closed like an idle one.
        if self._closing or self._last:
            raise _Stop  # refused or closing: nothing more on this connection is parsed
        self._url.clear()
        self._headers = []
        self._head_size = 0
        self._begun = True

    def on_url(self, url: bytes) -> None:  # called per piece of the URL as it arrives
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(self._headers) > MAX_HEADERS:
            self._too_large()

    def _too_large(self) -> None:
        self._refuse_input(SidecarError("SC4013"))
        raise _Stop  # the rest of this read (pipelined requests too) is not parsed

    def on_headers_complete(self) -> None:
        self._in_head = False
        req = self._incoming()
        why = self._unframed(req)
        if why is not None:  # refused before it is queued: nothing of it goes upstream
            self._refuse_input(SidecarError("SC4011", why))
            raise _Stop
        if req.method == "CONNECT":
            return  # the parser raises HttpParserUpgrade next: see _upgraded
        self._receiving = req
        # Queued, not started: the read it came in may still turn out malformed (_dispatch).
        self._pipeline.append(req)
        if len(self._pipeline) >= MAX_PIPELINE + (not self._busy):
            self._transport().pause_reading()

    def _unframed(self, req: Incoming) -> str | None:
        """Why a head llhttp accepted is still refused (h11 refuses it too; stricter wins)."""
        if req.version not in ("1.0", "1.1"):
            return "Request line without a valid HTTP version"  # HTTP/0.9 (RFC 9112 §2.3)
        if not self._canonical_line(req):
            return "Malformed request line"  # RFC 9112 §3: exactly one SP between its parts
        if req.version == "1.1" and "Host" not in req.headers:
            return "HTTP/1.1 request without Host"  # RFC 9112 §3.2: a server MUST answer 400
        codings = req.headers.getall("Transfer-Encoding", ())
        if codings and (len(codings) > 1 or codings[0].lower() != "chunked"):
            # RFC 9112 §6.1/§6.3: only chunked is framed here; any other coding (identity,
            # gzip, chunked twice) leaves the length unknown, so the request is refused.
            return "Transfer-Encoding other than chunked"
        return None

    def _canonical_line(self, req: Incoming) -> bool:
        """llhttp skips extra spaces around the target; the line as llhttp read it, with one SP
        each, must be in the bytes the head came in (no parsing here: a byte comparison)."""
        line = b"%s %s HTTP/%s\r\n" % (
            self.parser.get_method(),
            b"".join(self._url),
            req.version.encode(),
        )
        parts = self._parts
        seen = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        at = seen.find(line, self._scanned)  # pipelined heads are in order: scan on from there
        if at < 0:
            return False
        self._scanned = at + len(line)
        floor, self._floor = self._floor, self._scanned
        if req.content_length:  # the next message begins after this body, if in these reads
            end = seen.find(b"\r\n\r\n", at)
            self._floor = end + 4 + req.content_length if end >= 0 else None
        if floor is None:
            return True
        # llhttp skips any CR and LF before a request line; only empty lines (CRLF) may be
        # skipped (RFC 9112 §2.2). The message before ends in CRLF or at ``floor``.
        start = at
        while start > floor and seen[start - 1] in b"\r\n":
            start -= 1
        skipped = seen[start:at]
        return skipped == b"\r\n" * (len(skipped) // 2)

    def _incoming(self) -> Incoming:
        """The parsed head as a request; header values decoded so they re-encode byte-exact."""
        parser = self.parser
        headers: CIMultiDict[str] = CIMultiDict(
            # Trailing SP/HTAB is not part of a field value (RFC 9112 §5); llhttp keeps it.
            [
                (n.decode("latin-1"), v.rstrip(b" \t").decode("utf-8", "surrogateescape"))
                for n, v in self._headers
            ]
        )
        body: Body | None = None
        length: int | None = None
        if "Transfer-Encoding" in headers:
            body = self._body(headers)
        elif (declared := headers.get("Content-Length")) is not None:
            length = int(declared)  # llhttp accepts digits only, and one value
            if length:
                body = self._body(headers)
        return Incoming(
            parser.get_method().decode("ascii"),
            b"".join(self._url).decode("utf-8", "surrogateescape"),
            headers,
            parser.get_http_version(),
            bool(parser.should_keep_alive()),
            body,
            length,
        )

    def _body(self, headers: CIMultiDict[str]) -> Body:
        expect = headers.get("Expect", "").lower() == "100-continue"
        return Body(self._transport(), self._body_timeout, expect)

    def on_body(self, body: bytes) -> None:
        if self._receiving is not None and self._receiving.content is not None:
            self._receiving.content.feed(body)

    def on_message_complete(self) -> None:
        if self._receiving is not None and self._receiving.content is not None:
            self._receiving.content.finish()
        self._receiving = None
        self._in_head = self._completed = True
        self._head_bytes = 0
        self._begun = False
        if len(self._parts) > 1:  # the next head begins in the read being fed
            earlier = sum(len(p) for p in self._parts[:-1])
            self._scanned = max(0, self._scanned - earlier)
            if self._floor is not None:  # before the reads kept: that message's end is unknown
                self._floor = self._floor - earlier if self._floor >= earlier else None
            del self._parts[:-1]

    # -- requests ---------------------------------------------------------------------------

    def _transport(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport

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
            upstream, reply, started = await proxy.forward(rt, req, self.router)
        except SidecarError as err:  # a refusal, or the body failed (SC4011, SC4014, SC4015)
            keep = req.keep_alive and (req.content is None or req.content.complete)
            return self._refuse(err, req, keep)
        except tokens.LocalAnswer as answer:  # an emulated token endpoint answered
            return self._answer(answer, req)
        except Exception:
            log.exception("proxy_unhandled")
            return self._refuse(SidecarError("SC1000"), req, False)
        try:
            keep, sent = await self._relay(req, reply)
        finally:
            reply.release()
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

    async def _relay(self, req: Incoming, reply: http1.Response) -> tuple[bool, int]:
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
            complete, sent = await self._stream(reply, frame.chunked)
            return complete and frame.keep, sent
        try:
            body = await reply.read()
        except (http1.UpstreamTimeout, http1.UpstreamConnectionError) as exc:
            proxy.body_aborted(reply, exc)
            transport.close()  # nothing was sent yet: the app sees a closed connection
            return False, 0
        transport.write(head + body)
        return frame.keep, len(body)

    async def _stream(self, reply: http1.Response, chunked: bool) -> tuple[bool, int]:
        """A large or unsized body, chunk by chunk, under the client's flow control."""
        transport = self._transport()
        sent = 0
        try:
            async for chunk in reply.iter_chunks():
                if self._closing:
                    return False, sent  # the client is gone
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
                await self.drain()
        except (http1.UpstreamTimeout, http1.UpstreamConnectionError) as exc:
            proxy.body_aborted(reply, exc)
            transport.close()  # the client must see a cut answer, not a complete short one
            return False, sent
        if chunked:
            transport.write(b"0\r\n\r\n")
        return True, sent

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
