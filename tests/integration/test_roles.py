"""Issue 13, item 1: who may change a credential, with the roles, a real OpenBao and real sockets.

The proxy role (what every pod runs) has no write route and a Vault token that cannot write; the
admin role runs each change with the caller's own Vault token, so Vault's policy decides and
Vault's audit log names the caller.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import hvac
import hvac.exceptions as hv
import pytest
import yaml

from sidecar import config
from sidecar.errors import SidecarError
from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao, free_port
from sidecar.server import Server
from tests.integration.conftest import MakeSidecar, config_dict
from tests.integration.test_admin_api import balance_peer
from tests.k8s.helpers import DEPLOY

KEY_1, KEY_2 = "SECR_good_key_1", "SECR_good_key_2"
POLICIES = DEPLOY / "vault"


def policy(name: str, prefix: str) -> str:
    """A shipped policy file rendered for this test's prefix (what setup.sh does with sed)."""
    text = (POLICIES / name).read_text()
    return text.replace("/sidecar/payments/", f"/{prefix}/").replace(
        '/sidecar/payments"', f'/{prefix}"'
    )


def token_for(openbao: OpenBao, rules: str, default_policy: bool = False) -> str:
    """A token holding only ``rules`` (plus Vault's "default" policy when a person's)."""
    root = openbao.client()
    name = f"p-{uuid.uuid4().hex[:10]}"
    root.sys.create_or_update_policy(name=name, policy=rules)
    auth = root.auth.token.create(policies=[name], no_default_policy=not default_policy, ttl="10m")
    return str(auth["auth"]["client_token"])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def seed(
    aiohttp_server: Any, openbao: OpenBao, prefix: str, make_sidecar: MakeSidecar
) -> dict[str, Any]:
    """``azupay`` and ``paynet`` stored at version 1 (with root, as setup would); the upstreams."""
    peer = await aiohttp_server(balance_peer())
    url = str(peer.make_url("/")).rstrip("/")
    probe = {"method": "GET", "path": "/v1/balance"}
    upstreams = {
        name: {
            "url": url,
            "scheme": "api_key",
            "credential": name,
            "environment": "sandbox",
            "probe": probe,
        }
        for name in ("azupay", "paynet")
    }
    data = config_dict(openbao.addr, prefix, upstreams)
    seeder = await make_sidecar(config.loads(yaml.safe_dump(data), {}))
    for name in upstreams:
        r = await seeder.admin.put(
            f"/v1/credentials/{name}", json={"upstream": name, "fields": {"api_key": KEY_1}}
        )
        assert r.status == 201, await r.text()
    return {"upstreams": upstreams, "url": url}


@pytest.fixture
async def seeded(
    aiohttp_server: Any, openbao: OpenBao, prefix: str, make_sidecar: MakeSidecar
) -> dict[str, Any]:
    return await seed(aiohttp_server, openbao, prefix, make_sidecar)


def role_config(openbao: OpenBao, prefix: str, upstreams: dict[str, Any], token: str) -> Any:
    data = config_dict(
        openbao.addr,
        prefix,
        upstreams,
        vault={"auth": {"method": "token", "token": token}},
        listen={
            "proxy": f"127.0.0.1:{free_port()}",
            "admin": f"127.0.0.1:{free_port()}",
            "health": f"127.0.0.1:{free_port()}",
        },
    )
    cfg = config.loads(yaml.safe_dump(data), {})
    # listen.local set after validation, so this same test can run on the code before roles
    listen = cfg.listen.model_copy(update={"local": f"127.0.0.1:{free_port()}"})
    return cfg.model_copy(update={"listen": listen})


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop()


def addresses(cfg: Any) -> list[str]:
    listen = cfg.listen
    return [f"http://{a}" for a in (listen.proxy, listen.admin, listen.local, listen.health)]


WRITES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "replace": (
        "PUT",
        "/v1/credentials/azupay",
        {"upstream": "azupay", "fields": {"api_key": KEY_2}},
    ),
    "pismo replace": (
        "POST",
        "/v1/credentials",
        {"key": KEY_2, "provider": "azupay", "type": "main", "provider_data": {}},
    ),
    "disable": ("PATCH", "/v1/credentials/azupay", {"enabled": False}),
    "delete": ("DELETE", "/v1/credentials/azupay", {}),
    "mint a key": ("POST", "/v1/credentials/azupay/keys", {"permissions": ["* /*"]}),
}


