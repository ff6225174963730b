"""The proxy listener: route, check the credential, let the scheme sign, send, stream back.

Two request forms reach the same pipeline:
- path mode, ``/<upstream>/<path>``;
- forward-proxy mode, an absolute-form target ``http://<host>/<path>`` whose host an upstream
  declares (the app sets ``HTTP_PROXY``); the upstream leg uses the upstream's own URL (HTTPS).

Anything else is refused with 403 before a connection is made: no open proxy, no SSRF.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from sidecar import audit, hostguard
from sidecar.errors import SidecarError
from sidecar.handlers.common import runtime
from sidecar.logging import get_logger
from sidecar.proxy import client as http1
from sidecar.proxy import intercept
from sidecar.proxy.request import ProxyRequest as Incoming
from sidecar.proxykeys.guard import admit
from sidecar.proxykeys.permissions import decoded_path
from sidecar.runtime import Runtime
from sidecar.schemes.base import Credential, OutboundRequest, Scheme
from sidecar.schemes.driver import drive
from sidecar.upstreams import Upstream

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


async def read_body(request: Incoming, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise SidecarError("SC4005")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise SidecarError("SC4005")
        chunks.append(chunk)
    return b"".join(chunks)


async def forward(
    rt: Runtime, request: Incoming, router: intercept.Router
) -> tuple[Upstream, http1.Response, float]:
    """Everything between the app's request and the upstream's answer head, engine-neutral.

    ``request`` is an aiohttp ``web.Request`` (intercepted connections) or the listener's own
    :class:`sidecar.proxy.listener.Incoming`; both offer what is read here. Returns the upstream,
    its answer (body unread) and when the send started, for the latency metric.
    """
    hostguard.check_proxy(rt, request)
    upstream, raw_path, raw_query = router(rt, request)
    url = upstream_url(upstream, raw_path, raw_query)
    headers = forward_headers(request)
    grant = await admit(rt, upstream, request, headers, raw_path)
    cred = usable_credential(rt, upstream, await _credential(rt, upstream))
    audit.attach(request, cred)
    scheme = upstream.scheme
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    if scheme.requires_request_body or scheme.replays_request or grant.signed:
        body = await read_body(request, upstream.cfg.max_body) if request.body_exists else None
    elif request.body_exists:
        stream = request.content.iter_chunked(_CHUNK)
    grant.check_body(request.method, body)
    outbound = OutboundRequest(request.method, url, headers, body)
    if upstream.pool is None:
        raise SidecarError("SC1000", "sidecar is not started")
    started = time.perf_counter()
    reply = await send(upstream.pool, scheme, outbound, cred, stream, request.content_length)
    return upstream, reply, started


async def handle(request: web.Request) -> web.StreamResponse:
    """The aiohttp engine: requests decrypted by interception (and CONNECT, via middleware)."""
    rt = runtime(request)
    upstream, reply, started = await forward(rt, request, request.app.get(ROUTER, route))
    response = await _relay(request, reply)
    account_spend(rt, request, upstream, reply.status, started, response.body_length)
    return response


async def send(
    pool: http1.Pool,
    scheme: Scheme,
    outbound: OutboundRequest,
    cred: Credential,
    stream: AsyncIterator[bytes] | None,
    content_length: int | None,
) -> http1.Response:
    """Drive the auth flow (one send, at most one retry); returns the answer to relay.

    A streamed body cannot be sent twice, which is why schemes that replay read it whole. Any
    502/504 raised here, by the pool or by the flow (a token refresh failing after a 401),
    carries ``X-Sidecar-Request-Sent``: the most any attempt wrote of the request.
    """
    answered = False  # once an attempt is answered, the whole request went out

    async def once(req: OutboundRequest) -> http1.Response:
        nonlocal answered
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
        err.headers[SENT_HEADER] = exc.sent
        raise err from None


class _SmallRelay(web.StreamResponse):
    """Headers leave with the first body bytes: one send per small answer instead of two.

    A plain StreamResponse sends its headers at ``prepare()``; ``web.Response`` defers them
    like this (an aiohttp >= 3.12 class flag; older versions simply send twice).
    """

    _send_headers_immediately = False


async def _relay(request: web.Request, resp: http1.Response) -> web.StreamResponse:
    """Stream the upstream's answer; a failure mid-body can only cut the connection."""
    small = resp.content_length is not None and resp.content_length <= _CHUNK
    out = (_SmallRelay if small else web.StreamResponse)(status=resp.status, reason=resp.reason)
    for key, value in resp.headers.items():
        if key.lower() not in HOP_BY_HOP:
            out.headers.add(key, value)
    if resp.content_length is not None:
        out.content_length = resp.content_length
    try:
        await out.prepare(request)
        async for chunk in resp.iter_chunks():
            await out.write(chunk)
        await out.write_eof()
    except (http1.UpstreamTimeout, http1.UpstreamConnectionError) as exc:
        body_aborted(resp, exc)
        out.force_close()
    finally:
        resp.release()
    return out


