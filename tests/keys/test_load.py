"""Steady state: key checks are pure memory, so proxying makes no Vault request at all."""

from __future__ import annotations

import asyncio
import time

from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.keys.conftest import Provider, bearer, issue, keyed_upstream

CALLS = 10_000


async def proxy_many(sc: Sidecar, headers: dict[str, str], calls: int) -> list[int]:
    sem = asyncio.Semaphore(32)

    async def call(i: int) -> int:
        async with sem:
            r = await sc.proxy.get(f"/pix/api/session/{i}", headers=headers)
            await r.read()
            return r.status

    return await asyncio.gather(*(call(i) for i in range(calls)))


async def test_ten_thousand_keyed_calls_make_zero_vault_requests(
    sidecar: Sidecar,
    provider: tuple[Provider, str],
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
) -> None:
    """After one warm-up call (the key's first sight), 10,000 keyed calls leave the Vault counter still."""
    _, url = provider
    issued = await issue(sidecar, "GET /api/session/*")
    replica = await make_sidecar(make_config({"pix": keyed_upstream(url)}))  # never saw the key
    headers = bearer(issued["key"])
    assert (await proxy_many(replica, headers, 1)) == [200]
    before = replica.vault_requests
    started = time.perf_counter()
    statuses = await proxy_many(replica, headers, CALLS)
    elapsed = time.perf_counter() - started
    assert statuses.count(200) == CALLS
    assert replica.vault_requests - before == 0
    print(f"{CALLS} keyed calls, {replica.vault_requests - before} Vault requests, {elapsed:.1f} s")
