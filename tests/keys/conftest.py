"""A sidecar whose upstream requires proxy keys, in front of a loopback provider that records."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.integration.conftest import (
    MakeConfig,
    MakeSidecar,
    Sidecar,
    api_key_upstream,
    make_config,
    make_sidecar,
)

__all__ = ["make_config", "make_sidecar"]

SECRET = "SECR_upstream_api_key_0001"
CRED = "pix"


class Provider:
    """Answers 200 only to the real credential, and records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"path": request.raw_path, "headers": dict(request.headers), "body": body})
        status = 200 if request.headers.get("Authorization") == SECRET else 401
        return web.json_response({"ok": status == 200}, status=status)


@pytest.fixture
async def provider(aiohttp_server: Any) -> tuple[Provider, str]:
    peer = Provider()
    server = await aiohttp_server(peer.app())
    return peer, str(server.make_url("/")).rstrip("/")


def keyed_upstream(url: str, credential: str = CRED, **extra: Any) -> dict[str, Any]:
    options = {"require_proxy_key": True, "max_body": 1024, **extra}
    return api_key_upstream(url, credential, **options)


@pytest.fixture
async def sidecar(
    provider: tuple[Provider, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> Sidecar:
    """Upstream ``pix`` requires keys; its credential ``pix`` holds SECRET."""
    _, url = provider
    sc = await make_sidecar(make_config({"pix": keyed_upstream(url)}))
    r = await sc.admin.put(
        f"/v1/credentials/{CRED}", json={"upstream": "pix", "fields": {"api_key": SECRET}}
    )
    assert r.status == 201
    return sc


async def issue(sc: Sidecar, *permissions: str, **extra: Any) -> dict[str, Any]:
    """Issue a key through the admin API and return the one-time 201 answer."""
    r = await sc.admin.post(
        f"/v1/credentials/{CRED}/keys", json={"permissions": list(permissions), **extra}
    )
    assert r.status == 201, await r.text()
    body: dict[str, Any] = await r.json()
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Proxy-Authorization": f"Bearer {key}"}