def vault_state(openbao: OpenBao, prefix: str) -> tuple[Any, ...]:
    """What a write would change: azupay's version and enabled flag, the names, the keys."""
    kv = openbao.client().secrets.kv.v2
    found = kv.read_secret_version(
        path=f"{prefix}/credentials/azupay", raise_on_deleted_version=True
    )
    names = kv.list_secrets(path=f"{prefix}/credentials")["data"]["keys"]
    try:
        keys = kv.list_secrets(path=f"{prefix}/keys")["data"]["keys"]
    except hv.InvalidPath:
        keys = []
    version = found["data"]["metadata"]["version"]
    return version, found["data"]["data"]["enabled"], sorted(names), keys


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_loopback_cannot_change_credentials_through_sidecar_run(
    openbao: OpenBao, prefix: str, seeded: dict[str, Any], servers: list[Server], write: str
) -> None:
    """Issue 13 item 1: through `sidecar run` (the pod's sidecar), on any of its ports, a process
    on loopback can neither replace, disable, delete a credential nor mint a key; the local API
    answers 404 to the write route, and Vault is unchanged. The sidecar's token here *could*
    write (root), so what stops the write is that the proxy role has no write route."""
    cfg = role_config(openbao, prefix, seeded["upstreams"], ROOT_TOKEN)
    server = Server(cfg)  # `sidecar run`'s default role
    servers.append(server)
    await server.start()
    await server.runtime.wait_ready(15)
    before = vault_state(openbao, prefix)
    method, path, body = WRITES[write]
    answers: dict[str, int | str] = {}
    async with aiohttp.ClientSession() as http:
        for base in addresses(cfg):
            try:
                async with http.request(method, base + path, json=body or None) as r:
                    answers[base] = r.status
            except aiohttp.ClientConnectionError:
                answers[base] = "refused"
    print(f"{write}: {answers}")
    assert vault_state(openbao, prefix) == before
    assert not [a for a in answers.values() if isinstance(a, int) and a < 400]
    assert answers[f"http://{cfg.listen.local}"] == 404


async def test_local_api_serves_only_read_only_routes(
    openbao: OpenBao, prefix: str, seeded: dict[str, Any], servers: list[Server]
) -> None:
    """The proxy role's local API answers health, readiness and metrics; every admin route is 404
    with SC1005, and the health listener serves /healthz and /readyz only."""
    token = token_for(openbao, policy("proxy-policy.hcl", prefix))
    cfg = role_config(openbao, prefix, seeded["upstreams"], token)
    server = Server(cfg, "proxy")
    servers.append(server)
    await server.start()
    await server.runtime.wait_ready(15)
    local, health = f"http://{cfg.listen.local}", f"http://{cfg.listen.health}"
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(local + path) as r:
                assert r.status == 200, path
        for path in ("/v1/credentials", "/v1/credentials/azupay", "/v1/openapi.json"):
            async with http.get(local + path) as r:
                assert (r.status, (await r.json())["code"]) == (404, "SC1005"), path
        async with http.get(health + "/readyz") as r:
            assert r.status == 200
        async with http.get(health + "/metrics") as r:
            assert r.status == 404
        with pytest.raises(aiohttp.ClientConnectionError):  # the admin port is not bound at all
            async with http.get(f"http://{cfg.listen.admin}/healthz"):
                pass
    assert server.runtime.vault.requests > 0 and server.runtime.store.cached_count == 2


