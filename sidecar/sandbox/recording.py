"""What every sandbox peer remembers about the requests it received.

Tests use this to prove the provider saw the real secret (and that nothing else did), so the
record is taken before any auth check: rejected requests are evidence too. Only the last
``MAX_SEEN`` requests are kept, so a long `sidecar dev` session cannot grow without bound.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

MAX_SEEN = 100
ADMIN_PREFIX = "/_sandbox/"


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as it arrived: ``path`` and ``query`` are raw (still percent-encoded)."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def contains(self, text: str) -> bool:
        """True if ``text`` appears in any header value, the raw target or the body."""
        raw = text.encode()
        return (
            raw in self.body
            or text in self.path
            or text in self.query
            or any(text in value for value in self.headers.values())
        )


@dataclass
class PeerState:
    """Counters shared by every peer, plus the bounded request log."""

    seen: deque[SeenRequest] = field(default_factory=lambda: deque(maxlen=MAX_SEEN))
    accepted: int = 0
    rejected: int = 0

    def saw(self, text: str) -> bool:
        """True if any remembered request carried ``text`` anywhere."""
        return any(request.contains(text) for request in self.seen)


class Refused(Exception):
    """A check the request failed; the text is the ``error`` the peer answers with 401."""


def refusal(state: PeerState, errors: Counter[str], exc: Refused) -> web.Response:
    """Count a refused request by its reason and answer it as the signing peers do."""
    state.rejected += 1
    errors[str(exc)] += 1
    return web.json_response({"error": str(exc)}, status=401)


def split_target(raw_target: str) -> tuple[str, str]:
    """Raw path and raw query of a request target, without decoding either."""
    path, _, query = raw_target.partition("?")
    return path, query


def recorder(state_of: Callable[[web.Application], PeerState]) -> Middleware:
    """A middleware that logs each provider request (not the ``/_sandbox/`` admin calls)."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        path, query = split_target(request.raw_path)
        if not path.startswith(ADMIN_PREFIX):
            body = await request.read()  # aiohttp caches it, so handlers can read it again
            headers = CIMultiDictProxy(CIMultiDict(request.headers))
            seen = SeenRequest(request.method, path, query, headers, body)
            state_of(request.app).seen.append(seen)
        return await handler(request)

    return record
