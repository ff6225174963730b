"""CredentialStore against a real OpenBao: encryption at rest, CAS, verify, versions, cache."""

from __future__ import annotations

import asyncio
import json

import pytest

from sidecar.config import VaultAuth, VaultConfig
from sidecar.errors import SidecarError
from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao
from sidecar.store import CredentialStore, FieldSpec
from sidecar.vault import Vault

SPEC = FieldSpec(scheme="placetopay", public=("login",), secret=("secret_key",), optional=())


def make_store(openbao: OpenBao, prefix: str) -> CredentialStore:
    cfg = VaultConfig(
        address=openbao.addr,
        auth=VaultAuth(method="token", token=ROOT_TOKEN),
        prefix=prefix,
        timeout=2,
    )
    return CredentialStore(Vault(cfg), lambda _upstream: SPEC)


@pytest.fixture
async def store(openbao: OpenBao, prefix: str) -> CredentialStore:
    s = make_store(openbao, prefix)
    await s.vault.login()
    await s.vault.ensure_transit_key()
    return s


async def test_kv_holds_ciphertext_and_fingerprint_only(
    store: CredentialStore, openbao: OpenBao, prefix: str
) -> None:
    """A raw KV read of a stored credential contains no plaintext of any secret field."""
    secret = "p2p-secret-Zq8w7e6r"
    await store.put("ptp", "placetopay", "sandbox", {"login": "site", "secret_key": secret}, {})
    raw = openbao.client().secrets.kv.v2.read_secret_version(
        path=f"{prefix}/credentials/ptp", raise_on_deleted_version=True
    )
    text = json.dumps(raw)
    assert secret not in text
    stored = raw["data"]["data"]["secrets"]["secret_key"]
    assert stored["ciphertext"].startswith("vault:v")
    assert stored["hmac"].startswith("vault:v")
    assert raw["data"]["data"]["fields"] == {"login": "site"}


async def test_cache_holds_decrypted_copy_and_reload_decrypts(
    store: CredentialStore, openbao: OpenBao, prefix: str
) -> None:
    """A second store (a restart) decrypts the record back to the same secret."""
    await store.put("ptp", "placetopay", "sandbox", {"login": "a", "secret_key": "k1-abcdef"}, {})
    fresh = make_store(openbao, prefix)
    await fresh.vault.login()
    assert await fresh.sync() == 1
    cred = fresh.cached("ptp")
    assert cred is not None and cred.secrets == {"secret_key": "k1-abcdef"}
    assert "k1-abcdef" not in repr(cred)


async def test_concurrent_replaces_never_mix(store: CredentialStore) -> None:
    """50 concurrent replaces: each wins or gets SC2002, and the record is exactly one payload."""
    await store.put("race", "placetopay", "sandbox", {"login": "l0", "secret_key": "s0-000000"}, {})
    _, version = await store.read("race")

    async def replace(i: int) -> str:
        try:
            await store.put(
                "race",
                "placetopay",
                "sandbox",
                {"login": f"l{i}", "secret_key": f"s{i}-secret"},
                {"i": i},
                if_match=None,
            )
            return "ok"
        except SidecarError as exc:
            return exc.code

    outcomes = await asyncio.gather(*(replace(i) for i in range(1, 51)))
    assert set(outcomes) <= {"ok", "SC2002"}
    assert outcomes.count("ok") >= 1
    record, final_version = await store.read("race")
    winner = record.provider_data["i"]
    assert record.fields == {"login": f"l{winner}"}
    assert await store.verify_secret("race", "secret_key", f"s{winner}-secret")
    assert final_version == version + outcomes.count("ok")


async def test_if_match_mismatch_is_412(store: CredentialStore) -> None:
    """If-Match with a stale version is refused and nothing changes."""
    await store.put("ifm", "placetopay", "sandbox", {"login": "a", "secret_key": "k-123456"}, {})
    with pytest.raises(SidecarError) as info:
        await store.put(
            "ifm", "placetopay", "sandbox", {"login": "b", "secret_key": "k-654321"}, {}, if_match=7
        )
    assert info.value.code == "SC2003"
    record, version = await store.read("ifm")
    assert record.fields["login"] == "a" and version == 1


async def test_verify_secret_uses_hmac_and_survives_key_rotation(
    store: CredentialStore, openbao: OpenBao
) -> None:
    """Right secret true, wrong false; still right after the transit key rotates."""
    await store.put("ver", "placetopay", "sandbox", {"login": "a", "secret_key": "right-one-1"}, {})
    assert await store.verify_secret("ver", "secret_key", "right-one-1")
    assert not await store.verify_secret("ver", "secret_key", "wrong-one-1")
    openbao.client().secrets.transit.rotate_key(name="sidecar")
    assert await store.verify_secret("ver", "secret_key", "right-one-1")


async def test_versions_and_delete(store: CredentialStore) -> None:
    """Versions list KV history (metadata only); delete removes record and cache entry."""
    for i in range(3):
        await store.put(
            "hist", "placetopay", "sandbox", {"login": "a", "secret_key": f"k{i}-xxxx"}, {}
        )
    versions = await store.versions("hist")
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[-1]["current"] and "secret" not in json.dumps(versions)
    await store.delete("hist")
    assert store.cached("hist") is None
    with pytest.raises(SidecarError) as info:
        await store.read("hist")
    assert info.value.code == "SC2001"


async def test_field_spec_refuses_unknown_missing_and_empty(store: CredentialStore) -> None:
    """Bad fields are refused before anything is encrypted or written."""
    before = store.vault.requests
    for fields in (
        {"login": "a"},
        {"login": "a", "secret_key": ""},
        {"login": "a", "secret_key": "x", "extra": "y"},
    ):
        with pytest.raises(SidecarError) as info:
            await store.put("bad", "placetopay", "sandbox", fields, {})
        assert info.value.code == "SC1002"
    assert store.vault.requests == before


async def test_missing_transit_key_is_created(openbao: OpenBao, prefix: str) -> None:
    """With policy allowing it, the store's transit key is created on first start."""
    store = make_store(openbao, prefix)
    store.vault.cfg = store.vault.cfg.model_copy(update={"transit_key": f"k-{prefix[-6:]}"})
    await store.vault.login()
    await store.vault.ensure_transit_key()
    assert (
        openbao.client().secrets.transit.read_key(name=f"k-{prefix[-6:]}")["data"]["type"]
        == "aes256-gcm96"
    )
