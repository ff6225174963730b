"""Builds the admin and proxy aiohttp applications from one Runtime.

The admin application owns the runtime's lifecycle through ``cleanup_ctx``; the proxy
application only borrows it, so the order of start-up is: admin, then proxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from sidecar.handlers import ca, credentials, health, keys, openapi
from sidecar.handlers.common import (
    RUNTIME,
    VERIFY_LIMITER,
    admin_allow,
    admin_token_middleware,
    browser_guard,
    errors_middleware,
    request_id_middleware,
)
from sidecar.ratelimit import Limiter
from sidecar.runtime import Runtime


def _lifecycle(rt: Runtime):  # type: ignore[no-untyped-def]
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.close()

    return ctx


def build_admin_app(rt: Runtime, *, own_runtime: bool = True) -> web.Application:
    middlewares = [request_id_middleware, errors_middleware, browser_guard(admin_allow(rt))]
    token = rt.config.admin.token
    if token is not None and token.get_secret_value():
        middlewares.append(admin_token_middleware(token.get_secret_value()))
    app = web.Application(middlewares=middlewares, client_max_size=rt.config.admin.max_body)
    app[RUNTIME] = rt
    app[VERIFY_LIMITER] = Limiter(rt.config.admin.verify_per_minute)
    app.add_routes(health.routes)
    app.add_routes(credentials.routes)
    app.add_routes(keys.routes)
    app.add_routes(ca.routes)
    app.add_routes(openapi.routes)
    if own_runtime:
        app.cleanup_ctx.append(_lifecycle(rt))
    return app


def build_health_app(rt: Runtime) -> web.Application:
    """The optional health-only listener (kubelet probes): nothing but /healthz and /readyz.

    No Host check (kubelet sends ``Host: <pod IP>``); Origin and Sec-Fetch-Site still apply.
    """
    guard = browser_guard(admin_allow(rt), host=False)
    app = web.Application(middlewares=[errors_middleware, guard])
    app[RUNTIME] = rt
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    return app