def body_aborted(resp: http1.Response, exc: Exception) -> None:
    log.warning("upstream_body_aborted", status=resp.status, error=type(exc).__name__)


def account_spend(
    rt: Runtime, request: Incoming, upstream: Upstream, status: int, started: float, sent: int
) -> None:
    """Metrics, audit and access line for a relayed answer (both engines)."""
    rt.metrics.observe(upstream.name, status, time.perf_counter() - started)
    audit.spent(request, status)
    if rt.config.logging.access_log:
        audit.access(request, status, sent)


def account_refusal(rt: Runtime, request: Incoming, err: SidecarError, sent: int) -> None:
    """Log, count and audit an answer the sidecar gives itself (both engines)."""
    log.info("proxy_refused", code=err.code, status=err.status, method=request.method)
    rt.metrics.refused.labels(err.code).inc()
    audit.refused(request, err)
    if rt.config.logging.access_log:
        audit.access(request, err.status, sent, err.code)


@web.middleware
async def proxy_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Sidecar-made answers carry ``X-Sidecar-Error`` so an app can tell them from a provider's."""
    audit.begin(request)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except SidecarError as err:
        account_refusal(runtime(request), request, err, 0)
        return refusal(err)
    except web.HTTPException as exc:
        if exc.status == 413:
            audit.refused(request, SidecarError("SC4005"))
            return refusal(SidecarError("SC4005"))
        raise
    except Exception:
        log.exception("proxy_unhandled")
        audit.refused(request, SidecarError("SC1000"))
        return refusal(SidecarError("SC1000"))


def refusal(err: SidecarError) -> web.Response:
    headers = {**err.headers, "X-Sidecar-Error": err.code}
    return web.json_response(err.body(), status=err.status, headers=headers)


async def handle_connect(rt: Runtime, request: web.Request) -> web.StreamResponse:
    """CONNECT is never a blind tunnel: only interception of a configured host (intercept.py)."""
    interceptor = request.app.get(intercept.INTERCEPTOR)
    if interceptor is None:
        raise SidecarError("SC4001", "CONNECT tunnels are not allowed")
    return await interceptor.connect(request)


@web.middleware
async def connect_dispatch(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's router cannot match an authority-form target, so CONNECT is taken here."""
    if request.method == "CONNECT":
        return await handle_connect(runtime(request), request)
    response: web.StreamResponse = await handler(request)
    return response


# Only the inner app of intercepted TLS connections routes differently (by the CONNECT host).
ROUTER: web.AppKey[intercept.Router] = web.AppKey("router")


def build_proxy_app(rt: Runtime, *, router: intercept.Router | None = None) -> web.Application:
    from sidecar.handlers.common import RUNTIME

    app = web.Application(middlewares=[proxy_errors, connect_dispatch], client_max_size=1024**3)
    app[RUNTIME] = rt
    if router is not None:
        app[ROUTER] = router
    elif rt.config.intercept.enabled:
        intercept.install(app, rt, lambda r: build_proxy_app(rt, router=r))
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
