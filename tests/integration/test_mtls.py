"""Upstream mTLS end to end: real OpenBao, the real runtime, and the client-certificate peer."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from sidecar.sandbox import mtls_peer
from sidecar.sandbox.mtls_peer import Issued, TestCa
from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.leakscan import encodings


@dataclass
class Bank:
    ca: TestCa
    app: web.Application
    url: str
    ca_file: Path

    @property
    def seen(self) -> list[int]:
        return self.app[mtls_peer.SEEN]


@pytest.fixture
async def bank(aiohttp_server: Any, tmp_path: Path) -> Bank:
    """The peer on https, requiring a client certificate from its own test CA."""
    ca = TestCa()
    app = mtls_peer.make_app()
    server = await aiohttp_server(app, ssl=mtls_peer.server_context(ca, ca.server()))
    ca_file = tmp_path / "bank-ca.pem"  # the CA's certificate only: public
    ca_file.write_text(ca.cert_pem)
    return Bank(ca, app, f"https://127.0.0.1:{server.port}", ca_file)


def upstream(bank: Bank, scheme: Any = "mtls", **extra: Any) -> dict[str, Any]:
    return {
        "url": bank.url,
        "scheme": scheme,
        "credential": "bank",
        "environment": "sandbox",
        "ca_bundle": str(bank.ca_file),
        **extra,
    }


@pytest.fixture
async def sidecar(bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar) -> Sidecar:
    return await make_sidecar(make_config({"bank": upstream(bank)}))


def body(pair: Issued, key: str | None = None) -> dict[str, Any]:
    fields = {"client_certificate": pair.cert_pem, "client_private_key": key or pair.key_pem}
    return {"upstream": "bank", "fields": fields}


async def put(sc: Sidecar, pair: Issued, key: str | None = None) -> tuple[int, dict[str, Any]]:
    r = await sc.admin.put("/v1/credentials/bank", json=body(pair, key))
    return r.status, await r.json()


def raw_record(openbao: OpenBao, prefix: str) -> dict[str, Any] | None:
    """The KV record straight from OpenBao (no sidecar code in between), or None."""
    try:
        got = openbao.client().secrets.kv.v2.read_secret_version(
            path=f"{prefix}/credentials/bank", raise_on_deleted_version=True
        )
    except Exception as exc:  # hvac's InvalidPath: nothing stored
        assert type(exc).__name__ == "InvalidPath"
        return None
    data: dict[str, Any] = got["data"]["data"]
    return data


async def serial_via_proxy(sc: Sidecar, query: str = "") -> int:
    r = await sc.proxy.get(f"/bank/v1/accounts{query}", headers={"Host": "127.0.0.1"})
    assert r.status == 200, await r.text()
    return int((await r.json())["serial"])


async def test_peer_sees_the_stored_client_certificate(sidecar: Sidecar, bank: Bank) -> None:
    """The proxied request reaches the peer with the credential's certificate (by serial)."""
    pair = bank.ca.client()
    status, saved = await put(sidecar, pair)
    assert status == 201 and saved["fields"] == {"client_certificate": pair.cert_pem}
    assert saved["secret_fields"] == ["client_private_key"]
    assert await serial_via_proxy(sidecar) == pair.serial
    assert await scheme_session_serial(sidecar, bank) == pair.serial
    assert set(bank.seen) == {pair.serial}  # verify's handshake and the requests


