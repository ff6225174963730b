"""The proxy pipeline: route, check the credential, let the scheme sign, send; the listener relays.

Three request forms reach the same pipeline, all parsed by the one engine in ``listener.py``:
- path mode, ``/<upstream>/<path>``;
- forward-proxy mode, an absolute-form target ``http://<host>/<path>`` whose host an upstream
  declares (the app sets ``HTTP_PROXY``); the upstream leg uses the upstream's own URL (HTTPS);
- intercepted HTTPS, origin-form requests inside a CONNECT tunnel, routed by the tunnel's host
  (``intercept.TunnelRouter``, passed to :func:`forward` in place of :func:`route`).

Anything else is refused with 403 before a connection is made: no open proxy, no SSRF.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from multidict import CIMultiDict
from yarl import URL

from sidecar import audit, hostguard
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.proxy import client as http1
from sidecar.proxy import placeholders, scrub, tokens
from sidecar.proxykeys.permissions import decoded_path
from sidecar.runtime import Runtime
from sidecar.schemes.base import Credential, OutboundRequest, Scheme
from sidecar.schemes.driver import drive
from sidecar.upstreams import Upstream

if TYPE_CHECKING:
    from collections.abc import Callable

    from sidecar.proxy.message import Incoming

    # Picks the upstream of a request: ``route`` here, or an intercepted tunnel's router.
    Router = Callable[[Runtime, Incoming], tuple[Upstream, str, str]]

log = get_logger("sidecar.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "host",
        "content-length",
    }
)
# C0 (but TAB), DEL, C1 and the Unicode line separators: none is ever forwarded.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CHUNK = 64 * 1024
SENT_HEADER = "X-Sidecar-Request-Sent"


def route(rt: Runtime, request: Incoming) -> tuple[Upstream, str, str]:
    """(upstream, raw path below the upstream, raw query) or SC4001."""
    target = request.raw_path
    if target.startswith(("http://", "https://")):
        if "#" in target:  # yarl would drop it here, before check_target could see it
            raise SidecarError("SC4027")
        url = URL(target, encoded=True)
        host = (url.host or "").lower()
        for upstream in rt.upstreams.values():
            if upstream.accepts(host, url.explicit_port):
                return upstream, url.raw_path, url.raw_query_string
        raise SidecarError("SC4001", f"Host {host!r} is not a configured upstream")
    path, _, query = target.partition("?")
    first, _, rest = path.lstrip("/").partition("/")
    if first not in rt.upstreams:
        raise SidecarError("SC4001", "Path does not start with a configured upstream name")
    return rt.upstreams[first], "/" + rest, query


def check_target(raw_path: str, raw_query: str) -> None:
    """Refuse what would make the path the provider gets differ from the one checked.

    A fragment is never sent (yarl drops it, so ``/a#/b`` would be checked as ``/a#/b`` and
    sent as ``/a``): SC4027. An encoded slash or backslash, or a bare backslash, is decoded
    by some providers into a separator: SC4028, so the decoded path a proxy key is checked
    against (``permissions.decoded_path``) has the same segments as the path that is sent.
    """
    if "#" in raw_query:
        raise SidecarError("SC4027")
    decoded_path(raw_path)


def upstream_url(upstream: Upstream, raw_path: str, raw_query: str) -> URL:
    check_target(raw_path, raw_query)
    if ("." in raw_path and any(seg in ("..", ".") for seg in raw_path.split("/"))) or (
        "%" in raw_path and "%2e" in raw_path.lower()
    ):
        raise SidecarError("SC4011", "Dot segments are not allowed in the path")
    target = upstream.prefix + raw_path
    return URL(target + "?" + raw_query if raw_query else target, encoded=True)


def forward_headers(request: Incoming) -> CIMultiDict[str]:
    named = {
        token.strip().lower()
        for value in request.headers.getall("Connection", ())
        for token in value.split(",")
    }
    headers: CIMultiDict[str] = CIMultiDict()
    clean = _CONTROL.search("\t".join(request.headers.values())) is None  # one scan, usually
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in named:
            continue
        if not clean and _CONTROL.search(value):
            raise SidecarError("SC4010", f"Header {key!r} holds a control character")
        headers.add(key, value)
    return headers


def usable_credential(rt: Runtime, upstream: Upstream, cred: Credential | None) -> Credential:
    """Refuse before anything leaves the pod: missing, disabled or the other environment."""
    name = upstream.cfg.credential
    if cred is None:
        raise SidecarError(
            "SC4002", f"No credential {name!r} stored for upstream {upstream.name!r}"
        )
    if not cred.enabled:
        raise SidecarError("SC4003", f"Credential {name!r} is disabled")
    if cred.environment != upstream.cfg.environment or cred.upstream != upstream.name:
        raise SidecarError(
            "SC4004",
            f"Credential {name!r} is for {cred.environment}/{cred.upstream}; "
            f"upstream {upstream.name!r} is {upstream.cfg.environment}",
        )
    return cred


async def _credential(rt: Runtime, upstream: Upstream) -> Credential | None:
    if not rt.bootstrapped:  # fail fast: only the bootstrap task reads Vault (single flight)
        raise SidecarError("SC4035")
    age = time.monotonic() - (rt.store.last_sync or 0.0)
    if age > rt.stale_after:
        rt.store.stale_serves += 1
        if age > rt.config.cache.max_stale:
            raise SidecarError("SC4012")
    return rt.store.cached(upstream.cfg.credential)


async def forward(
    rt: Runtime, request: Incoming, router: Router
) -> tuple[Upstream, http1.Response, float, tuple[bytes, ...]]:
    """Everything between the app's request and the upstream's answer head, for every mode.

    ``router`` is :func:`route`, or the router of the intercepted tunnel the request came
    through. Returns the upstream, its answer (body unread), when the send started (for the
    latency metric) and the secrets the answer must not carry (``scrub.py``; none if opted out).
    """
    hostguard.check_proxy(rt, request)
    upstream, raw_path, raw_query = router(rt, request)
    url = upstream_url(upstream, raw_path, raw_query)
    headers = forward_headers(request)
    if upstream.cfg.scrub_answers:  # a compressed answer could not be scanned, nor could
        headers["Accept-Encoding"] = "identity"  # ranges shorter than a secret, glued back
        for name in _PARTIAL:
            headers.popall(name, None)
    grant = await tokens.admit(rt, upstream, request, headers, raw_path)  # token emulation
    cred = usable_credential(rt, upstream, await _credential(rt, upstream))
    audit.attach(request, cred)
    scheme = upstream.scheme
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    whole = grant.signed or placeholders.on(upstream.cfg)  # a body checked or rewritten
    if scheme.requires_request_body or scheme.replays_request or whole:
        if request.content is not None:
            body = await request.read_whole(upstream.cfg.max_body, SidecarError("SC4005"))
    elif request.content is not None:
        stream = request.content.iter_chunked(_CHUNK)
    grant.check_body(request.method, body)
    url, body = await placeholders.rewrite(upstream.cfg, cred, url, headers, body)  # then sign
    outbound = OutboundRequest(request.method, url, headers, body)
    pool = upstream.pool_for(cred)  # SC1000 if not started; client TLS of this version (mtls)
    started = time.perf_counter()
    sent: list[str | None] = []  # the Authorization of each attempt, as it was sent
    reply = await send(pool, scheme, outbound, cred, stream, request.content_length, sent)
    if not upstream.cfg.scrub_answers:
        return upstream, reply, started, ()
    app_auth = request.headers.get("Authorization")
    last = sent.pop() if sent else None  # the request whose answer is relayed
    return upstream, reply, started, scrub.memory(rt).needles(cred, last, app_auth, sent)


_PARTIAL = ("Range", "If-Range")  # pieces of an answer: each shorter than the secret it holds


async def send(
    pool: http1.Pool,
    scheme: Scheme,
    outbound: OutboundRequest,
    cred: Credential,
    stream: AsyncIterator[bytes] | None,
    content_length: int | None,
    sent: list[str | None] | None = None,
) -> http1.Response:
    """Drive the auth flow (one send, at most one retry); returns the answer to relay.

    The Authorization of each request sent is appended to ``sent``, as it was sent: the answer
    is scanned for all of them (a retry after a 401 carries a fresh token, and the first one
    may still be valid).

    A streamed body cannot be sent twice, which is why schemes that replay read it whole. Any
    502/504 raised here, by the pool or by the flow (a token refresh failing after a 401),
    carries ``X-Sidecar-Request-Sent``: the most any attempt wrote of the request.
    """
    answered = False  # once an attempt is answered, the whole request went out

    async def once(req: OutboundRequest) -> http1.Response:
        nonlocal answered
        if sent is not None:
            sent.append(req.headers.get("Authorization"))  # now: a retry rewrites req
        if req.body is not None:
            resp = await _send_once(pool, req, req.body, None)
        else:
            resp = await _send_once(pool, req, stream, content_length)
        answered = True
        return resp

    try:
        return await drive(scheme.auth_flow(outbound, cred), once, http1.Response.release)
    except SidecarError as err:
        if err.status in (502, 503, 504):  # a failed send said what it wrote; else nothing was
            told = err.headers.get(SENT_HEADER, "none")
            err.headers[SENT_HEADER] = "complete" if answered else told
        raise


async def _send_once(
    pool: http1.Pool,
    req: OutboundRequest,
    data: bytes | AsyncIterator[bytes] | None,
    content_length: int | None,
) -> http1.Response:
    try:
        return await pool.request(
            req.method, req.url.raw_path_qs, req.headers.items(), data, content_length
        )
    except http1.UpstreamTimeout as exc:
        err = SidecarError("SC4006", f"Upstream {req.url.host} timed out")
        if exc.kind == "pool":
            err = SidecarError("SC4026", f"Upstream {req.url.host}: no free connection in time")
        err.headers[SENT_HEADER] = exc.sent
        raise err from None
    except http1.UpstreamConnectionError as exc:
        err = SidecarError("SC4007", f"Upstream {req.url.host} connection failed ({exc.kind})")
        if exc.kind == "interim":
            err = SidecarError("SC4025", f"Upstream {req.url.host} sent a 1xx answer with a body")
        elif exc.kind == "framing":
            err = SidecarError("SC4029", f"Upstream {req.url.host} sent an unrelayable coding")
        err.headers[SENT_HEADER] = exc.sent
        raise err from None


def body_aborted(resp: http1.Response, exc: Exception) -> None:
    log.warning("upstream_body_aborted", status=resp.status, error=type(exc).__name__)


def account_spend(
    rt: Runtime, request: Incoming, upstream: Upstream, status: int, started: float, sent: int
) -> None:
    """Metrics, audit and access line for a relayed answer (every mode)."""
    rt.metrics.observe(upstream.name, status, time.perf_counter() - started)
    audit.spent(request, status)
    if rt.config.logging.access_log:
        audit.access(request, status, sent)


def account_refusal(rt: Runtime, request: Incoming, err: SidecarError, sent: int) -> None:
    """Log, count and audit an answer the sidecar gives itself (every mode)."""
    log.info("proxy_refused", code=err.code, status=err.status, method=request.method)
    rt.metrics.refused.labels(err.code).inc()
    audit.refused(request, err)
    if rt.config.logging.access_log:
        audit.access(request, err.status, sent, err.code)
