"""``GET /v1/ca.pem``: the interception CA certificate(s), for apps and injectors to trust.

Only certificates are served (the current CA, plus the previous one after a rotation); the
CA's private key lives in the interceptor's memory and has no route out.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.errors import SidecarError
from sidecar.handlers.common import runtime
from sidecar.handlers.contract import Ok, operation
from sidecar.proxy.intercept import interceptor_for

routes = web.RouteTableDef()


@routes.get("/v1/ca.pem")
@operation(
    "caPem",
    "The interception CA certificate(s), PEM; 404 when interception is off",
    Ok(200, "CA bundle", "application/x-pem-file"),
    errors=("SC1005",),
)
async def ca_pem(request: web.Request) -> web.Response:
    interceptor = interceptor_for(runtime(request))
    if interceptor is None:
        raise SidecarError("SC1005", "HTTPS interception is not enabled")
    return web.Response(
        body=interceptor.bundle_pem(),
        headers={"Content-Type": "application/x-pem-file", "Cache-Control": "no-cache"},
    )
