"""The audit trail: one ``proxy_request`` event per proxied request, spent or refused.

Every spend of a credential is accounted for: which credential (and version), which proxy key,
which upstream, what kind of request, how it ended, and how long it took. The event holds no
secret, no key, no header and no body, and not even the raw path: ids and tokens in a path can
be personal data, so the path is a *template*, the matched permission pattern when a key was
used, else the path with id-like segments (digits, UUIDs, long hex, long tokens) replaced by
``{id}``. The query is never logged.

The listener opens the record (:func:`begin`) so refusals before routing are counted too;
the pipeline fills it in as it learns more, and one of :func:`spent` or :func:`refused`
writes it.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from yarl import URL

from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.schemes.base import Credential

log = get_logger("sidecar.audit")
access_log = get_logger("sidecar.access")
MAX_TEMPLATE = 256
_ID = re.compile(
    r"\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}|(?=[^/]*\d)[A-Za-z0-9_%.~-]{20,}"
)


@dataclass(slots=True)
class Spend:
    """What is known about one proxied request so far."""

    method: str
    path: str
    started: float
    upstream: str | None = None
    credential: str | None = None
    version: int | None = None
    key_id: str | None = None
    template: str | None = None


class Audited(Protocol):
    """What the audit trail reads from a request, and the record it keeps on it.

    Declared here so the trail does not depend on the proxy engine; the engine's request type
    (``sidecar.proxy.message.Incoming``) satisfies it.
    """

    spend: Spend | None

    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str: ...


@functools.lru_cache(maxsize=1024)
def path_template(path: str) -> str:
    """``/v1/payments/123/refunds`` -> ``/v1/payments/{id}/refunds``.

    Paths repeat, so the answer is cached; the cache is bounded and holds no secret (the
    query is never part of ``path``).
    """
    segments = ["{id}" if _ID.fullmatch(s) else s for s in path.split("/")]
    return "/".join(segments)[:MAX_TEMPLATE]


def begin(request: Audited) -> Spend:
    target = request.raw_path
    if target.startswith(("http://", "https://")):
        target = URL(target, encoded=True).raw_path
    spend = Spend(request.method, target.partition("?")[0], time.perf_counter())
    request.spend = spend
    return spend


def routed(request: Audited, upstream: str, credential: str, path: str) -> None:
    """The upstream is known: from here on the path is the upstream-relative one."""
    spend = request.spend
    if spend is not None:
        spend.upstream, spend.credential, spend.path = upstream, credential, path


def keyed(request: Audited, key_id: str, pattern: str | None = None) -> None:
    spend = request.spend
    if spend is not None:
        spend.key_id, spend.template = key_id, pattern


def attach(request: Audited, cred: Credential) -> None:
    spend = request.spend
    if spend is not None:
        spend.version = cred.version


def spent(request: Audited, status: int) -> None:
    spend = request.spend
    if spend is not None:
        _write(spend, status, None)


def refused(request: Audited, err: SidecarError) -> None:
    spend = request.spend
    if spend is not None:
        _write(spend, err.status, err.code)


def access(request: Audited, status: int, sent: int, code: str | None = None) -> None:
    """The optional HTTP access line (``logging.access_log``): what crossed the listener.

    Unlike the audit event it is about traffic, not credentials: bytes relayed to the app and
    the whole time in the sidecar. The same privacy rules: a path template, never the query.
    """
    spend = request.spend
    if spend is None:
        return
    LINES.add(
        access_log.info,
        "proxy_access",
        {
            "method": spend.method,
            "path_template": spend.template or path_template(spend.path),
            "upstream": spend.upstream,
            "status": status,
            "bytes_out": sent,
            "duration_ms": round((time.perf_counter() - spend.started) * 1000, 3),
            "code": code,
        },
    )


def _write(spend: Spend, status: int, code: str | None) -> None:
    LINES.add(
        log.info,
        "proxy_request",
        {
            "credential": spend.credential,
            "credential_version": spend.version,
            "key_id": spend.key_id,
            "upstream": spend.upstream,
            "method": spend.method,
            "path_template": spend.template or path_template(spend.path),
            "status": status,
            "latency_ms": round((time.perf_counter() - spend.started) * 1000, 3),
            "code": code,
        },
    )


def verify_attempt(credential: str, field: str | None, outcome: str, peer: str | None) -> None:
    """One line per ``verify``, allowed or refused: guessing at a secret leaves a trail.

    ``outcome`` is ``valid``, ``invalid`` or the refusal's code; never the value compared.
    """
    log.info("credential_verify", credential=credential, field=field, outcome=outcome, peer=peer)


class Lines:
    """Per-request lines, logged at the end of the event loop's current turn.

    Why: rendering and writing a line per request inside the request's own turn cost about a
    fifth of the CPU per proxied request at c=32 (bench/README.md); logged together at the end
    of the turn, the lines share one warm code path and, usually, one ``write``. What is
    measured (latency, status) is fixed when the request ends; only the log timestamp is taken
    at the end of the turn, well under a millisecond later. The lines still pass through every
    processor, redaction included. ``flush()`` runs at shutdown and at exit, so only a SIGKILL
    in the middle of a turn can lose lines, at most that turn's.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[Callable[..., Any], str, dict[str, Any]]] = deque()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def add(self, method: Callable[..., Any], event: str, fields: dict[str, Any]) -> None:
        self._pending.append((method, event, fields))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): log now
            self.flush()
            return
        if self._scheduled_on is not loop:  # (a loop that closed before flushing is replaced)
            self._scheduled_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Log everything pending, in order; a line that fails to log leaves the rest pending."""
        self._scheduled_on = None
        pending = self._pending
        while pending:
            method, event, fields = pending.popleft()
            method(event, **fields)


LINES = Lines()
atexit.register(LINES.flush)
