"""deploy/vault: the least-privilege policies and setup.sh, proven against a real OpenBao.

Three policies: proxy (every pod: read + decrypt), admin (`sidecar admin`: transit encrypt +
HMAC) and the example operator (a person: KV writes under credentials/a*). A token holding only
one must do everything its role does and nothing else: each allowed operation is exercised, each
neighbouring one must answer 403.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hv
import pytest

from sidecar.config import VaultAuth, VaultConfig
from sidecar.errors import SidecarError
from sidecar.injector.certs import generate
from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao, bao_binary
from sidecar.store import CredentialStore, FieldSpec
from sidecar.vault import CallerVault, Vault
from tests.k8s.helpers import DEPLOY

POLICY = DEPLOY / "vault" / "proxy-policy.hcl"
ADMIN_POLICY = DEPLOY / "vault" / "admin-policy.hcl"
OPERATOR_POLICY = DEPLOY / "vault" / "operator-policy.example.hcl"
SETUP = DEPLOY / "vault" / "setup.sh"
SPEC = FieldSpec(scheme="placetopay", public=("login",), secret=("secret_key",), optional=())


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def restricted_token(openbao: OpenBao, policy_name: str, policy: str) -> str:
    """A token with only this policy: not even Vault's "default" one."""
    root = openbao.client()
    root.sys.create_or_update_policy(name=policy_name, policy=policy)
    auth = root.auth.token.create(policies=[policy_name], no_default_policy=True, ttl="10m")
    return str(auth["auth"]["client_token"])


