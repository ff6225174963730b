"""Builds the aiohttp applications of each role from one Runtime.

- ``build_local_app``: the proxy role's read-only local API (health, metrics, the CA, webhook
  signature verify). It has no write route at all, so nothing on the pod's loopback can change
  a credential through it.
- ``build_admin_app``: the admin API (credentials, keys), behind ``AdminAuth``.
- ``build_health_app``: ``/healthz`` and ``/readyz`` only, for kubelet.

The app that owns the runtime starts and closes it through ``cleanup_ctx``; the others borrow
it, so the owner starts first and stops last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from sidecar.handlers import ca, health, webhooks
from sidecar.handlers.auth import AdminAuth, admin_auth_middleware
from sidecar.handlers.common import (
    RUNTIME,
    VERIFY_LIMITER,
    admin_allow,
    browser_guard,
    errors_middleware,
    local_allow,
    request_id_middleware,
)
from sidecar.ratelimit import Limiter
from sidecar.runtime import Runtime

Lifecycle = Callable[[web.Application], AsyncIterator[None]]


def _lifecycle(rt: Runtime) -> Lifecycle:
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        await rt.start()
        yield
        await rt.close()

    return ctx


def build_local_app(rt: Runtime, *, own_runtime: bool = True) -> web.Application:
    """The proxy role's local API: read-only by construction (no write route is registered)."""
    guard = browser_guard(local_allow(rt))
    app = web.Application(middlewares=[request_id_middleware, errors_middleware, guard])
    app[RUNTIME] = rt
    app.add_routes(health.routes)
    app.add_routes(health.status_routes)
    app.add_routes(ca.routes)
    app.add_routes(webhooks.routes)
    if own_runtime:
        app.cleanup_ctx.append(_lifecycle(rt))
    return app


def build_admin_app(
    rt: Runtime,
    *,
    own_runtime: bool = True,
    auth: AdminAuth | None = None,
    local_routes: bool = True,
) -> web.Application:
    """The admin API. ``auth`` None: from the config, required only if a static token is set.

    The admin handlers are imported here, so a proxy-role process never loads them.
    """
    from sidecar.handlers import credentials, keys, openapi

    if auth is None:
        auth = AdminAuth.from_config(rt.config, required=False)
    middlewares = [
        request_id_middleware,
        errors_middleware,
        browser_guard(admin_allow(rt)),
        admin_auth_middleware(auth),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=rt.config.admin.max_body)
    app[RUNTIME] = rt
    app[VERIFY_LIMITER] = Limiter(rt.config.admin.verify_per_minute)
    app.add_routes(health.routes)
    app.add_routes(health.status_routes)
    app.add_routes(credentials.routes)
    app.add_routes(keys.routes)
    app.add_routes(openapi.routes)
    if local_routes:
        app.add_routes(ca.routes)
        app.add_routes(webhooks.routes)
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