PROXY_FORBIDDEN: dict[str, Callable[[hvac.Client, str], Any]] = {
    "kv create": lambda c, p: c.secrets.kv.v2.create_or_update_secret(
        path=f"{p}/credentials/new", secret={"v": 1}, cas=0
    ),
    "kv replace": lambda c, p: c.secrets.kv.v2.create_or_update_secret(
        path=f"{p}/credentials/azupay", secret={"v": 1}, cas=1
    ),
    "kv patch": lambda c, p: c.adapter.request(
        "PATCH",
        f"/v1/secret/data/{p}/credentials/azupay",
        json={"data": {"v": 2}},
        headers={"Content-Type": "application/merge-patch+json"},
    ),
    "kv key write": lambda c, p: c.secrets.kv.v2.create_or_update_secret(
        path=f"{p}/keys/azupay/pk0000000000000000", secret={"v": 1}, cas=0
    ),
    "kv soft delete": lambda c, p: c.secrets.kv.v2.delete_latest_version_of_secret(
        path=f"{p}/credentials/azupay"
    ),
    "kv delete all versions": lambda c, p: c.secrets.kv.v2.delete_metadata_and_all_versions(
        path=f"{p}/credentials/azupay"
    ),
    "kv metadata write": lambda c, p: c.secrets.kv.v2.update_metadata(
        path=f"{p}/credentials/azupay", max_versions=1
    ),
    "transit encrypt": lambda c, _p: c.secrets.transit.encrypt_data(
        name="sidecar", plaintext=b64("attacker's secret")
    ),
}


@pytest.mark.parametrize("operation", sorted(PROXY_FORBIDDEN))
def test_proxy_policy_token_gets_403_on_every_write(
    openbao: OpenBao, prefix: str, operation: str
) -> None:
    """A token of deploy/vault/proxy-policy.hcl: OpenBao answers 403 to each KV write and to
    transit encrypt, so even a compromised pod cannot change or mint a credential."""
    ensure_transit_key(openbao)
    client = openbao.client(token_for(openbao, policy("proxy-policy.hcl", prefix)))
    with pytest.raises(hv.Forbidden):
        PROXY_FORBIDDEN[operation](client, prefix)


def ensure_transit_key(openbao: OpenBao) -> None:
    root = openbao.client()
    try:
        root.secrets.transit.read_key(name="sidecar")
    except hv.InvalidPath:
        root.secrets.transit.create_key(name="sidecar")


AUDIT_HCL = 'audit "file" "file" {\n  options {\n    file_path = "%s"\n  }\n}\n'


@dataclass
class AuditedOpenBao(OpenBao):
    """A dev OpenBao of this test's own with a file audit device, declared in its config file
    (OpenBao refuses to enable audit devices through the API)."""

    audit_path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp()) / "audit.log")

    def args(self) -> list[str]:
        hcl = self.audit_path.with_name("audit.hcl")
        hcl.write_text(AUDIT_HCL % self.audit_path)
        return [*super().args(), f"-config={hcl}"]


@pytest.fixture
def audited() -> Iterator[AuditedOpenBao]:
    server = AuditedOpenBao()
    server.start()
    yield server
    server.stop()


async def start_admin(
    openbao: OpenBao, prefix: str, upstreams: dict[str, Any], servers: list[Server]
) -> str:
    """`sidecar admin` with a token of deploy/vault/admin-policy.hcl; its URL."""
    ensure_transit_key(openbao)
    token = token_for(openbao, policy("admin-policy.hcl", prefix))
    cfg = role_config(openbao, prefix, upstreams, token)
    server = Server(cfg, "admin")
    servers.append(server)
    await server.start()
    await server.runtime.wait_ready(15)
    assert server.proxy is None
    return f"http://{cfg.listen.admin}"


