"""OpenBao unreachable under steady proxy load: proxying goes on from cache, writes get 503."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import yaml

from sidecar import config
from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeSidecar, api_key_upstream, config_dict, key_peer

OUTAGE_SECONDS = float(os.environ.get("SIDECAR_OUTAGE_SECONDS", "60"))
KEY = "k-outage-7f3e"


async def test_outage_under_load_serves_from_cache_and_recovers(
    own_openbao: OpenBao, prefix: str, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> None:
    """Vault paused for the outage window: 0 failed proxied requests, 503 writes, self-recovery."""

    url = await key_peer(aiohttp_server, KEY)
    data = config_dict(own_openbao.addr, prefix, {"pay": api_key_upstream(url)})
    data["vault"]["timeout"] = 1
    data["cache"] = {"refresh_interval": 1, "max_stale": 600}
    sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
    body = {"upstream": "pay", "fields": {"api_key": KEY}}
    assert (await sidecar.admin.put("/v1/credentials/pay", json=body)).status == 201

    sent = failed = writes = writes_503 = 0
    own_openbao.pause()
    try:
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            statuses = await asyncio.gather(*(sidecar.proxy.get(f"/pay/{i}") for i in range(16)))
            sent += len(statuses)
            failed += sum(r.status != 200 for r in statuses)
            if writes < 5:
                w = await sidecar.admin.put("/v1/credentials/pay", json=body)
                writes += 1
                writes_503 += w.status == 503 and (await w.json())["code"] == "SC3001"
            await asyncio.sleep(0.05)
        stale = sidecar.runtime.store.stale_serves
    finally:
        own_openbao.resume()

    recovered_in = time.monotonic()
    while (await sidecar.admin.put("/v1/credentials/pay", json=body)).status != 200:
        await asyncio.sleep(0.2)
    recovered_in = time.monotonic() - recovered_in
    metrics = await (await sidecar.admin.get("/metrics")).text()
    print(
        f"outage {OUTAGE_SECONDS:.0f}s: proxied {sent}, failed {failed}, writes {writes} (503: {writes_503}), "
        f"stale serves {stale}, write recovered {recovered_in:.1f}s after resume"
    )
    assert failed == 0 and writes_503 == writes
    assert stale > 0 and 'sidecar_cache_lookups_total{result="stale"}' in metrics
    assert recovered_in < 10


async def test_past_max_stale_the_proxy_refuses(
    own_openbao: OpenBao, prefix: str, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> None:
    """Vault paused longer than cache.max_stale: the cache is no longer trusted, 503 SC4012."""
    url = await key_peer(aiohttp_server, KEY)
    data = config_dict(own_openbao.addr, prefix, {"pay": api_key_upstream(url)})
    data["vault"]["timeout"] = 0.5
    data["cache"] = {"refresh_interval": 0.5, "max_stale": 3}  # stale after 2 s, refused after 3 s
    sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
    await sidecar.admin.put(
        "/v1/credentials/pay", json={"upstream": "pay", "fields": {"api_key": KEY}}
    )
    assert (await sidecar.proxy.get("/pay/x")).status == 200
    own_openbao.pause()
    try:
        await asyncio.sleep(4.5)
        r = await sidecar.proxy.get("/pay/x")
        assert (r.status, r.headers.get("X-Sidecar-Error")) == (503, "SC4012")
    finally:
        own_openbao.resume()
    deadline = time.monotonic() + 10
    while (await sidecar.proxy.get("/pay/x")).status != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert (await sidecar.proxy.get("/pay/x")).status == 200  # the next sync makes it fresh again
