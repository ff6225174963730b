"""Request signatures for HMAC-enabled proxy keys, and the replay guard.

A stolen key alone is not enough to spend an HMAC-enabled key: each request also carries
``X-Sidecar-Timestamp`` (unix seconds) and ``X-Sidecar-Signature``, the lowercase hex of
HMAC-SHA256 under the key's ``hmac_key`` (its UTF-8 bytes) over::

    timestamp + method + path + hex(sha256(body))

concatenated with no separator. ``method`` is upper case; ``path`` is the path *and query* of the
URL the caller requested, exactly as sent on the request line (percent-encoding untouched): in
path mode that includes the ``/<upstream>`` prefix, e.g. ``/pix/api/session?x=1``; in
forward-proxy mode it is the URL's path and query without scheme and host. With no body, the
body hash is that of the empty string. The timestamp must be within 5 minutes of the sidecar's
clock, and a signature is accepted once: two identical requests in the same second are a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque

from sidecar.errors import SidecarError

WINDOW = 300
MAX_REMEMBERED = 250_000
TIMESTAMP = "X-Sidecar-Timestamp"
SIGNATURE = "X-Sidecar-Signature"


def sign(hmac_key: bytes, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The signature a caller must send; the sidecar recomputes it to compare."""
    message = timestamp + method + path + hashlib.sha256(body).hexdigest()
    return hmac.new(hmac_key, message.encode(), hashlib.sha256).hexdigest()


def check_timestamp(value: str | None, now: float) -> str:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 12:
        raise SidecarError("SC5004", f"{TIMESTAMP} must be unix seconds")
    if abs(now - int(value)) > WINDOW:
        raise SidecarError("SC5004", f"{TIMESTAMP} is more than {WINDOW} s from now")
    return value


class ReplayGuard:
    """Signatures seen within the window. Full means refuse: forgetting one would allow a replay.

    An entry is kept ``2 * WINDOW`` after it was seen, long enough for its timestamp to leave
    the acceptance window whichever side of the clock it was on; insertion order is expiry order,
    so pruning pops from the left.
    """

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._seen: set[bytes] = set()
        self._order: deque[tuple[float, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, key_id: str, signature: str, now: float) -> None:
        """Record a verified signature or raise SC5005 if it was already used."""
        self._prune(now)
        token = hashlib.sha256(f"{key_id}:{signature}".encode()).digest()[:16]
        if token in self._seen:
            raise SidecarError("SC5005")
        if len(self._seen) >= self.limit:
            raise SidecarError("SC5005", "Too many signed requests in the window; retry shortly")
        self._seen.add(token)
        self._order.append((now + 2 * WINDOW, token))

    def _prune(self, now: float) -> None:
        while self._order and self._order[0][0] < now:
            self._seen.discard(self._order.popleft()[1])


def verify(
    hmac_key: bytes,
    key_id: str,
    request_line: tuple[str, str, bytes],
    headers: tuple[str | None, str | None],
    guard: ReplayGuard,
) -> None:
    """SC5004 unless fresh and correct, SC5005 if seen before; only then is it remembered."""
    now = time.time()
    timestamp, given = check_timestamp(headers[0], now), headers[1]
    if given is None:
        raise SidecarError("SC5004", f"{SIGNATURE} is missing")
    method, path, body = request_line
    expected = sign(hmac_key, timestamp, method, path, body)
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise SidecarError("SC5004")
    guard.admit(key_id, expected, now)
