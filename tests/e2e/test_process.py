"""The sidecar as a process: start to ready, SIGTERM drains in-flight requests, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import requests
import yaml
from aiohttp import web

from sidecar.sandbox.openbao import OpenBao
from tests.e2e.conftest import AUTH, write_config

KEY = "SECR_e2e_key_8c1d2f"


async def slow_upstream(aiohttp_server: Any) -> tuple[str, dict[str, int]]:
    counts = {"started": 0, "finished": 0}

    async def slow(request: web.Request) -> web.Response:
        counts["started"] += 1
        await asyncio.sleep(float(request.query.get("s", "0")))
        counts["finished"] += 1
        ok = request.headers.get("Authorization") == KEY
        return web.json_response({"ok": ok}, status=200 if ok else 401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/"), counts


def upstream(url: str) -> dict[str, Any]:
    return {"url": url, "scheme": "api_key", "credential": "slow", "environment": "sandbox"}


async def test_sigterm_finishes_in_flight_requests(
    aiohttp_server: Any, openbao: OpenBao, prefix: str, tmp_path: Path, start_sidecar: Any
) -> None:
    """SIGTERM during slow upstream requests: every in-flight request completes, exit code 0."""
    url, counts = await slow_upstream(aiohttp_server)
    cfg = tmp_path / "sidecar.yaml"
    write_config(cfg, openbao, prefix, {"slow": upstream(url)})
    proc = start_sidecar(cfg)
    ready_after = await asyncio.to_thread(proc.wait_ready)
    r = requests.put(
        f"{proc.admin}/v1/credentials/slow",
        json={"upstream": "slow", "fields": {"api_key": KEY}},
        headers=AUTH,
        timeout=5,
    )
    assert r.status_code == 201

    async with aiohttp.ClientSession() as http:

        async def call() -> int:
            async with http.get(f"{proc.proxy}/slow/work?s=1.5") as resp:
                await resp.read()
                return resp.status

        calls = [asyncio.create_task(call()) for _ in range(10)]
        while counts["started"] < 10:
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGTERM)
        statuses = await asyncio.gather(*calls)
    code = await asyncio.to_thread(proc.proc.wait, 15)
    print(
        f"e2e: ready in {ready_after:.2f}s; in-flight {len(calls)}, completed {statuses.count(200)}"
    )
    assert statuses == [200] * 10 and counts["finished"] == 10
    assert code == 0
    stderr = proc.stderr()
    assert KEY not in stderr
    assert stderr.count('"event": "proxy_request"') == 10  # flushed before the process exited


async def test_sighup_reloads_and_refuses_invalid_config(
    aiohttp_server: Any, openbao: OpenBao, prefix: str, tmp_path: Path, start_sidecar: Any
) -> None:
    """A valid new config adds an upstream; an invalid one is refused and counted; old serves on."""
    url, _ = await slow_upstream(aiohttp_server)
    cfg = tmp_path / "sidecar.yaml"
    write_config(cfg, openbao, prefix, {"slow": upstream(url)})
    proc = start_sidecar(cfg)
    await asyncio.to_thread(proc.wait_ready)
    requests.put(
        f"{proc.admin}/v1/credentials/slow",
        json={"upstream": "slow", "fields": {"api_key": KEY}},
        headers=AUTH,
        timeout=5,
    )

    async def fetch(path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"{proc.proxy}{path}") as resp:
            await resp.read()
            return resp.status, resp.headers.get("X-Sidecar-Error", "")

    async def other_code() -> str:
        return (await fetch("/other/x"))[1]

    assert await other_code() == "SC4001"  # not an upstream yet
    data = yaml.safe_load(cfg.read_text())
    data["upstreams"]["other"] = {**upstream(url), "credential": "other"}
    cfg.write_text(yaml.safe_dump(data))
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while await other_code() == "SC4001" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await other_code() == "SC4002"  # routed now; its credential is not stored yet
    r = requests.put(
        f"{proc.admin}/v1/credentials/other",
        json={"upstream": "other", "fields": {"api_key": KEY}},
        headers=AUTH,
        timeout=5,
    )
    assert r.status_code == 201
    assert (await fetch("/other/x"))[0] == 200

    cfg.write_text(cfg.read_text().replace("scheme: api_key", "scheme: no-such-scheme"))
    proc.signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert (await fetch("/slow/x"))[0] == 200
    metrics = requests.get(f"{proc.local}/metrics", timeout=5).text
    assert 'sidecar_config_reloads_total{outcome="rejected"}' in metrics
    assert "config_reload_rejected" in proc.stderr()
