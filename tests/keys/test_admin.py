"""The key admin API: issued once, never retrievable, validated, and shared through KV."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.keys.conftest import CRED, Provider, bearer, issue, keyed_upstream


def encodings(secret: str) -> list[str]:
    """The secret and the forms it could hide in: hex, base64, urlsafe base64."""
    raw = secret.encode()
    forms = [
        secret,
        raw.hex(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
    ]
    return [f.rstrip("=") for f in forms]


def raw_kv(openbao: OpenBao, prefix: str, key_id: str) -> str:
    """The key's KV record and metadata as Vault stores them, read with the root token."""
    client = openbao.client()
    path = f"{prefix}/keys/{CRED}/{key_id}"
    data = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )
    meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
    return json.dumps([data, meta])


async def test_issue_answer_carries_the_key_and_hmac_key_once(sidecar: Sidecar) -> None:
    """The 201 holds key and hmac_key (no-store); list and get never show them again."""
    r = await sidecar.admin.post(
        f"/v1/credentials/{CRED}/keys", json={"permissions": ["POST /api/session"], "hmac": True}
    )
    issued = await r.json()
    assert r.status == 201 and r.headers["Cache-Control"] == "no-store"
    assert (
        issued["key"].startswith(f"sck_{issued['key_id']}_")
        and len(issued["key"]) == 4 + 18 + 1 + 43
    )
    assert issued["hmac_enabled"] is True and len(issued["hmac_key"]) == 43
    listing = await (await sidecar.admin.get(f"/v1/credentials/{CRED}/keys")).text()
    one = await (await sidecar.admin.get(f"/v1/credentials/{CRED}/keys/{issued['key_id']}")).text()
    for text in (listing, one):
        assert issued["key_id"] in text
        for secret in (issued["key"], issued["hmac_key"]):
            assert not any(form in text for form in encodings(secret))
    view = json.loads(one)
    assert set(view) == {
        "key_id",
        "credential",
        "permissions",
        "hmac_enabled",
        "enabled",
        "expires_at",
        "created_at",
        "updated_at",
        "last_used_at",
    }


async def test_kv_holds_no_key_material(sidecar: Sidecar, openbao: OpenBao, prefix: str) -> None:
    """A raw KV read shows a transit HMAC and a transit ciphertext, never the key or HMAC key."""
    issued = await issue(sidecar, "* /*", hmac=True)
    stored = raw_kv(openbao, prefix, issued["key_id"])
    assert re.search(r"vault:v\d+:", stored)  # another test may have rotated the shared key
    for secret in (issued["key"], issued["hmac_key"], issued["key"].rsplit("_", 1)[1]):
        assert not any(form in stored for form in encodings(secret))


async def test_last_used_at_is_set_by_a_proxied_request(sidecar: Sidecar) -> None:
    """last_used_at is null until the key is used, then set by this replica."""
    issued = await issue(sidecar, "* /*")
    url = f"/v1/credentials/{CRED}/keys/{issued['key_id']}"
    assert (await (await sidecar.admin.get(url)).json())["last_used_at"] is None
    assert (await sidecar.proxy.get("/pix/a", headers=bearer(issued["key"]))).status == 200
    assert (await (await sidecar.admin.get(url)).json())["last_used_at"] is not None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"permissions": []}, 422, "SC1002"),
        ({"permissions": ["FETCH /a"]}, 422, "SC1002"),
        ({"permissions": ["GET a"]}, 422, "SC1002"),
        ({"permissions": ["GET /a"], "hmac": "yes"}, 422, "SC1002"),
        ({"permissions": ["GET /a"], "expires_at": "2020-01-01T00:00:00Z"}, 422, "SC1002"),
        ({"permissions": ["GET /a"], "expires_at": "2999-01-01T00:00:00"}, 422, "SC1002"),
        ({"permissions": ["GET /a"], "expires_at": "tomorrow"}, 422, "SC1002"),
        ({"permissions": ["GET /a"], "extra": 1}, 422, "SC1002"),
    ],
)
async def test_issue_refuses_bad_bodies(
    sidecar: Sidecar, body: dict[str, Any], status: int, code: str
) -> None:
    """Malformed permissions, non-boolean hmac, past or naive expiry, unknown keys: 422."""
    r = await sidecar.admin.post(f"/v1/credentials/{CRED}/keys", json=body)
    assert (r.status, (await r.json())["code"]) == (status, code)


async def test_unknown_credential_and_key_ids(sidecar: Sidecar) -> None:
    """Issuing for a missing credential is 404 SC2001; an unknown or malformed key id 404 SC5006."""
    r = await sidecar.admin.post("/v1/credentials/nobody/keys", json={"permissions": ["GET /a"]})
    assert (r.status, (await r.json())["code"]) == (404, "SC2001")
    for key_id in ("pk0000000000000000", "nope", "pk..%2F..%2Fx"):
        base = f"/v1/credentials/{CRED}/keys/{key_id}"
        for r in (
            await sidecar.admin.get(base),
            await sidecar.admin.patch(base, json={"enabled": False}),
            await sidecar.admin.delete(base),
        ):
            assert (r.status, (await r.json())["code"]) == (404, "SC5006")


async def test_another_replica_learns_keys_by_sync(
    sidecar: Sidecar,
    provider: tuple[Provider, str],
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
) -> None:
    """A second sidecar on the same KV loads keys at bootstrap and sees a disable after a sync."""
    _, url = provider
    issued = await issue(sidecar, "GET /*")
    replica = await make_sidecar(make_config({"pix": keyed_upstream(url)}))
    before = replica.vault_requests
    assert (await replica.proxy.get("/pix/a", headers=bearer(issued["key"]))).status == 200
    assert replica.vault_requests == before + 1  # the first sight of the key: one transit HMAC
    assert (await replica.proxy.get("/pix/b", headers=bearer(issued["key"]))).status == 200
    assert replica.vault_requests == before + 1
    url_ = f"/v1/credentials/{CRED}/keys/{issued['key_id']}"
    assert (await sidecar.admin.patch(url_, json={"enabled": False})).status == 200
    assert await replica.runtime.keys.sync() == 1
    r = await replica.proxy.get("/pix/c", headers=bearer(issued["key"]))
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5002")


async def test_wrong_secret_for_a_known_id_costs_vault_once(
    sidecar: Sidecar,
    provider: tuple[Provider, str],
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
) -> None:
    """Before the right key is seen, one bad value costs one transit call, its repeats none."""
    _, url = provider
    issued = await issue(sidecar, "GET /*")
    replica = await make_sidecar(make_config({"pix": keyed_upstream(url)}))
    bad = issued["key"][:-1] + ("A" if issued["key"][-1] != "A" else "B")
    before = replica.vault_requests
    for _ in range(20):
        r = await replica.proxy.get("/pix/a", headers=bearer(bad))
        assert r.headers["X-Sidecar-Error"] == "SC5002"
    assert replica.vault_requests == before + 1
