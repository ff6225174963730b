"""Liveness, readiness and status.

alive = the loop answers; ready = "can serve": config loaded, the credential cache warm and
younger than ``cache.max_stale``, and the Vault session valid by its last *successful* check or
renewal (a renewal that failed while the token's TTL remains does not flip it). ``/v1/status``
explains the verdict; it is its own route table, ``status_routes``, so it can be mounted on a
local listener and never on the health-only one, which the cluster can reach.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.handlers.common import runtime
from sidecar.handlers.contract import Ok, operation
from sidecar.handlers.models import Health, Readiness, Status, dump
from sidecar.metrics import CONTENT_TYPE

routes = web.RouteTableDef()
status_routes = web.RouteTableDef()


@routes.get("/healthz")
@operation("healthz", "Liveness: the event loop answers", Ok(200, "Alive", Health), public=True)
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
@operation(
    "readyz",
    "Readiness (can serve): config loaded, cache warm within max_stale, Vault session valid",
    Ok(200, "Ready", Readiness),
    Ok(503, "Not ready yet", Readiness),
    public=True,
)
async def readyz(request: web.Request) -> web.Response:
    checks = runtime(request).readiness()
    ready = all(checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


@routes.get("/metrics")
@operation(
    "metrics",
    "Prometheus metrics (text exposition format 0.0.4)",
    Ok(200, "Metrics", "text/plain"),
)
async def metrics(request: web.Request) -> web.Response:
    body = runtime(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@status_routes.get("/v1/status")
@operation(
    "status",
    "Why the sidecar is (not) ready: token TTL, cache age, last error code per background loop",
    Ok(200, "Status", Status),
)
async def status(request: web.Request) -> web.Response:
    """Token TTL, last sync age, last error by code per loop: the why behind /readyz."""
    return web.json_response(dump(Status.model_validate(runtime(request).status())))
