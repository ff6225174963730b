"""Vault auth over time: a short-TTL AppRole token is renewed, then replaced by a fresh login."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

from sidecar import config
from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeSidecar, api_key_upstream, config_dict, key_peer

SOAK_SECONDS = float(os.environ.get("SIDECAR_SOAK_SECONDS", "60"))
POLICY = (
    'path "secret/*" { capabilities = ["create","read","update","delete","list"] }\n'
    'path "transit/*" { capabilities = ["create","read","update"] }\n'
)


def approle(openbao: OpenBao, tmp_path: Path) -> dict[str, Any]:
    """An AppRole whose tokens live 10 s (renewable up to 30 s); secret_id in a file."""
    root = openbao.client()
    mount = f"approle-{uuid.uuid4().hex[:8]}"
    root.sys.enable_auth_method("approle", path=mount)
    root.sys.create_or_update_policy(name=mount, policy=POLICY)
    root.write(
        f"auth/{mount}/role/sidecar",
        token_ttl="10s",
        token_max_ttl="30s",
        token_policies=[mount],
        secret_id_ttl="0",
    )
    role_id = root.read(f"auth/{mount}/role/sidecar/role-id")["data"]["role_id"]
    secret_id = root.write(f"auth/{mount}/role/sidecar/secret-id")["data"]["secret_id"]
    secret_file = tmp_path / "secret_id"
    secret_file.write_text(secret_id)
    return {
        "method": "approle",
        "role_id": role_id,
        "secret_id_file": str(secret_file),
        "mount": mount,
    }


async def test_short_ttl_token_renewed_then_relogin_without_failures(
    openbao: OpenBao, prefix: str, tmp_path: Path, aiohttp_server: Any, make_sidecar: MakeSidecar
) -> None:
    """Over a minute of steady traffic: renewals, fresh logins, zero failed proxied requests."""

    url = await key_peer(aiohttp_server, "k-approle-1")
    data = config_dict(openbao.addr, prefix, {"pay": api_key_upstream(url)})
    data["vault"]["auth"] = approle(openbao, tmp_path)
    data["cache"]["refresh_interval"] = 2  # the background sync keeps using the token
    with capture_logs() as logs:
        sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
        assert (
            await sidecar.admin.put(
                "/v1/credentials/pay",
                json={"upstream": "pay", "fields": {"api_key": "k-approle-1"}},
            )
        ).status == 201
        sent = failed = admin_failed = 0
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            for _ in range(10):
                r = await sidecar.proxy.get("/pay/x")
                sent += 1
                failed += r.status != 200
            admin = await sidecar.admin.get("/v1/credentials/pay")  # needs a live Vault token
            admin_failed += admin.status != 200
            await asyncio.sleep(0.5)
    events = [e["event"] for e in logs]
    print(
        f"approle soak: {SOAK_SECONDS:.0f}s, proxied {sent}, failed {failed}, admin reads failed {admin_failed}, "
        f"renewals {events.count('vault_token_renewed')}, logins {events.count('vault_authenticated')}"
    )
    assert failed == 0 and admin_failed == 0
    assert events.count("vault_token_renewed") >= 1
    assert events.count("vault_authenticated") >= 2  # the first login plus a fresh one near max TTL


async def test_token_from_file_and_bad_token_not_ready(
    openbao: OpenBao, prefix: str, tmp_path: Path, make_sidecar: MakeSidecar
) -> None:
    """A token read from a file authenticates; a wrong one leaves /readyz at 503, not a crash."""
    token_file = tmp_path / "token"
    token_file.write_text("root\n")
    data = config_dict(openbao.addr, prefix, {})
    data["vault"]["auth"] = {"method": "token", "token_file": str(token_file)}
    sidecar = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
    assert (await sidecar.admin.get("/readyz")).status == 200

    token_file.write_text("not-a-valid-token")
    bad = await make_sidecar(config.loads(yaml.safe_dump(data), {}), wait=False)
    await asyncio.sleep(1)
    r = await bad.admin.get("/readyz")
    assert r.status == 503 and (await r.json())["checks"]["vault_authenticated"] is False
    r = await bad.admin.get("/v1/credentials")
    assert r.status in (503, 502) and (await r.json())["code"].startswith("SC3")
