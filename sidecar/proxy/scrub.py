"""Answers never carry a secret back to the app: the upstream's answer is scanned before relay.

Why: a provider endpoint that echoes request headers (a debug route, an error page quoting the
request) or stores and shows request fields would hand the app the real Bearer the sidecar put
in ``Authorization``, or a secret a placeholder was replaced with, and the app is never meant to
hold either (issue 15). The sidecar knows what it injected, so it looks for exactly that.

What is looked for (the *needles*), per proxied request:
- every secret field value of the credential, at least :data:`MIN_SECRET` bytes (a shorter value,
  a PIN say, would match ordinary bytes: it is not scanned, and is documented as such);
- the ``Authorization`` credentials the scheme put in the request (the OAuth2 access token; the
  Base64 of a Basic pair), when the header differs from what the app sent, and the last
  :data:`RECENT` such values of the credential (a token replaced after a 401 may still be valid);
- each also as JSON-escaped and percent-encoded, when those differ from the raw bytes (cheap: a
  token's charset usually makes them identical, so no extra needle). Base64 of a secret is not
  scanned: a Base64 window depends on the offset, three needles per value for a rare echo.

A needle in a header value or the reason phrase: the head is not relayed (502 SC4030). In the
body: the bytes are replaced with as many ``*`` (framing and Content-Length stay exact). The
scan keeps ``len(longest needle) - 1`` bytes back between chunks, so a needle split across
reads or chunks is still found, and no byte of it is written before the decision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote
from weakref import WeakKeyDictionary

from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.schemes.base import Credential

if TYPE_CHECKING:
    from sidecar.metrics import Metrics
    from sidecar.proxy.response import Response
    from sidecar.runtime import Runtime

log = get_logger("sidecar.proxy")

MIN_SECRET = 8  # bytes; shorter values are not scanned (false hits on ordinary text)
_MASK = ord("*")


# The last RECENT distinct tokens injected for a credential are kept as needles: a token
# replaced after a 401 may still be valid, and a provider that shows its request log would quote
# it in the retry's answer or a later one. Bounded, so a per-request Authorization (a signature)
# costs no memory.
RECENT = 4
_Token = tuple[str, frozenset[bytes]]


class Memory:
    """One runtime's needles, per credential name (a second runtime, a restart, starts empty).

    ``last`` holds (the secrets mapping, their spellings, the tokens, the needles): a request
    with the same cached credential and tokens reuses them (the hot path builds nothing), and a
    new token adds only its own spellings. One entry per name, replaced when either changes,
    so a replaced secret is not kept.
    """

    def __init__(self) -> None:
        self.last: dict[str, tuple[object, frozenset[bytes], tuple[_Token, ...], tuple[bytes, ...]]]
        self.last = {}
        self.tokens: dict[str, tuple[_Token, ...]] = {}

    def needles(
        self,
        cred: Credential,
        sent: str | None,
        app: str | None,
        earlier: Sequence[str | None] = (),
    ) -> tuple[bytes, ...]:
        """The byte strings this answer must not carry; ``sent``/``app``: Authorization out/in,
        ``earlier``: the Authorization of attempts before the one answered (a 401's)."""
        for value in (*earlier, sent):
            token = _token(value, app)
            if token is not None:
                self._remember(cred.name, token)
        tokens = self.tokens.get(cred.name, ())
        last = self.last.get(cred.name)
        if last is not None and last[0] is cred.secrets:
            if last[2] == tokens:
                return last[3]
            secret = last[1]
        else:
            values = (v for v in cred.secrets.values() if scanned(v))
            secret = frozenset().union(*(_spellings(v) for v in values))
        found = secret.union(*(spelled for _, spelled in tokens))
        result = tuple(sorted(found, key=len, reverse=True))
        self.last[cred.name] = (cred.secrets, secret, tokens, result)
        return result

    def _remember(self, name: str, token: str) -> None:
        known = self.tokens.get(name, ())
        if all(token != seen for seen, _ in known):
            spelled = frozenset(_spellings(token)) if scanned(token) else frozenset()
            self.tokens[name] = (*known, (token, spelled))[-RECENT:]


_MEMORY: WeakKeyDictionary[Runtime, Memory] = WeakKeyDictionary()


def memory(rt: Runtime) -> Memory:
    """The runtime's needles (kept with the runtime, like its token tables)."""
    found = _MEMORY.get(rt)
    if found is None:
        found = _MEMORY[rt] = Memory()
    return found


def _token(sent: str | None, app: str | None) -> str | None:
    """The credentials part of an Authorization the sidecar set (None when it is the app's)."""
    if sent is None or sent == app:
        return None
    return sent.partition(" ")[2].strip() or sent


def scanned(value: str) -> bool:
    """Whether an answer is scanned for this value (long enough not to match ordinary bytes)."""
    return len(_bytes(value)) >= MIN_SECRET


def _spellings(value: str) -> set[bytes]:
    """The value as bytes, JSON-escaped and percent-encoded (one entry when they agree)."""
    raw = _bytes(value)
    escaped = json.dumps(value)[1:-1].encode()  # ASCII: non-ASCII as \\uXXXX
    slashed = escaped.replace(b"/", b"\\/")  # PHP and some Java encoders escape the slash
    return {raw, escaped, slashed, quote(raw, safe="").encode()}


def _bytes(value: str) -> bytes:
    """The value's bytes as the pool writes them; never raises (a lone surrogate is kept)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def scanner(
    name: str, reply: Response, head_only: bool, needles_: tuple[bytes, ...]
) -> Scanner | None:
    """The body's scanner, None when nothing is scanned; SC4030/SC4031 refuse the head."""
    if not needles_:
        return None
    if in_head(needles_, reply.reason.encode("latin-1"), reply.raw_headers):
        log.warning("answer_secret_in_head", upstream=name, status=reply.status)
        raise SidecarError("SC4030")
    bodiless = head_only or reply.status in (204, 304)  # as message.Frame.choose
    if not bodiless and compressed(reply.raw_headers):
        log.warning("answer_compressed", upstream=name, status=reply.status)
        raise SidecarError("SC4031")
    return Scanner(needles_)


def redacted(metrics: Metrics, name: str, hits: int) -> None:
    """Count and log masked secrets; never the value, nor where it was."""
    log.warning("answer_secret_redacted", upstream=name, count=hits)
    metrics.answer_redactions.labels(name).inc(hits)


def in_head(needles_: tuple[bytes, ...], reason: bytes, raw: list[tuple[bytes, bytes]]) -> bool:
    """Whether a needle is in the reason phrase or any header value (names too: they are echoed)."""
    blob = b"\n".join([reason, *(b"%s:%s" % pair for pair in raw)])
    return any(n in blob for n in needles_)


def compressed(raw: list[tuple[bytes, bytes]]) -> bool:
    """A Content-Encoding other than identity: bytes that cannot be scanned as sent."""
    return any(
        len(name) == 16
        and name.lower() == b"content-encoding"
        and value.strip().lower() not in (b"", b"identity")
        for name, value in raw
    )


class Scanner:
    """A body, chunk by chunk: redacted bytes out, the last ``keep`` bytes held back."""

    __slots__ = ("hits", "keep", "needles", "tail")

    def __init__(self, needles_: tuple[bytes, ...]) -> None:
        self.needles = needles_
        self.keep = max(len(n) for n in needles_) - 1
        self.tail = b""
        self.hits = 0

    def feed(self, chunk: bytes) -> bytes:
        """The bytes that may be written now (maybe empty: never write an empty chunk)."""
        data = self.tail + chunk if self.tail else chunk
        data = self._redact(data)
        cut = len(data) - self.keep
        if cut <= 0:
            self.tail = data
            return b""
        self.tail = data[cut:]
        return data[:cut]

    def end(self) -> bytes:
        """The held-back tail, at the end of the body (already scanned)."""
        tail, self.tail = self.tail, b""
        return tail

    def whole(self, body: bytes) -> bytes:
        """A body read at once."""
        return self._redact(body)

    def _redact(self, data: bytes) -> bytes:
        buf: bytearray | None = None
        for needle in self.needles:
            at = data.find(needle) if buf is None else buf.find(needle)
            while at >= 0:
                if buf is None:
                    buf = bytearray(data)
                buf[at : at + len(needle)] = bytes([_MASK]) * len(needle)
                self.hits += 1
                at = buf.find(needle, at + len(needle))
        return data if buf is None else bytes(buf)
