"""Attacker pass on issue 16's key-pair surfaces (jws, mtls): real OpenBao, the real runtime,
the shipped DuitNow and client-certificate peers. Each test names the attack it sends."""

from __future__ import annotations

import asyncio
import ctypes
import json
import resource
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.errors import ConfigError, SidecarError
from sidecar.sandbox import mtls_peer
from sidecar.sandbox.duitnow import DUITNOW_STATE
from sidecar.sandbox.mtls_peer import Issued, TestCa
from sidecar.sandbox.openbao import OpenBao
from sidecar.schemes.jws import Claims
from sidecar.tlskeys import TlsKeys
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar, make_config, make_sidecar
from tests.integration.test_jws import FIELDS, peer_app, private_pem
from tests.integration.test_jws import upstream as jws_upstream
from tests.integration.test_mtls import Bank, bank, put, raw_record, serial_via_proxy
from tests.integration.test_mtls import upstream as mtls_upstream
from tests.unit.test_tlskeys import cred as tlskeys_cred

__all__ = ["bank", "make_config", "make_sidecar"]  # fixtures shared with tests/integration
HOST = {"Host": "127.0.0.1"}
OVERSIZED_RSA_BITS = 4104  # just over the 4096-bit cap: cheap to generate, still refused


@cache
def big_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=OVERSIZED_RSA_BITS)


