"""The request side of a proxy connection: llhttp reads, and the limits and framing rules that
refuse a request before anything of it is queued.

Parsing is llhttp's, through ``httptools``: nothing here parses HTTP by hand. What is checked
here (h11 states the rules the same way; llhttp enforces the syntax):

- A request reaches the pipeline only after llhttp accepted every byte of the read its head
  came in: a head refused in the same read as ``on_headers_complete`` (``Transfer-Encoding:
  identity``, a bad first chunk) sends nothing upstream and is answered 400 (RFC 9112 §6.1).
- A head llhttp accepts but h11 and RFC 9112 refuse is refused the same way, before it is
  queued: a Transfer-Encoding other than exactly ``chunked`` (§6.1, §6.3), a request line
  without a version (HTTP/0.9) or with more than one SP between its parts (§3), or after a
  bare CR or LF (§2.2: only empty lines may precede it), HTTP/1.1 without Host (§3.2).
  Trailing SP/HTAB of a field value is dropped (§5: not part of it).
- The head is bounded while it arrives: bytes fed to llhttp since the message began, and the
  header count, are checked per read and per header, before more is fed (httptools joins a
  partial header line internally, so only the byte count bounds it).

What a read yields is handed to the serving side (``listener.ProxyProtocol``) through the four
methods at the end of :class:`RequestReader`: queue a request, start the next, refuse the input,
take over an upgrade (CONNECT).
"""

from __future__ import annotations

import abc
import asyncio

import httptools
from multidict import CIMultiDict

from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.proxy.message import Body, Incoming

log = get_logger("sidecar.proxy")

MAX_HEAD = 64 * 1024  # request line plus headers
MAX_HEADERS = 128


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp mid-read (httptools re-raises it wrapped)."""


class RequestReader(asyncio.Protocol, abc.ABC):
    """Feeds a connection's reads to llhttp and turns each accepted head into an ``Incoming``."""

    def __init__(self, body_timeout: float) -> None:
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
        self._body_timeout = body_timeout
        self._receiving: Incoming | None = None  # the request whose body llhttp is reading
        self._closing = False  # the transport is closed or closing: nothing more is written
        self._last = False  # answer what is in flight and queued, then close; parse no more

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
        self._queue(req)

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

    def _transport(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport

    # -- what the serving side does with what was read ----------------------------------------

    @abc.abstractmethod
    def _queue(self, req: Incoming) -> None:
        """A head was accepted (its body may still be arriving): queue it behind the others."""

    @abc.abstractmethod
    def _dispatch(self) -> None:
        """Every byte of a read was accepted: start the first queued request if none runs."""

    @abc.abstractmethod
    def _refuse_input(self, err: SidecarError) -> None:
        """Input llhttp rejected or that broke a limit: refuse it and read no more."""

    @abc.abstractmethod
    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped at an upgrade (CONNECT); ``rest`` is what followed its head."""
