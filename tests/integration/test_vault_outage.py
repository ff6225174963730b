"""Vault outage: writes answer 503 with a code within the timeout, nothing partial, recovery."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import yaml
from aiohttp import web

from sidecar import config
from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeSidecar, api_key_upstream, config_dict, key_peer


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


async def test_cold_start_against_a_hung_vault_fails_fast_then_ready(
    own_openbao: OpenBao, aiohttp_server: Any, make_sidecar: MakeSidecar, prefix: str
) -> None:
    """Problem 7: start with OpenBao SIGSTOPped: each proxied request is 503 SC4035 at once.

    On main every request did its own Vault read and queued on the 8-thread pool for the
    Vault timeout. After SIGCONT the single bootstrap task makes the sidecar ready.
    """
    url = await key_peer(aiohttp_server, "k-cold-1")
    data = config_dict(own_openbao.addr, prefix, {"pay": api_key_upstream(url)})
    data["vault"]["timeout"] = 2
    own_openbao.pause()
    try:
        sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}), wait=False)
        answers: list[tuple[int, str | None]] = []
        slowest = 0.0
        for batch in range(5):
            started = time.monotonic()
            replies = await asyncio.gather(*(sidecar.proxy.get(f"/pay/{i}") for i in range(8)))
            slowest = max(slowest, time.monotonic() - started)
            answers += [(r.status, r.headers.get("X-Sidecar-Error")) for r in replies]
            await asyncio.sleep(0.3 * batch)
        vault_requests = sidecar.vault_requests
    finally:
        own_openbao.resume()
    resumed = time.monotonic()
    await sidecar.runtime.wait_ready(15)
    ready_after = time.monotonic() - resumed
    print(
        f"cold start on a hung Vault: {len(answers)} proxied requests, slowest batch of 8 "
        f"answered in {slowest * 1000:.0f} ms, Vault requests meanwhile {vault_requests}, "
        f"ready {ready_after:.2f}s after SIGCONT"
    )
    assert set(answers) == {(503, "SC4035")}
    assert vault_requests <= 3  # only the bootstrap's single flight touched Vault