def pem_of(key: rsa.RSAPrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return raw.decode()


async def duitnow(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> tuple[Sidecar, web.Application]:
    app = peer_app()
    peer = await aiohttp_server(app)
    url = str(peer.make_url("")).rstrip("/")
    return await make_sidecar(make_config({"duitnow": jws_upstream(url, "dn")})), app


async def put_jws(sc: Sidecar, pem: str, name: str = "dn") -> tuple[int, dict[str, Any]]:
    fields = {**FIELDS, "private_key": pem}
    r = await sc.admin.put(
        f"/v1/credentials/{name}", json={"upstream": "duitnow", "fields": fields}
    )
    return r.status, await r.json()


# -- mTLS ------------------------------------------------------------------------------------


async def test_recreated_credential_presents_its_new_certificate(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Delete then re-create: KV v2 numbers the new record version 1 again, like the deleted
    one. The proxy must present the new certificate, not keep the deleted one's key."""
    sc = await make_sidecar(make_config({"bank": mtls_upstream(bank)}))
    old, new = bank.ca.client("old"), bank.ca.client("new")
    assert (await put(sc, old))[0] == 201
    assert await serial_via_proxy(sc) == old.serial
    assert (await sc.admin.delete("/v1/credentials/bank")).status == 204
    status, saved = await put(sc, new)
    assert (status, saved["version"]) == (201, 1)
    assert [await serial_via_proxy(sc) for _ in range(3)] == [new.serial] * 3


def rsa_client(bank: Bank, key: rsa.RSAPrivateKey) -> Issued:
    """A client certificate from the bank's CA for an RSA key of the test's choosing."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "big")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(bank.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(bank.ca.key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), pem_of(key), 0)


async def test_oversized_rsa_client_key_is_refused_before_it_costs_cpu(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar, openbao: OpenBao, prefix: str
) -> None:
    """An RSA client key over 4096 bits (an 8192-bit key costs ~5 s of event-loop time to
    validate and ~40 ms per handshake here) is 422 SC2017 and nothing is stored."""
    sc = await make_sidecar(make_config({"bank": mtls_upstream(bank)}))
    status, answer = await put(sc, rsa_client(bank, big_rsa()))
    assert (status, answer["code"]) == (422, "SC2017"), answer
    assert "4096" in answer["message"] and "PRIVATE" not in json.dumps(answer)
    assert raw_record(openbao, prefix) is None


async def test_handshake_path_stays_on_the_upstream_origin(
    bank: Bank, make_config: MakeConfig
) -> None:
    """handshake_path (mtls) and probe.path (jws) are paths: a URL would make verify present
    the client certificate, or send a token signed with the key, to another host."""
    for path in ("https://evil.example/", "//evil.example/x", "x", "/\\evil.example"):
        with pytest.raises(ConfigError, match="handshake_path"):
            make_config({"bank": mtls_upstream(bank, handshake_path=path)})
    make_config({"bank": mtls_upstream(bank, handshake_path="/health?deep=1")})
    probe = {"method": "GET", "path": "https://evil.example/v1/merchant"}
    with pytest.raises(ConfigError, match=r"probe\.path"):  # a signed JWS would go there
        make_config({"duitnow": {**jws_upstream("http://127.0.0.1:9", "dn"), "probe": probe}})


# -- JWS -------------------------------------------------------------------------------------


async def test_oversized_rsa_jws_key_is_refused(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A jws private_key over 4096 bits (CPU per signature grows with the cube of the size) is
    422 SC2014; a PEM over 16 KiB (a key followed by padding) is 422 SC2013."""
    sc, _ = await duitnow(aiohttp_server, make_config, make_sidecar)
    status, answer = await put_jws(sc, pem_of(big_rsa()))
    assert (status, answer["code"]) == (422, "SC2014"), answer
    status, answer = await put_jws(sc, private_pem() + "\n" * 17_000)
    assert (status, answer["code"]) == (422, "SC2013"), answer
    assert (await sc.admin.get("/v1/credentials/dn")).status == 404


async def test_body_whose_json_value_the_provider_would_not_see_is_refused(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """``1e400`` parses to infinity, which the claims would carry as ``Infinity`` (not JSON;
    the provider's parser refuses it or reads something else), and a UTF-16 or BOM-prefixed
    body is JSON only to Python's byte sniffing (RFC 8259: UTF-8, no BOM), so ``data`` would
    not be what the provider reads: 400 SC4055, nothing sent."""
    sc, app = await duitnow(aiohttp_server, make_config, make_sidecar)
    assert (await put_jws(sc, private_pem()))[0] == 201
    accepted = app[DUITNOW_STATE].accepted
    utf16, bom = '{"amount": "1.00"}'.encode("utf-16"), b'\xef\xbb\xbf{"amount": "1.00"}'
    for raw in (b'{"amount": 1e400}', b'{"amount": -1e999}', utf16, bom):
        r = await sc.proxy.post(
            "/duitnow/v1/payment-intents",
            data=raw,
            headers={**HOST, "Content-Type": "application/json"},
        )
        assert (r.status, (await r.json())["code"]) == (400, "SC4055")
    assert app[DUITNOW_STATE].accepted == accepted


async def test_pismo_create_verifies_the_jws_key(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Held: the Pismo-shaped POST /v1/credentials runs the same key checks as PUT (a 1024-bit
    key is 422 SC2014, nothing stored) and never echoes the key."""
    sc, _ = await duitnow(aiohttp_server, make_config, make_sidecar)
    weak = private_pem(1024)
    body = {"key": weak, "provider": "duitnow", "type": "dn", "provider_data": FIELDS}
    r = await sc.admin.post("/v1/credentials", json=body)
    text = await r.text()
    assert (r.status, json.loads(text)["code"]) == (422, "SC2014")
    assert "PRIVATE" not in text and weak.splitlines()[1] not in text
    assert (await sc.admin.get("/v1/credentials/duitnow-dn")).status == 404


async def test_a_key_pasted_in_the_wrong_place_is_not_echoed(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Admin mistakes that put the PEM where a name goes (a field name, the upstream, an extra
    key, the Pismo provider, a PATCH field): each is refused, and no answer quotes the key."""
    sc, _ = await duitnow(aiohttp_server, make_config, make_sidecar)
    pem = private_pem()
    assert (await put_jws(sc, pem))[0] == 201
    mistakes: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/v1/credentials/dn", {"upstream": "duitnow", "fields": {pem: "private_key"}}),
        ("PUT", "/v1/credentials/dn", {"upstream": pem, "fields": {"private_key": pem}}),
        ("PUT", "/v1/credentials/dn", {"upstream": "duitnow", "fields": {}, pem: 1}),
        ("POST", "/v1/credentials", {"key": "k", "provider": pem, "type": "x"}),
        ("PATCH", "/v1/credentials/dn", {"fields": {pem: "x"}}),
        ("PATCH", "/v1/credentials/dn", {"fields": {"issuer": [pem]}}),
    ]
    seen = []
    for method, path, body in mistakes:
        r = await sc.admin.request(method, path, json=body)
        text = await r.text()
        seen.append((r.status, json.loads(text)["code"]))
        leaked = "PRIVATE KEY" in text or pem.splitlines()[2] in text
        assert not leaked, (method, path, r.status)  # never the text itself: it holds the key
    assert seen == [
        (422, "SC1002"),
        (422, "SC2004"),
        (422, "SC1002"),
        (422, "SC2004"),
        (422, "SC1002"),
        (422, "SC1002"),
    ]


async def test_patch_cannot_change_what_the_jws_probe_verified(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """issuer, subject and key_id go into every signed token and the probe checked them at
    save; PATCH verifies nothing, so it may not change them (422 SC1002, no new version)."""
    sc, app = await duitnow(aiohttp_server, make_config, make_sidecar)
    assert (await put_jws(sc, private_pem()))[0] == 201
    for field in ("issuer", "subject", "key_id"):
        r = await sc.admin.patch("/v1/credentials/dn", json={"fields": {field: "other"}})
        assert (r.status, (await r.json())["code"]) == (422, "SC1002")
    r = await sc.admin.patch("/v1/credentials/dn", json={"enabled": True})
    assert (r.status, (await r.json())["version"]) == (200, 2)
    r = await sc.proxy.post("/duitnow/v1/payment-intents", json={"amount": "1.00"})
    assert r.status == 200, await r.text()
    assert app[DUITNOW_STATE].errors == {}


async def test_a_private_key_is_never_stored_in_a_public_field(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar, openbao: OpenBao, prefix: str
) -> None:
    """A combined PEM (certificate and key, ``cat cert.pem key.pem``) pasted as the public
    client_certificate, or a key put in provider_data, would sit in KV as plaintext and come
    back from GET: refused (422) at PUT and at PATCH, and nothing is stored."""
    sc = await make_sidecar(make_config({"bank": mtls_upstream(bank)}))
    pair = bank.ca.client()
    for bundle in (pair.cert_pem + pair.key_pem, pair.key_pem + pair.cert_pem):
        status, answer = await put(sc, Issued(bundle, pair.key_pem, pair.serial))
        assert (status, answer["code"]) == (422, "SC1002"), status
        assert "PRIVATE" not in json.dumps(answer)
    assert raw_record(openbao, prefix) is None
    fields = {"client_certificate": pair.cert_pem, "client_private_key": pair.key_pem}
    body = {"upstream": "bank", "fields": fields, "provider_data": {"backup": pair.key_pem}}
    r = await sc.admin.put("/v1/credentials/bank", json=body)
    assert (r.status, (await r.json())["code"]) == (422, "SC1002")
    assert raw_record(openbao, prefix) is None
    assert (await put(sc, pair))[0] == 201
    r = await sc.admin.patch("/v1/credentials/bank", json={"provider_data": {"k": pair.key_pem}})
    assert (r.status, (await r.json())["code"]) == (422, "SC1002")
    record = raw_record(openbao, prefix)
    assert record is not None and "PRIVATE KEY" not in json.dumps(record)


async def test_a_proxy_role_sidecar_drops_a_deleted_then_recreated_credential(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Delete and re-create between two syncs of another sidecar: KV numbers the new record
    from 1 again (here: below the deleted one's 2), yet that sidecar's sync must load it, not
    keep serving the deleted key."""
    admin = await make_sidecar(make_config({"bank": mtls_upstream(bank)}))
    old, new = bank.ca.client("old"), bank.ca.client("new")
    assert [(await put(admin, old))[0] for _ in range(2)] == [201, 200]  # version 2
    quiet = {"refresh_interval": 3600}  # no sync of its own during the test
    pod = await make_sidecar(make_config({"bank": mtls_upstream(bank)}, cache=quiet))
    assert await serial_via_proxy(pod) == old.serial
    assert (await admin.admin.delete("/v1/credentials/bank")).status == 204
    assert (await put(admin, new))[0] == 201
    assert await pod.runtime.store.sync() == 1  # the pod's sync, run here at a known moment
    pod.runtime.refresh_tls()
    assert [await serial_via_proxy(pod) for _ in range(3)] == [new.serial] * 3


async def test_a_running_sidecar_writes_no_core_file_and_refuses_ptrace(
    bank: Bank, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Keys live in the process: once the runtime starts, the core limit is 0 (hard too) and
    the process is not dumpable (no same-user ptrace or /proc/PID/mem), and the memfd load of
    a client key through /proc/self/fd still works."""
    sc = await make_sidecar(make_config({"bank": mtls_upstream(bank)}))
    assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    assert ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE
    pair = bank.ca.client()
    assert (await put(sc, pair))[0] == 201
    assert await serial_via_proxy(sc) == pair.serial


def test_public_fields_are_values_not_templates() -> None:
    """Held: an issuer holding ``{now}``, quotes or braces is copied as text, never expanded
    or parsed again (format_map substitutes once)."""
    claims = Claims({"iss": "{issuer}", "aud": "acq:{issuer}:{subject}"})
    facts = {"issuer": '{now}"}', "subject": "{{uuid4}}"}
    out = claims.render(lambda name: facts[name])
    assert out == {"iss": '{now}"}', "aud": 'acq:{now}"}:{{uuid4}}'}


async def test_concurrent_calls_get_distinct_jtis(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Held: 100 concurrent signed calls are all accepted by the peer, which refuses any
    replayed jti: every token had its own."""
    sc, app = await duitnow(aiohttp_server, make_config, make_sidecar)
    assert (await put_jws(sc, private_pem()))[0] == 201

    async def call(i: int) -> int:
        r = await sc.proxy.post("/duitnow/v1/payment-intents", json={"amount": f"{i}.00"})
        return r.status

    assert await asyncio.gather(*(call(i) for i in range(100))) == [200] * 100
    assert app[DUITNOW_STATE].errors == {}


async def test_provider_hostname_is_still_checked_with_a_client_certificate(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar, tmp_path: Path
) -> None:
    """Held: a provider whose certificate (from the trusted CA) names another host is not
    trusted at verify (SC2006): the client certificate is never presented to a stand-in."""
    ca = TestCa()
    ctx = mtls_peer.server_context(ca, ca.server(hosts=("bank.example",)))
    server = await aiohttp_server(mtls_peer.make_app(), ssl=ctx)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(ca.cert_pem)
    bank = Bank(ca, server.app, f"https://127.0.0.1:{server.port}", ca_file)
    sc = await make_sidecar(make_config({"bank": mtls_upstream(bank)}))
    status, answer = await put(sc, ca.client())
    assert (status, answer["code"]) == (502, "SC2006") and bank.seen == []


def test_jws_header_cannot_be_a_framing_header(make_config: MakeConfig) -> None:
    """``header: Content-Length`` (or Host, Transfer-Encoding, a Proxy- header) would put the
    token where the connection or the framing reads it: a second Content-Length is request
    smuggling. The config refuses it; Authorization and X-Signature are fine."""
    base = jws_upstream("http://127.0.0.1:9", "dn")
    for name in (
        "Content-Length",
        "host",
        "Transfer-Encoding",
        "Connection",
        "Proxy-Authorization",
    ):
        with pytest.raises(ConfigError, match="framing or connection header"):
            make_config({"duitnow": {**base, "header": name}})
    for name in ("Authorization", "X-Signature"):
        make_config({"duitnow": {**base, "header": name}})


def test_a_stored_certificate_not_yet_valid_is_refused_locally() -> None:
    """SC4061 says "expired or not yet valid": a stored pair whose notBefore is tomorrow (a
    record written around the admin API) is refused before anything is sent, not presented."""
    keys = TlsKeys("bank", None)
    future = TestCa().client(days=30, start_days=1)
    assert keys.ensure(tlskeys_cred(future)) is not None
    with pytest.raises(SidecarError, match="SC4061"):
        keys.check()