def run_setup(openbao: OpenBao, *args: str, **values: str) -> str:
    """setup.sh with the `bao` CLI on PATH, logged in as root, with these variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["PATH"] = f"{Path(bao_binary()).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(BAO_ADDR=openbao.addr, BAO_TOKEN=ROOT_TOKEN, **values)
    done = subprocess.run(
        ["bash", str(SETUP), *args], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ensure_key(openbao: OpenBao) -> None:
    root = openbao.client()
    try:
        root.secrets.transit.read_key(name="sidecar")
    except hv.InvalidPath:  # the operator's job (setup.sh), done here as root
        root.secrets.transit.create_key(name="sidecar")


@pytest.fixture(scope="module")
def client(openbao: OpenBao) -> hvac.Client:
    """hvac as the proxy role: the shipped proxy policy file, unmodified, and nothing more."""
    ensure_key(openbao)
    return openbao.client(restricted_token(openbao, "sidecar-payments-test", POLICY.read_text()))


@pytest.fixture(scope="module")
def admin_client(openbao: OpenBao) -> hvac.Client:
    """hvac as the admin role: the shipped admin policy file and nothing more."""
    ensure_key(openbao)
    rules = ADMIN_POLICY.read_text()
    return openbao.client(restricted_token(openbao, "sidecar-payments-admin-test", rules))


@pytest.fixture(scope="module")
def operator_token(openbao: OpenBao) -> str:
    """A person's token: the example operator policy plus Vault's default one."""
    root = openbao.client()
    root.sys.create_or_update_policy(name="operator-test", policy=OPERATOR_POLICY.read_text())
    return str(
        root.auth.token.create(policies=["operator-test"], ttl="10m")["auth"]["client_token"]
    )


def test_proxy_operations_are_allowed(openbao: OpenBao, client: hvac.Client) -> None:
    """The proxy policy reads, lists, reads metadata, decrypts, HMACs and reads the key."""
    root = openbao.client()
    path = f"sidecar/payments/credentials/{uuid.uuid4().hex[:8]}"
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"v": 2}, cas=0)
    kv = client.secrets.kv.v2
    assert kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["data"] == {
        "v": 2
    }
    assert (
        path.rsplit("/", 1)[1]
        in kv.list_secrets(path="sidecar/payments/credentials")["data"]["keys"]
    )
    assert kv.read_secret_metadata(path=path)["data"]["current_version"] == 1
    root.secrets.kv.v2.delete_metadata_and_all_versions(path=path)

    transit = client.secrets.transit
    encrypted = root.secrets.transit.encrypt_data(name="sidecar", plaintext=b64("s3cret"))
    plain = transit.decrypt_data(name="sidecar", ciphertext=encrypted["data"]["ciphertext"])
    assert base64.b64decode(plain["data"]["plaintext"]) == b"s3cret"
    assert transit.generate_hmac(name="sidecar", hash_input=b64("s3cret"))["data"]["hmac"]
    by_path = client.adapter.post("/v1/transit/hmac/sidecar/sha2-512", json={"input": b64("x")})
    assert by_path["data"]["hmac"].startswith("vault:v")
    assert transit.read_key(name="sidecar")["data"]["name"] == "sidecar"
    assert client.auth.token.lookup_self()["data"]["policies"] == ["sidecar-payments-test"]
    client.auth.token.renew_self()


def test_admin_operations_are_allowed_and_only_those(admin_client: hvac.Client) -> None:
    """The admin policy encrypts and HMACs with the sidecar key; it cannot decrypt, read or
    write KV: the admin role never holds a plaintext credential it did not just receive."""
    transit = admin_client.secrets.transit
    ciphertext = transit.encrypt_data(name="sidecar", plaintext=b64("s3cret"))["data"]["ciphertext"]
    assert transit.generate_hmac(name="sidecar", hash_input=b64("s3cret"))["data"]["hmac"]
    assert transit.read_key(name="sidecar")["data"]["name"] == "sidecar"
    kv = admin_client.secrets.kv.v2
    forbidden: Callable[[], Any]
    for forbidden in (
        lambda: transit.decrypt_data(name="sidecar", ciphertext=ciphertext),
        lambda: kv.read_secret_version(
            path="sidecar/payments/credentials/x", raise_on_deleted_version=True
        ),
        lambda: kv.create_or_update_secret(path="sidecar/payments/credentials/x", secret={}),
        lambda: kv.list_secrets(path="sidecar/payments/credentials"),
        lambda: transit.create_key(name="sidecar"),
    ):
        with pytest.raises(hv.Forbidden):
            forbidden()


def test_operator_policy_writes_only_under_its_pattern(
    openbao: OpenBao, operator_token: str
) -> None:
    """The example operator token creates, replaces and deletes credentials/a*; paynet and
    transit answer 403."""
    kv = openbao.client(operator_token).secrets.kv.v2
    path = f"sidecar/payments/credentials/a{uuid.uuid4().hex[:8]}"
    assert kv.create_or_update_secret(path=path, secret={"v": 1}, cas=0)["data"]["version"] == 1
    with pytest.raises(hv.InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret(path=path, secret={"v": 2}, cas=0)
    assert kv.create_or_update_secret(path=path, secret={"v": 2}, cas=1)["data"]["version"] == 2
    kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(hv.Forbidden):
        kv.create_or_update_secret(path="sidecar/payments/credentials/paynet", secret={"v": 1})
    with pytest.raises(hv.Forbidden):
        openbao.client(operator_token).secrets.transit.encrypt_data(
            name="sidecar", plaintext=b64("x")
        )


FORBIDDEN: dict[str, Callable[[hvac.Client], Any]] = {
    "kv read outside the prefix": lambda c: c.secrets.kv.v2.read_secret_version(
        path="sidecar/other/x", raise_on_deleted_version=True
    ),
    "kv write to a sibling prefix": lambda c: c.secrets.kv.v2.create_or_update_secret(
        path="sidecar/payments-evil/x", secret={"v": 1}
    ),
    "kv create a credential": lambda c: c.secrets.kv.v2.create_or_update_secret(
        path="sidecar/payments/credentials/x", secret={"v": 1}, cas=0
    ),
    "kv write a proxy key": lambda c: c.secrets.kv.v2.create_or_update_secret(
        path="sidecar/payments/keys/x/pk0000000000000000", secret={"v": 1}, cas=0
    ),
    "kv delete a credential": lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
        path="sidecar/payments/credentials/x"
    ),
    "transit encrypt": lambda c: c.secrets.transit.encrypt_data(name="sidecar", plaintext=b64("x")),
    "kv list above the prefix": lambda c: c.secrets.kv.v2.list_secrets(path="sidecar"),
    "kv soft delete": lambda c: c.secrets.kv.v2.delete_latest_version_of_secret(
        path="sidecar/payments/x"
    ),
    "kv undelete": lambda c: c.secrets.kv.v2.undelete_secret_versions(
        path="sidecar/payments/x", versions=[1]
    ),
    "kv destroy": lambda c: c.secrets.kv.v2.destroy_secret_versions(
        path="sidecar/payments/x", versions=[1]
    ),
    "transit with another key": lambda c: c.secrets.transit.encrypt_data(
        name="other", plaintext=b64("x")
    ),
    "transit create the key": lambda c: c.secrets.transit.create_key(name="sidecar"),
    "transit create a key": lambda c: c.secrets.transit.create_key(name="mine"),
    "transit rotate": lambda c: c.secrets.transit.rotate_key(name="sidecar"),
    "transit key config": lambda c: c.secrets.transit.update_key_configuration(
        name="sidecar", deletion_allowed=True
    ),
    "transit export": lambda c: c.secrets.transit.export_key(
        name="sidecar", key_type="encryption-key"
    ),
    "sys mounts": lambda c: c.sys.list_mounted_secrets_engines(),
    "sys policy write": lambda c: c.sys.create_or_update_policy(name="x", policy='path "*" {}'),
    "sys enable engine": lambda c: c.sys.enable_secrets_engine("kv", path="mine"),
    "child token": lambda c: c.auth.token.create(policies=["sidecar-payments-test"]),
}


@pytest.mark.parametrize("operation", sorted(FORBIDDEN))
def test_everything_else_is_forbidden(client: hvac.Client, operation: str) -> None:
    """Operations the proxy role does not need (every write among them) are refused with 403."""
    with pytest.raises(hv.Forbidden):
        FORBIDDEN[operation](client)


def store_for(openbao: OpenBao, token: str, prefix: str, **vault: Any) -> CredentialStore:
    cfg = VaultConfig(
        address=openbao.addr,
        auth=VaultAuth(method="token", token=token),
        prefix=prefix,
        timeout=5,
        **vault,
    )
    return CredentialStore(Vault(cfg), lambda _upstream: SPEC)


async def test_credential_store_works_with_the_policies_alone(
    openbao: OpenBao, client: hvac.Client, admin_client: hvac.Client, operator_token: str
) -> None:
    """The real CredentialStore does its whole job with the roles' tokens: the admin role's
    (transit) plus an operator's (KV, as the caller) write; the proxy role's reads and decrypts."""
    prefix, name = "sidecar/payments", f"a{uuid.uuid4().hex[:8]}"  # the operator's a*
    admin = store_for(openbao, str(admin_client.token), prefix, create_transit_key=False)
    await admin.vault.login()
    await admin.vault.ensure_transit_key()
    store = CredentialStore(CallerVault(admin.vault, operator_token), lambda _upstream: SPEC)
    fields = {"login": "site", "secret_key": "k-123456"}
    _, created = await store.put(name, "placetopay", "sandbox", fields, {})
    assert created
    fields["secret_key"] = "k-654321"
    view, created = await store.put(name, "placetopay", "sandbox", fields, {}, if_match=1)
    assert not created and view.version == 2
    assert name in await store.names()
    assert [v["version"] for v in await store.versions(name)] == [1, 2]
    assert await store.verify_secret(name, "secret_key", "k-654321")
    assert (await store.patch(name, {"enabled": False})).enabled is False
    fresh = store_for(openbao, str(client.token), prefix, create_transit_key=False)
    assert await fresh.sync() >= 1
    cred = fresh.cached(name)
    assert cred is not None and cred.secrets == {"secret_key": "k-654321"}
    assert cred.enabled is False and cred.version == 3
    await store.delete(name)
    assert name not in await fresh.names()
    assert await admin.vault.check_token()


async def test_missing_transit_key_is_named_not_created(openbao: OpenBao) -> None:
    """Without 'update' on keys/, the store says which key is missing instead of creating it."""
    key = f"absent-{uuid.uuid4().hex[:8]}"
    policy = run_setup(openbao, "--print-policy", TRANSIT_KEY=key)
    token = restricted_token(openbao, f"p-{key}", policy)
    store = store_for(openbao, token, "sidecar/payments/x", transit_key=key)
    await store.vault.login()
    with pytest.raises(SidecarError) as exc:
        await store.vault.ensure_transit_key()
    assert exc.value.code == "SC3002" and f"transit/keys/{key}" in exc.value.message


def test_print_policy_renders_every_templated_path(openbao: OpenBao) -> None:
    """--print-policy rewrites every mount, prefix and key; no default path is left over."""
    text = run_setup(
        openbao, "--print-policy", KV_MOUNT="kv", PREFIX="a/b", TRANSIT_MOUNT="tr", TRANSIT_KEY="k"
    )
    paths = [line.split('"')[1] for line in text.splitlines() if line.startswith("path ")]
    assert paths == [
        "kv/data/a/b/*",
        "kv/metadata/a/b/*",
        "tr/decrypt/k",
        "tr/hmac/k",
        "tr/hmac/k/*",
        "tr/keys/k",
        "auth/token/lookup-self",
        "auth/token/renew-self",
    ]
    values = {"KV_MOUNT": "kv", "PREFIX": "a/b", "TRANSIT_MOUNT": "tr", "TRANSIT_KEY": "k"}
    admin = run_setup(openbao, "--print-policy", "admin", **values)
    paths = [line.split('"')[1] for line in admin.splitlines() if line.startswith("path ")]
    assert paths[:4] == ["tr/encrypt/k", "tr/hmac/k", "tr/hmac/k/*", "tr/keys/k"]
    operator = run_setup(openbao, "--print-policy", "operator", **values)
    paths = [line.split('"')[1] for line in operator.splitlines() if line.startswith("path ")]
    assert all(p.startswith(("kv/data/a/b/", "kv/metadata/a/b/")) for p in paths)


def test_setup_script_is_idempotent_and_grants_what_it_says(
    openbao: OpenBao, tmp_path: Path
) -> None:
    """Two runs of setup.sh converge: mounts, key, policy, kubernetes auth and role are right."""
    tag = uuid.uuid4().hex[:8]
    ca = tmp_path / "k8s-ca.crt"
    ca.write_bytes(generate(["kubernetes.default.svc"]).ca_pem)
    values = {
        "KV_MOUNT": f"kv-{tag}",
        "PREFIX": "team/payments",
        "TRANSIT_MOUNT": f"transit-{tag}",
        "TRANSIT_KEY": "cards",
        "POLICY_NAME": f"sidecar-{tag}",
        "ADMIN_POLICY_NAME": f"admin-{tag}",
        "K8S_AUTH_MOUNT": f"k8s-{tag}",
        "ROLE": "checkout",
        "SERVICE_ACCOUNT": "checkout",
        "NAMESPACE": "shop",
        "KUBERNETES_HOST": "https://127.0.0.1:6443",
        "KUBERNETES_CA_CERT": str(ca),
        "DISABLE_LOCAL_CA_JWT": "true",
    }
    first = run_setup(openbao, **values)
    assert "enabled KV v2" in first and "created transit key cards" in first
    values.pop("KUBERNETES_HOST")
    second = run_setup(openbao, **values)
    assert "already there" in second and "already configured" in second
    assert "enabled" not in second and "created" not in second

    root = openbao.client()
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    assert mounts[f"kv-{tag}/"]["options"]["version"] == "2"
    assert mounts[f"transit-{tag}/"]["type"] == "transit"
    role = root.adapter.get(f"/v1/auth/k8s-{tag}/role/checkout")["data"]
    assert role["bound_service_account_names"] == ["checkout"]
    assert role["bound_service_account_namespaces"] == ["shop"]
    assert role["audience"] == "vault" and role["token_policies"] == [f"sidecar-{tag}"]
    admin_role = root.adapter.get(f"/v1/auth/k8s-{tag}/role/payments-admin")["data"]
    assert admin_role["bound_service_account_names"] == ["sidecar-admin"]
    assert admin_role["token_policies"] == [f"admin-{tag}"]
    config = root.adapter.get(f"/v1/auth/k8s-{tag}/config")["data"]
    assert config["kubernetes_host"] == "https://127.0.0.1:6443"

    root.secrets.kv.v2.create_or_update_secret(
        path="team/payments/credentials/x", secret={"v": 1}, cas=0, mount_point=f"kv-{tag}"
    )
    policy = root.sys.read_policy(name=f"sidecar-{tag}")["data"]["rules"]
    proxy = openbao.client(restricted_token(openbao, f"copy-{tag}", policy))
    found = proxy.secrets.kv.v2.read_secret_version(
        path="team/payments/credentials/x", mount_point=f"kv-{tag}", raise_on_deleted_version=True
    )
    assert found["data"]["data"] == {"v": 1}
    with pytest.raises(hv.Forbidden):
        proxy.secrets.kv.v2.create_or_update_secret(
            path="team/payments/credentials/x", secret={"v": 2}, mount_point=f"kv-{tag}"
        )
    policy = root.sys.read_policy(name=f"admin-{tag}")["data"]["rules"]
    admin = openbao.client(restricted_token(openbao, f"admin-copy-{tag}", policy))
    admin.secrets.transit.encrypt_data(
        name="cards", plaintext=b64("x"), mount_point=f"transit-{tag}"
    )
    with pytest.raises(hv.Forbidden):
        admin.secrets.transit.encrypt_data(name="sidecar", plaintext=b64("x"))