async def test_admin_role_writes_with_the_callers_token(
    audited: AuditedOpenBao,
    prefix: str,
    aiohttp_server: Any,
    make_sidecar: MakeSidecar,
    servers: list[Server],
) -> None:
    """A token allowed to write credentials/a* (nothing on transit) replaces azupay, gets 403
    SC6001 on paynet, and OpenBao's audit log shows that token's accessor on the write."""
    openbao = audited
    seeded = await seed(aiohttp_server, openbao, prefix, make_sidecar)
    admin = await start_admin(openbao, prefix, seeded["upstreams"], servers)
    rules = policy("operator-policy.example.hcl", prefix)
    operator = token_for(openbao, rules, default_policy=True)
    with pytest.raises(hv.Forbidden):  # the caller has no transit rights at all
        openbao.client(operator).secrets.transit.encrypt_data(name="sidecar", plaintext=b64("x"))
    headers = {"X-Vault-Token": operator}
    async with aiohttp.ClientSession(headers=headers) as http:
        put = {"upstream": "azupay", "fields": {"api_key": KEY_2}}
        async with http.put(f"{admin}/v1/credentials/azupay", json=put) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["version"] == 2
        put = {"upstream": "paynet", "fields": {"api_key": KEY_2}}
        async with http.put(f"{admin}/v1/credentials/paynet", json=put) as r:
            answer = await r.json()
        assert (r.status, answer["code"]) == (403, "SC6001")
        assert operator not in json.dumps(answer)
        async with http.patch(f"{admin}/v1/credentials/paynet", json={"enabled": False}) as r:
            assert (r.status, (await r.json())["code"]) == (403, "SC6001")
        async with http.delete(f"{admin}/v1/credentials/paynet") as r:
            assert (r.status, (await r.json())["code"]) == (403, "SC6001")
        async with http.post(
            f"{admin}/v1/credentials/paynet/keys", json={"permissions": ["* /*"]}
        ) as r:
            assert (r.status, (await r.json())["code"]) == (403, "SC6001")
    kv = openbao.client().secrets.kv.v2
    paynet = kv.read_secret_version(
        path=f"{prefix}/credentials/paynet", raise_on_deleted_version=True
    )
    assert paynet["data"]["metadata"]["version"] == 1 and paynet["data"]["data"]["enabled"]

    path = audited.audit_path
    accessor = openbao.client(operator).auth.token.lookup_self()["data"]["accessor"]
    digest = openbao.client().sys.calculate_hash(path="file", input_to_hash=accessor)
    hashed = digest["data"]["hash"]
    target = f"secret/data/{prefix}/credentials/azupay"
    writes = [
        e
        for e in map(json.loads, path.read_text().splitlines())
        if e["type"] == "response"
        and e["request"]["path"] == target
        and e["request"]["operation"] in ("create", "update")
    ]
    by = [e["auth"]["accessor"] for e in writes]  # the seed's write (root), then the operator's
    assert len(by) == 2 and by[-1] == hashed and by.count(hashed) == 1
    assert operator not in path.read_text()  # Vault hashes the token itself; we only look


async def test_admin_role_refuses_unauthenticated_and_unknown_tokens(
    openbao: OpenBao, prefix: str, seeded: dict[str, Any], servers: list[Server]
) -> None:
    """No credentials: 401 SC1007; a token Vault does not know: 401 SC1010; health stays open."""
    admin = await start_admin(openbao, prefix, seeded["upstreams"], servers)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{admin}/v1/credentials") as r:
            assert (r.status, (await r.json())["code"]) == (401, "SC1007")
        headers = {"X-Vault-Token": "hvs.not-a-token"}
        async with http.get(f"{admin}/v1/credentials/azupay", headers=headers) as r:
            assert (r.status, (await r.json())["code"]) == (401, "SC1010")
        async with http.get(f"{admin}/readyz") as r:
            assert r.status == 200


async def test_admin_role_refuses_to_start_without_authentication(
    openbao: OpenBao, prefix: str
) -> None:
    """A TCP admin listener with Vault tokens off and no static token never starts (SC6002)."""
    cfg = role_config(openbao, prefix, {}, ROOT_TOKEN)
    cfg = cfg.model_copy(update={"admin": cfg.admin.model_copy(update={"vault_tokens": False})})
    with pytest.raises(SidecarError) as exc:
        await Server(cfg, "admin").start()
    assert exc.value.code == "SC6002"


async def test_unix_socket_admin_listener_is_0600_and_needs_no_header(
    openbao: OpenBao, prefix: str, seeded: dict[str, Any], servers: list[Server], tmp_path: Path
) -> None:
    """listen.admin: unix:/path creates the socket with mode 0600; whoever can open it is the
    operator (filesystem permissions are the authentication), with the admin role's token."""
    sock = tmp_path / "admin.sock"
    cfg = role_config(openbao, prefix, seeded["upstreams"], ROOT_TOKEN)
    cfg = cfg.model_copy(
        update={
            "listen": cfg.listen.model_copy(update={"admin": f"unix:{sock}"}),
            "admin": cfg.admin.model_copy(update={"vault_tokens": False}),
        }
    )
    server = Server(cfg, "admin")
    servers.append(server)
    await server.start()
    await server.runtime.wait_ready(15)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    connector = aiohttp.UnixConnector(path=str(sock))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get("http://localhost/v1/credentials") as r,
    ):
        names = [c["name"] for c in (await r.json())["credentials"]]
    assert (r.status, names) == (200, ["azupay", "paynet"])