async def test_composes_with_api_key(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """``scheme: [mtls, api_key]``: the certificate in the handshake and the key in a header."""
    scheme = ["mtls", {"name": "api_key", "header": "X-Api-Key"}]
    sc = await make_sidecar(make_config({"bank": upstream(bank, scheme)}))
    pair = bank.ca.client()
    fields = {**body(pair)["fields"], "api_key": "bank-api-key-1"}
    r = await sc.admin.put("/v1/credentials/bank", json={"upstream": "bank", "fields": fields})
    assert r.status == 201, await r.text()
    resp = await sc.proxy.get("/bank/x", headers={"Host": "127.0.0.1"})
    answer = await resp.json()
    assert int(answer["serial"]) == pair.serial and "x-api-key" in answer["headers"]


async def test_patch_cannot_swap_the_certificate(sidecar: Sidecar, bank: Bank) -> None:
    """PATCH does not verify, so it may not change client_certificate: 422, no new version."""
    pair = bank.ca.client()
    assert (await put(sidecar, pair))[0] == 201
    fields = {"client_certificate": bank.ca.client().cert_pem}
    r = await sidecar.admin.patch("/v1/credentials/bank", json={"fields": fields})
    assert r.status == 422 and (await r.json())["code"] == "SC1002"
    r = await sidecar.admin.patch("/v1/credentials/bank", json={"enabled": True})
    assert r.status == 200 and (await r.json())["version"] == 2
    assert await serial_via_proxy(sidecar) == pair.serial  # a new version, the same pair


@pytest.mark.parametrize(
    ("case", "code"),
    [("mismatched", "SC2018"), ("expired", "SC2019"), ("future", "SC2019"), ("foreign", "SC2020")],
)
async def test_bad_pairs_are_refused_and_nothing_is_stored(
    sidecar: Sidecar, bank: Bank, openbao: OpenBao, prefix: str, case: str, code: str
) -> None:
    """A key of another certificate, an expired or future certificate, and one the peer's CA
    did not sign (its handshake refused) get 422 with their code; KV holds no record."""
    good = bank.ca.client()
    pair, key = {
        "mismatched": (good, bank.ca.client().key_pem),
        "expired": (bank.ca.client(days=-1, start_days=-30), None),
        "future": (bank.ca.client(days=30, start_days=2), None),
        "foreign": (TestCa("not the bank's CA").client(), None),
    }[case]
    status, answer = await put(sidecar, pair, key)
    assert (status, answer["code"]) == (422, code)
    assert raw_record(openbao, prefix) is None
    assert "PRIVATE KEY" not in json.dumps(answer)


async def test_malformed_fields_are_refused(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Garbage, too many or too large certificates (under the admin body limit), a broken or
    encrypted key and a CA certificate are refused (422)."""
    cfg = make_config({"bank": upstream(bank)}, admin={"max_body": 256 * 1024})
    sidecar = await make_sidecar(cfg)
    pair = bank.ca.client()
    encrypted = (
        serialization.load_pem_private_key(pair.key_pem.encode(), None)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        .decode()
    )
    ca_as_client = Issued(bank.ca.cert_pem, mtls_peer._pem(bank.ca.key), 0)
    cases = [
        (Issued("not a pem", pair.key_pem, 0), None, "SC2017"),
        (Issued(pair.cert_pem * 9, pair.key_pem, 0), None, "SC2017"),
        (Issued(pair.cert_pem + "A" * 70_000, pair.key_pem, 0), None, "SC2017"),
        (pair, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "SC2017"),
        (pair, encrypted, "SC2017"),
        (ca_as_client, None, "SC2021"),
    ]
    for issued, key, code in cases:
        status, answer = await put(sidecar, issued, key)
        assert (status, answer["code"]) == (422, code), answer


async def test_rotation_under_load(sidecar: Sidecar, bank: Bank) -> None:
    """200 requests in flight while the certificate is replaced: none fails, and every
    request sent after the new version is cached carries the new certificate."""
    old, new = bank.ca.client("v1"), bank.ca.client("v2")
    assert (await put(sidecar, old))[0] == 201
    await serial_via_proxy(sidecar)  # a warm pool of old-certificate connections
    flying = [asyncio.ensure_future(serial_via_proxy(sidecar, "?delay=0.5")) for _ in range(200)]
    while len(bank.seen) < 150:  # most of them reached the peer: in flight, old certificate
        await asyncio.sleep(0.01)
    status, saved = await put(sidecar, new)
    assert status == 200 and saved["version"] == 2
    after = [await serial_via_proxy(sidecar) for _ in range(20)]
    after += await asyncio.gather(*(serial_via_proxy(sidecar) for _ in range(50)))
    during = await asyncio.gather(*flying)  # raises on any failure
    print(f"in flight: {during.count(old.serial)} old, {during.count(new.serial)} new")
    assert len(during) == 200 and set(during) <= {old.serial, new.serial}
    later = await asyncio.gather(*(serial_via_proxy(sidecar) for _ in range(100)))
    assert after + later == [new.serial] * 170  # the old connections were closed, not pooled
    assert await scheme_session_serial(sidecar, bank) == new.serial


async def test_a_proxy_role_sidecar_switches_at_its_own_sync(
    sidecar: Sidecar, bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A second sidecar that learns of the replace only through its sync loop: requests in
    flight across the sync all succeed, and every request after it carries the new serial."""
    old, new = bank.ca.client("v1"), bank.ca.client("v2")
    assert (await put(sidecar, old))[0] == 201
    cfg = make_config({"bank": upstream(bank)}, cache={"refresh_interval": 0.2})
    pod = await make_sidecar(cfg)
    assert await serial_via_proxy(pod) == old.serial
    assert (await put(sidecar, new))[0] == 200
    flying = [asyncio.ensure_future(serial_via_proxy(pod, "?delay=0.3")) for _ in range(200)]
    keys = pod.runtime.upstreams["bank"].keys
    assert keys is not None
    while keys.version != 2:  # the pod's own sync loop, nothing else, brings version 2
        await asyncio.sleep(0.02)
    after = await asyncio.gather(*(serial_via_proxy(pod) for _ in range(100)))
    during = await asyncio.gather(*flying)
    print(f"in flight across the sync: {during.count(old.serial)} old, {len(during)} total")
    assert set(during) <= {old.serial, new.serial} and after == [new.serial] * 100


async def scheme_session_serial(sc: Sidecar, bank: Bank) -> int:
    """What the scheme's own session (token requests, probes) presents to the peer."""
    session = sc.runtime.upstreams["bank"].session
    assert session is not None
    async with session.get(f"{bank.url}/token") as resp:
        return int((await resp.json())["serial"])


async def test_expiry_metric_and_one_warning_per_version(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """The gauge shows the seconds left; fewer than 14 days logs one warning per version."""
    sc = await make_sidecar(make_config({"bank": upstream(bank)}))
    with capture_logs() as logs:
        assert (await put(sc, bank.ca.client(days=10)))[0] == 201
        for _ in range(3):
            await serial_via_proxy(sc)
        await sc.runtime.store.sync()
        sc.runtime.refresh_tls()
        assert (await put(sc, bank.ca.client(days=40)))[0] == 200
        await serial_via_proxy(sc)
    warned = [e for e in logs if e["event"] == "client_certificate_expiring"]
    assert len(warned) == 1 and warned[0]["credential"] == "bank"
    assert 9 < warned[0]["days_left"] < 10.1
    text = await (await sc.admin.get("/metrics")).text()
    line = next(x for x in text.splitlines() if x.startswith("sidecar_client_certificate_expiry"))
    assert line.startswith('sidecar_client_certificate_expiry_seconds{credential="bank"}')
    assert 39 * 86400 < float(line.split()[-1]) <= 40 * 86400


async def test_stored_certificate_that_expired_is_refused_locally(
    sidecar: Sidecar, bank: Bank
) -> None:
    """A stored certificate past notAfter (written by the store itself, as if it expired
    while stored): 503 SC4061 before anything is sent, and the gauge goes negative."""
    expired = bank.ca.client(days=-1, start_days=-30)
    fields = body(expired)["fields"]
    await sidecar.runtime.store.put("bank", "bank", "sandbox", fields, {})
    r = await sidecar.proxy.get("/bank/x", headers={"Host": "127.0.0.1"})
    assert r.status == 503 and (await r.json())["code"] == "SC4061"
    assert bank.seen == []
    text = await (await sidecar.admin.get("/metrics")).text()
    line = next(x for x in text.splitlines() if x.startswith("sidecar_client_certificate_expiry"))
    assert float(line.split()[-1]) < -86000


async def test_deleting_the_credential_drops_its_context(sidecar: Sidecar, bank: Bank) -> None:
    """After a delete and a sync the context (and the key in it) is gone, and so is the
    credential's expiry series; requests get SC4002 as for any missing credential."""
    assert (await put(sidecar, bank.ca.client()))[0] == 201
    await serial_via_proxy(sidecar)
    assert (await sidecar.admin.delete("/v1/credentials/bank")).status == 204
    await sidecar.runtime.store.sync()
    sidecar.runtime.refresh_tls()
    keys = sidecar.runtime.upstreams["bank"].keys
    assert keys is not None and keys.current is None
    text = await (await sidecar.admin.get("/metrics")).text()
    assert 'credential="bank"' not in text
    r = await sidecar.proxy.get("/bank/x", headers={"Host": "127.0.0.1"})
    assert (await r.json())["code"] == "SC4002"


def _memfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        except OSError:  # the listing's own fd, already closed
            continue
    return count


def _tmp_files() -> set[str]:
    """Every file under the temp dir (shared with other processes: vanishing ones skipped)."""
    root = tempfile.gettempdir()
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def _read(path: str) -> bytes:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block open()
            return b""
        with open(path, "rb") as f:
            return f.read(10_000_000)
    except OSError:  # gone already
        return b""


def _needles(pem: str) -> set[str]:
    """The key as PEM (raw, base64, hex: leakscan's forms), as DER in base64 and hex, and
    each PEM body line."""
    der = serialization.load_pem_private_key(pem.encode(), None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    lines = {line for line in pem.splitlines() if line and "-----" not in line}
    der_forms = {base64.b64encode(der).decode(), der.hex(), der.hex().upper()}
    return {*encodings(pem), *der_forms, *lines}


async def test_private_key_leaks_nowhere_and_touches_no_disk(
    sidecar: Sidecar, bank: Bank, openbao: OpenBao, prefix: str
) -> None:
    """The key is in no log line, response, /metrics or raw KV record, no memfd stays open
    and no file in the temp dir holds it."""
    pair, rotated = bank.ca.client(), bank.ca.client()
    files_before = _tmp_files()
    memfds_before = _memfds()
    seen: list[str] = []
    with capture_logs() as logs:
        for issued in (pair, rotated):
            r = await sidecar.admin.put("/v1/credentials/bank", json=body(issued))
            seen.append(await r.text())
            r = await sidecar.proxy.get("/bank/x", headers={"Host": "127.0.0.1"})
            seen.append(await r.text() + json.dumps(dict(r.headers)))
        bad = await sidecar.admin.put("/v1/credentials/bank", json=body(pair, rotated.key_pem))
        seen.append(await bad.text())
        seen.append(await (await sidecar.admin.get("/v1/credentials/bank")).text())
        seen.append(await (await sidecar.admin.get("/metrics")).text())
    seen += [json.dumps(e, default=str) for e in logs]
    seen.append(json.dumps(raw_record(openbao, prefix)))
    for key in (pair.key_pem, rotated.key_pem):
        hits = [n[:12] for n in _needles(key) for text in seen if n in text]
        assert hits == []
    assert _memfds() == memfds_before == 0
    new_files = _tmp_files() - files_before
    for path in new_files:
        data = _read(path)
        assert b"PRIVATE KEY" not in data and pair.key_pem.encode() not in data
    print(f"scanned {len(seen)} texts, {len(logs)} log events, {len(new_files)} new tmp files")
