"""Liveness and readiness: alive = the loop answers; ready = config loaded and Vault usable."""

from __future__ import annotations

from aiohttp import web

from sidecar.handlers.common import runtime
from sidecar.handlers.contract import Ok, operation
from sidecar.handlers.models import Health, Readiness
from sidecar.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/healthz")
@operation("healthz", "Liveness: the event loop answers", Ok(200, "Alive", Health), public=True)
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
@operation(
    "readyz",
    "Readiness: config loaded, Vault authenticated, cache filled",
    Ok(200, "Ready", Readiness),
    Ok(503, "Not ready yet", Readiness),
    public=True,
)
async def readyz(request: web.Request) -> web.Response:
    rt = runtime(request)
    checks = {
        "config_loaded": True,
        "vault_authenticated": rt.vault.authenticated,
        "cache_loaded": rt.bootstrapped,
    }
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
