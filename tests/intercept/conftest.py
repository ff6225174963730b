"""An IntaSend-shaped peer and a sidecar that intercepts ``sandbox.intasend.com`` for it.

The upstream keeps the real provider host name in ``hosts`` while its ``url`` points at the
local peer, so clients are pointed at the real name and nothing ever resolves it: with a proxy,
a client sends ``CONNECT sandbox.intasend.com:443`` and the sidecar does the rest.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.conftest import (  # noqa: F401  (fixtures re-exported)
    MakeConfig,
    MakeSidecar,
    Sidecar,
    make_config,
    make_sidecar,
)

HOST = "sandbox.intasend.com"
SECRET = "ISSecretKey_test_8f3a1c"
PUBLIC = "ISPubKey_test_5d92e0"
SLOW = "/api/v1/slow/"  # answered only when the test says so
WALLETS = [{"wallet_id": "XZY4R5P", "currency": "KES", "available_balance": 0}]


class IntaSendPeer:
    """Answers like IntaSend's wallets API, and only to the real token and publishable key."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.arrived = asyncio.Event()  # a request to SLOW came in
        self.release = asyncio.Event()  # ... and is answered once this is set

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.raw_path, **request.headers})
        authorized = (
            request.headers.get("Authorization") == f"Bearer {SECRET}"
            and request.headers.get("INTASEND_PUBLIC_API_KEY") == PUBLIC
        )
        if not authorized:
            return web.json_response({"detail": "Invalid token."}, status=401)
        if request.raw_path == SLOW:
            self.arrived.set()
            await self.release.wait()
            return web.json_response(WALLETS)
        if request.raw_path != "/api/v1/wallets/":
            return web.json_response({"detail": "Not found."}, status=404)
        return web.json_response(WALLETS)


def upstream(port: int) -> dict[str, Any]:
    return {
        "url": f"http://127.0.0.1:{port}",
        "hosts": [HOST],
        "scheme": "api_key",
        "credential": "intasend",
        "environment": "sandbox",
        "header": "Authorization",
        "template": "Bearer {api_key}",
        "extra_headers": {"INTASEND_PUBLIC_API_KEY": "{public_key}"},
        "probe": {"method": "GET", "path": "/api/v1/wallets/", "ok": [200]},
    }


@dataclass
class Intercepting:
    sidecar: Sidecar
    peer: IntaSendPeer
    ca_file: Path

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar.proxy.port}"


@pytest.fixture
async def peer(aiohttp_server: Any) -> tuple[IntaSendPeer, int]:
    """The IntaSend-shaped peer on a loopback port."""
    peer = IntaSendPeer()
    server = await aiohttp_server(peer.app())
    return peer, server.port


@pytest.fixture
async def intercepting(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
    peer: tuple[IntaSendPeer, int],
    tmp_path: Path,
) -> Intercepting:
    """A ready sidecar intercepting the IntaSend host, with the IntaSend credential stored."""
    ca_file = tmp_path / "shared" / "sidecar-ca.pem"
    cfg = make_config(
        {"intasend": upstream(peer[1])},
        intercept={"enabled": True, "ca_cert_path": str(ca_file)},
    )
    sidecar = await make_sidecar(cfg)
    body = {
        "upstream": "intasend",
        "environment": "sandbox",
        "fields": {"api_key": SECRET, "public_key": PUBLIC},
    }
    resp = await sidecar.admin.put("/v1/credentials/intasend", json=body)
    assert resp.status == 201, await resp.text()
    peer[0].seen.clear()  # the verification probe; tests look at what clients cause
    return Intercepting(sidecar, peer[0], ca_file)


def clean_env(**extra: str) -> dict[str, str]:
    """No proxy or CA variable leaks in from the developer's shell."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **extra}


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run a client in a subprocess while this loop keeps serving the sidecar."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


PYTHON = sys.executable