async def test_proxy_role_never_creates_the_transit_key(openbao: OpenBao, prefix: str) -> None:
    """Even with create_transit_key: true and a token that could create it (root), the proxy
    role's start-up only checks the key: a missing key is SC3002 and stays missing."""
    key = f"absent-{uuid.uuid4().hex[:8]}"
    cfg = role_config(openbao, prefix, {}, ROOT_TOKEN)
    vault = cfg.vault.model_copy(update={"transit_key": key, "create_transit_key": True})
    server = Server(cfg.model_copy(update={"vault": vault}), "proxy")
    await server.runtime.vault.login()
    with pytest.raises(SidecarError) as exc:
        await server.runtime.vault.ensure_transit_key()
    assert exc.value.code == "SC3002"
    with pytest.raises(hv.InvalidPath):
        openbao.client().secrets.transit.read_key(name=key)
    server.runtime.vault.close()


async def test_admin_role_static_token_from_a_file(
    openbao: OpenBao, prefix: str, seeded: dict[str, Any], servers: list[Server], tmp_path: Path
) -> None:
    """The single-host option: `Authorization: Bearer <admin.token_file>` is let in, a wrong or
    missing token is 401 SC1007, and the token never appears in an answer."""
    token = "static-admin-token-for-this-test"
    path = tmp_path / "admin.token"
    path.write_text(token + "\n")
    cfg = role_config(openbao, prefix, seeded["upstreams"], ROOT_TOKEN)
    admin_cfg = cfg.admin.model_copy(update={"token_file": path, "vault_tokens": False})
    server = Server(cfg.model_copy(update={"admin": admin_cfg}), "admin")
    servers.append(server)
    await server.start()
    await server.runtime.wait_ready(15)
    url = f"http://{cfg.listen.admin}/v1/credentials"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for header in (f"Bearer {token}", f"Bearer {token}x", "", token):
            async with http.get(url, headers={"Authorization": header}) as r:
                statuses.append((r.status, (await r.json()).get("code")))
                assert token not in await r.text()
    assert statuses == [(200, None), (401, "SC1007"), (401, "SC1007"), (401, "SC1007")]


async def test_admin_change_reaches_the_proxy_role_at_its_next_sync(
    openbao: OpenBao, prefix: str, seeded: dict[str, Any], servers: list[Server]
) -> None:
    """Disable through `sidecar admin` with an operator's token: a separate proxy-role sidecar
    (proxy policy) keeps serving until its next cache sync, then refuses with 403 SC4003."""
    admin = await start_admin(openbao, prefix, seeded["upstreams"], servers)
    cfg = role_config(
        openbao, prefix, seeded["upstreams"], token_for(openbao, policy("proxy-policy.hcl", prefix))
    )
    cfg = cfg.model_copy(update={"cache": cfg.cache.model_copy(update={"refresh_interval": 0.2})})
    proxy = Server(cfg, "proxy")
    servers.append(proxy)
    await proxy.start()
    await proxy.runtime.wait_ready(15)
    operator = token_for(
        openbao, policy("operator-policy.example.hcl", prefix), default_policy=True
    )
    url = f"http://{cfg.listen.proxy}/azupay/v1/balance"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200
        async with http.patch(
            f"{admin}/v1/credentials/azupay",
            json={"enabled": False},
            headers={"X-Vault-Token": operator},
        ) as r:
            assert r.status == 200 and (await r.json())["enabled"] is False
        seen = []
        for _ in range(200):  # the sync runs every 0.2 s; stop at the first refusal
            async with http.get(url) as r:
                seen.append((r.status, r.headers.get("X-Sidecar-Error")))
            if seen[-1][0] != 200:
                break
            await asyncio.sleep(0.05)
    print(f"requests served after the disable, before the sync: {len(seen) - 1}")
    assert seen[-1] == (403, "SC4003")
    assert set(seen[:-1]) <= {(200, None)}
