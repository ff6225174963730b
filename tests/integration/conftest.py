"""Build a whole sidecar (runtime, admin app, proxy app) against the suite's OpenBao."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar import config
from sidecar.app import build_admin_app
from sidecar.runtime import Runtime
from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao
from tests.proxyserver import ProxyTestServer


@dataclass
class Sidecar:
    runtime: Runtime
    admin: TestClient[Any, Any]
    proxy: TestClient[Any, Any]

    @property
    def vault_requests(self) -> int:
        return self.runtime.vault.requests


MakeConfig = Callable[..., config.Config]
MakeSidecar = Callable[..., Awaitable[Sidecar]]


def config_dict(addr: str, prefix: str, upstreams: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "vault": {
            "address": addr,
            "auth": {"method": "token", "token": ROOT_TOKEN},
            "prefix": prefix,
            "timeout": 2,
        },
        "cache": {"refresh_interval": 3600},
        "upstreams": upstreams,
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value}
    return data


@pytest.fixture
def make_config(openbao: OpenBao, prefix: str) -> MakeConfig:
    """Config for a sidecar on the suite's OpenBao under this test's own prefix."""

    def make(upstreams: dict[str, Any], addr: str | None = None, **extra: Any) -> config.Config:
        data = config_dict(addr or openbao.addr, prefix, upstreams, **extra)
        return config.loads(yaml.safe_dump(data), {})

    return make


@pytest.fixture
async def make_sidecar(aiohttp_client: Any) -> AsyncIterator[MakeSidecar]:
    """Start admin (which owns the runtime) and proxy apps on loopback test servers."""

    async def make(cfg: config.Config, wait: bool = True) -> Sidecar:
        rt = Runtime(cfg)
        admin = await aiohttp_client(build_admin_app(rt))
        proxy = await aiohttp_client(ProxyTestServer(rt))
        if wait:
            await rt.wait_ready(15)
        return Sidecar(rt, admin, proxy)

    yield make


@pytest.fixture
def own_openbao() -> Iterator[OpenBao]:
    """A dedicated OpenBao, for tests that pause it (the session one is shared)."""
    server = OpenBao().start()
    yield server
    server.stop()


async def key_peer(aiohttp_server: Any, key: str) -> str:
    """A loopback provider answering 200 to ``Authorization: <key>`` and 401 otherwise; its URL."""

    async def answer(request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") == key
        return web.json_response({"balance": 1} if ok else {}, status=200 if ok else 401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/")


def api_key_upstream(url: str, credential: str = "pay", **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "scheme": "api_key",
        "credential": credential,
        "environment": "sandbox",
        **extra,
    }
