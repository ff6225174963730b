"""Vault outage: writes answer 503 with a code within the timeout, nothing partial, recovery."""

from __future__ import annotations

import time
from typing import Any

import yaml
from aiohttp import web

from sidecar import config
from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeSidecar, config_dict


async def test_writes_fail_fast_while_paused_and_recover(
    own_openbao: OpenBao, aiohttp_server: Any, make_sidecar: MakeSidecar, prefix: str
) -> None:
    """SIGSTOP OpenBao: PUT gets 503 SC3001 within the timeout; SIGCONT: PUT works, no restart."""

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"balance": 1})

    peer_app = web.Application()
    peer_app.router.add_get("/v1/balance", ok)
    peer = await aiohttp_server(peer_app)
    upstream = {
        "url": str(peer.make_url("/")).rstrip("/"),
        "scheme": "api_key",
        "credential": "azupay",
        "environment": "sandbox",
        "probe": {"method": "GET", "path": "/v1/balance"},
    }
    data = config_dict(own_openbao.addr, prefix, {"azupay": upstream})
    data["vault"]["timeout"] = 1.5
    sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
    body = {"upstream": "azupay", "fields": {"api_key": "first-key-1"}}
    assert (await sidecar.admin.put("/v1/credentials/azupay", json=body)).status == 201

    own_openbao.pause()
    try:
        started = time.monotonic()
        r = await sidecar.admin.put(
            "/v1/credentials/azupay", json={**body, "fields": {"api_key": "second-key-2"}}
        )
        elapsed = time.monotonic() - started
        assert r.status == 503 and (await r.json())["code"] == "SC3001"
        assert elapsed < 1.5 * 2 + 1  # one read timeout (+ a possible re-login attempt)
    finally:
        own_openbao.resume()

    record = own_openbao.client().secrets.kv.v2.read_secret_version(
        path=f"{prefix}/credentials/azupay", raise_on_deleted_version=True
    )
    assert record["data"]["metadata"]["version"] == 1  # nothing partial was written
    r = await sidecar.admin.put(
        "/v1/credentials/azupay", json={**body, "fields": {"api_key": "third-key-3"}}
    )
    assert r.status == 200 and (await r.json())["version"] == 2
