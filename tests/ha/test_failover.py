"""Vault HA as a tested promise (issue 14): leader killed under load, replaces on a standby.

Proxied requests are served from the cache, so a Vault failover must not fail one; writes
must come back within about a second of OpenBao electing a new leader; and a replace that
reaches a standby must not see a spurious 409 (problem 5: 164 of 200 on main). Times are
printed with ``-s``, counts asserted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import yaml

from sidecar import config
from sidecar.sandbox.openbao import unique_prefix
from tests.ha.cluster import Cluster, Front
from tests.integration.conftest import MakeSidecar, Sidecar, api_key_upstream, config_dict, key_peer

KEY = "k-ha-5e6f"


async def ha_sidecar(
    cluster: Cluster, addr: str, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> Sidecar:
    url = await key_peer(aiohttp_server, KEY)
    data = config_dict(addr, unique_prefix(), {"pay": api_key_upstream(url)})
    data["vault"]["auth"] = {"method": "token", "token": cluster.root_token}
    data["vault"]["timeout"] = 2
    sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
    assert (await write(sidecar)).status == 201
    return sidecar


async def write(sidecar: Sidecar) -> Any:
    body = {"upstream": "pay", "fields": {"api_key": KEY}}
    return await sidecar.admin.put("/v1/credentials/pay", json=body)


async def test_replaces_against_a_standby_make_no_spurious_409(
    cluster: Cluster, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> None:
    """Problem 5: 200 sequential replaces with Vault traffic on a standby: 0 answered 409."""
    sidecar = await ha_sidecar(cluster, cluster.standby().addr, aiohttp_server, make_sidecar)
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for _ in range(200):
        status = (await write(sidecar)).status
        statuses[status] = statuses.get(status, 0) + 1
    print(f"200 replaces via a standby in {time.monotonic() - started:.1f}s: {statuses}")
    assert statuses == {200: 200}


async def under_load(
    cluster: Cluster, sidecar: Sidecar, settle: float = 4.0
) -> tuple[int, int, float, float, dict[int, int]]:
    """Kill the leader under proxy load and writes: (sent, failed, election, recovery, writes)."""
    stop = asyncio.Event()
    counts = {"sent": 0, "failed": 0}
    writes: list[tuple[float, float, int]] = []

    async def proxy_load() -> None:
        while not stop.is_set():
            r = await sidecar.proxy.get("/pay/x")
            counts["sent"] += 1
            counts["failed"] += r.status != 200
            await asyncio.sleep(0.002)

    async def write_load() -> None:
        while not stop.is_set():
            began = time.monotonic()
            status = (await write(sidecar)).status
            writes.append((began, time.monotonic(), status))
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(proxy_load()) for _ in range(6)]
    tasks.append(asyncio.create_task(write_load()))
    await asyncio.sleep(1)
    leader = cluster.leader()
    killed_at = time.monotonic()
    await asyncio.to_thread(leader.kill)
    election = await asyncio.to_thread(cluster.wait_leader)
    await asyncio.sleep(settle)
    stop.set()
    await asyncio.gather(*tasks)
    after = [(b, e) for b, e, s in writes if s == 200 and b >= killed_at]
    recovery = (after[0][1] - killed_at) if after else float("inf")
    by_status: dict[int, int] = {}
    for b, _e, s in writes:
        if b >= killed_at:
            by_status[s] = by_status.get(s, 0) + 1
    await asyncio.to_thread(cluster.restart, leader)
    return counts["sent"], counts["failed"], election, recovery, by_status


async def test_leader_killed_with_the_sidecar_on_a_standby(
    cluster: Cluster, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> None:
    """SIGKILL the leader while the sidecar talks to a standby: 0 proxied requests fail."""
    sidecar = await ha_sidecar(cluster, cluster.standby().addr, aiohttp_server, make_sidecar)
    sent, failed, election, recovery, writes = await under_load(cluster, sidecar)
    print(
        f"leader killed, sidecar on a standby: proxied {sent} sent / {failed} failed; "
        f"election {election:.2f}s, writes back {recovery:.2f}s after the kill "
        f"({recovery - election:+.2f}s over the election); writes after the kill {writes}"
    )
    assert failed == 0 and writes.get(200, 0) > 0


async def test_killed_node_is_the_one_the_sidecar_points_at(
    cluster: Cluster, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> None:
    """Through `vault-active` (the leader), SIGKILL that node: 0 proxied fail, writes return."""
    front = await Front(cluster).start()
    try:
        sidecar = await ha_sidecar(cluster, front.addr, aiohttp_server, make_sidecar)
        sent, failed, election, recovery, writes = await under_load(cluster, sidecar)
    finally:
        await front.stop()
    print(
        f"leader (the sidecar's node, via vault-active) killed: proxied {sent} sent / {failed} "
        f"failed; election {election:.2f}s, writes back {recovery:.2f}s after the kill "
        f"({recovery - election:+.2f}s over the election); writes after the kill {writes}"
    )
    assert failed == 0 and writes.get(200, 0) > 0
