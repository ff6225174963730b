"""What every admin handler shares: app keys, body parsing, middlewares.

One middleware turns any error into ``{"message", "code"}``; pydantic errors are reduced to
their location and message, because pydantic's own text echoes the input (a secret, maybe).
Another refuses what a web page could send (``sidecar.hostguard``) and any body that is not
declared ``application/json``: a page's ``no-cors`` fetch sends no Content-Type or
``text/plain``, and only ``application/json`` needs a CORS preflight, which is never granted.
The one exception is a route declared ``raw_body`` (webhook-signature verify, whose body is a
provider's bytes as received): it changes nothing, and the Origin/Sec-Fetch-Site checks that
every browser POST trips still apply to it.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from sidecar import hostguard
from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.handlers.contract import OPERATIONS
from sidecar.logging import get_logger
from sidecar.ratelimit import Limiter
from sidecar.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
VERIFY_LIMITER = web.AppKey("verify_limiter", Limiter)
# \Z, not $: "$" also matches before a trailing newline ("abc\n" would pass).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_VERSION = re.compile(r'(?:W/)?"?([0-9]{1,18})"?')
MAX_DEPTH = 32
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = get_logger("sidecar.admin")


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise SidecarError("SC1004", "Names must match [a-z0-9][a-z0-9._-]{0,63}")
    return name


async def parse_body(request: web.Request, model: type[M]) -> M:
    require_json(request)
    raw = await request.read()
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise SidecarError("SC1001") from None
    if not isinstance(data, dict):
        raise SidecarError("SC1002", "Request body must be a JSON object")
    if _deeper_than(data, MAX_DEPTH):
        raise SidecarError("SC1002", f"body: nested deeper than {MAX_DEPTH} levels")
    try:  # a lone surrogate ("\ud800") parses but can be neither stored nor encrypted
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise SidecarError("SC1001", "Request body holds an unpaired surrogate") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        raise SidecarError("SC1002", "; ".join(problems)) from None


def require_json(request: web.Request) -> None:
    """SC1008 unless the media type is exactly ``application/json`` (parameters aside)."""
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise SidecarError("SC1008")


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; Python accepts them, Vault does not."""
    raise ValueError(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf
        raise ValueError(text)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Bounded by ``limit`` itself, so the check cannot recurse deeply."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return limit == 0 or any(_deeper_than(v, limit - 1) for v in value)
    return False


def if_match(request: web.Request) -> int | None:
    """``5``, ``"5"`` or ``W/"5"``; ASCII digits only ("²".isdigit() is true, int() fails)."""
    value = request.headers.get("If-Match")
    if value is None:
        return None
    match = _VERSION.fullmatch(value.strip())
    if match is None:
        raise SidecarError("SC2003", "If-Match must be a version number")
    return int(match.group(1))


def json_response(body: Any, status: int = 200, version: int | None = None) -> web.Response:
    headers = {"ETag": f'"{version}"'} if version is not None else None
    return web.json_response(body, status=status, headers=headers)


def error_response(err: SidecarError) -> web.Response:
    headers: dict[str, str] | None = getattr(err, "headers", None)
    return web.json_response(err.body(), status=err.status, headers=headers)


_HTTP_CODES = {404: "SC1005", 405: "SC1006", 413: "SC1003"}
_BROWSER_CODES = frozenset({"SC1008", "SC1015", "SC1016", "SC1017"})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SidecarError as err:
        if err.status >= 500:
            log.warning("admin_error", code=err.code, status=err.status, error=err.message)
        elif err.code in _BROWSER_CODES:
            log.info("admin_refused", code=err.code, method=request.method, path=request.path)
        runtime(request).metrics.admin_refused.labels(err.code).inc()
        return error_response(err)
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status)
        if code is None:
            raise
        response = error_response(SidecarError(code))
        if "Allow" in exc.headers:  # RFC 9110: a 405 must say which methods are allowed
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("admin_unhandled", path=request.path)
        return error_response(SidecarError("SC1000"))


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=rid):
        response = await handler(request)
        log.info("admin_request", method=request.method, path=request.path, status=response.status)
    response.headers["X-Request-Id"] = rid
    return response


def browser_guard(allow: Callable[[], hostguard.Allow], *, host: bool = True) -> Any:
    """Host, Origin and Sec-Fetch-Site checks, then: a body must be ``application/json``.

    ``allow`` is called per request, so a config reload applies at once. ``host=False`` for
    the health listener, which kubelet probes with ``Host: <pod IP>``.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        hostguard.check(request.headers, allow(), host=host)
        if request.body_exists and not raw_body(request):
            require_json(request)
        return await handler(request)

    return guard


def raw_body(request: web.Request) -> bool:
    """A route declared ``raw_body`` takes any media type (a provider's webhook, as received)."""
    op = OPERATIONS.get(request.match_info.handler)
    return op is not None and op.raw_body


def admin_allow(rt: Runtime) -> Callable[[], hostguard.Allow]:
    """The admin listener's names (``admin.hosts``) and the listeners' allowed origins."""
    return _allow(rt, lambda cfg: cfg.admin.hosts)


def local_allow(rt: Runtime) -> Callable[[], hostguard.Allow]:
    """The proxy role's local listener: loopback and ``localhost`` only, and allowed origins."""
    return _allow(rt, lambda _cfg: ())


def _allow(rt: Runtime, hosts: Callable[[Config], Iterable[str]]) -> Callable[[], hostguard.Allow]:
    cache: dict[str, Any] = {}

    def allow() -> hostguard.Allow:
        cfg = rt.config
        if cache.get("config") is not cfg:  # rebuilt only after a reload
            cache["config"] = cfg
            cache["allow"] = hostguard.Allow.build(hosts(cfg), cfg.listen.allowed_origins)
        built: hostguard.Allow = cache["allow"]
        return built

    return allow
