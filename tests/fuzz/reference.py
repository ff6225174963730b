"""What a correct proxy does with given bytes, according to h11 (the reference parser).

h11 is used only here, in the tests: the sidecar parses with llhttp (httptools). For request
bytes from the app, :func:`requests` lists the messages h11 reads (method, target, end-to-end
headers, body) and where it stops (an error in a head, an error in a body, or more data
needed). For response bytes from a provider, :func:`answer` gives the final answer h11 reads,
or the error. A correct proxy forwards exactly those messages, framing re-done, and refuses the
rest with nothing complete sent on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h11

# RFC 9110 §7.6.1: hop-by-hop fields a proxy removes; Host and Content-Length are re-done by
# the proxy's own framing (RFC 9112 §3.2, §6), so they are compared through the framing.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
MAX_HEAD = 64 * 1024  # the listener's head limit; h11 is told the same


def end_to_end(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Header fields a proxy forwards: (lower-case name, value) in order, hop-by-hop removed."""
    named = {
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [
        (name.lower(), value)
        for name, value in raw
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    ]


@dataclass
class Message:
    """One message as h11 reads it."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]  # end-to-end only
    body: bytes = b""
    complete: bool = False
    status: int = 0
    reason: bytes = b""
    keep_alive: bool = True
    close_delimited: bool = False  # an answer with neither Content-Length nor chunked


@dataclass
class Reading:
    """The messages h11 read from a byte stream, and why it stopped."""

    messages: list[Message] = field(default_factory=list)
    error: str | None = None  # h11's complaint, if the bytes broke a rule
    error_in_head: bool = False  # the error came before the head of the last message parsed
    interim: int = 0  # 1xx answers before the final one (responses only)


def _keep_alive(request: h11.Request) -> bool:
    tokens = {
        t.strip().lower()
        for name, value in request.headers
        if name == b"connection"
        for t in value.split(b",")
    }
    if request.http_version == b"1.0":
        return b"keep-alive" in tokens
    return b"close" not in tokens


def requests(data: bytes) -> Reading:
    """The requests h11 reads from the app's bytes, answering each (so pipelining continues).

    h11 never keeps an HTTP/1.0 connection alive; RFC 9112 Appendix C.2.2 allows it when the
    request says ``Connection: keep-alive`` (llhttp does), so the reading then restarts on the
    bytes that follow with a fresh h11 connection (rule R1 in test_differential.RULES).
    """
    out = Reading()
    while True:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        conn.receive_data(data)
        current: Message | None = None
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Request):
                    current = Message(
                        event.method,
                        event.target,
                        event.http_version,
                        end_to_end(list(event.headers.raw_items())),
                        keep_alive=_keep_alive(event),
                    )
                    out.messages.append(current)
                elif isinstance(event, h11.Data):
                    assert current is not None
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    current.complete = True
                    conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
                    conn.send(h11.EndOfMessage())
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                        current = None
                    else:
                        break
                else:  # NEED_DATA or PAUSED: the rest is incomplete
                    return out
        except h11.ProtocolError as exc:
            out.error = str(exc) or type(exc).__name__
            out.error_in_head = current is None or current.complete
            return out
        assert current is not None
        rest, _closed = conn.trailing_data
        if not (current.version == b"1.0" and current.keep_alive and rest):
            return out
        data = bytes(rest)


def answer(method: str, data: bytes) -> Reading:
    """The final answer h11 reads from a provider's bytes, the provider closing after them."""
    out = Reading()
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "up.test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    current: Message | None = None
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                out.interim += 1
            elif isinstance(event, h11.Response):
                current = _answer(method, event)
                out.messages.append(current)
            elif isinstance(event, h11.Data):
                assert current is not None
                current.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert current is not None
                current.complete = True
                return out
            else:
                return out
    except h11.ProtocolError as exc:
        out.error = str(exc) or type(exc).__name__
        out.error_in_head = current is None
        return out


@dataclass
class Received:
    """What the app read from the sidecar: answers (1xx skipped) and how the stream ended."""

    answers: list[Message] = field(default_factory=list)
    error: str | None = None
    leftover: bool = False  # bytes that began no answer h11 could read


def received(methods: list[str], data: bytes, closed: bool) -> Received:
    """The app's view, read by h11 as a client that sent ``methods`` in order."""
    out = Received()
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)
    current: Message | None = None
    conn.receive_data(data)
    if closed:
        conn.receive_data(b"")
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "s")]))
        conn.send(h11.EndOfMessage())
        try:
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Response):
                    current = _answer(method, event)
                    names = {n for n, _ in event.headers}
                    current.close_delimited = not names & {b"content-length", b"transfer-encoding"}
                    out.answers.append(current)
                elif isinstance(event, h11.Data):
                    assert current is not None
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    current.complete = True
                    break
                elif isinstance(event, h11.InformationalResponse):
                    continue
                else:
                    return out
        except h11.ProtocolError as exc:
            out.error = str(exc) or type(exc).__name__
            return out
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            rest, _ = conn.trailing_data
            out.leftover = bool(rest)
            return out
    rest, _ = conn.trailing_data
    out.leftover = bool(rest)
    return out


def _answer(method: str, event: h11.Response) -> Message:
    """A final answer as h11 read it, with its end-to-end headers (the request is ``method``)."""
    return Message(
        method.encode(),
        b"/",
        event.http_version,
        end_to_end(list(event.headers.raw_items())),
        status=event.status_code,
        reason=bytes(event.reason),
    )
