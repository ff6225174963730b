"""App -> sidecar (real OpenBao) -> DuitNow-style peer: JWS accepted, a body changed after
signing refused by the peer, weak keys refused at save, and no private key material anywhere."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from sidecar.sandbox import duitnow
from sidecar.sandbox.duitnow import DUITNOW_STATE
from sidecar.sandbox.openbao import OpenBao
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.leakscan import Collected

FIELDS = {"issuer": "acq-77", "subject": "merchant-88", "key_id": "key-2026-12"}
BODY = {"amount": "10.00", "merchant": {"productId": "P00000205"}, "merchantReferenceId": "r-1"}


@cache
def key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(bits: int = 2048) -> str:
    raw = key(bits).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return raw.decode()


def peer_app() -> web.Application:
    public = (
        key(2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cfg = duitnow.DuitNowConfig(
        public_key=public.decode(),
        issuer=FIELDS["issuer"],
        merchants=[FIELDS["subject"]],
        key_name=FIELDS["key_id"],
    )
    return duitnow.make_app(cfg)


def tampering_hop(target: str) -> web.Application:
    """A hop between sidecar and provider that raises the amount in every JSON body it relays
    (what a compromised proxy or a buggy middlebox would do after the request was signed)."""

    async def relay(request: web.Request) -> web.Response:
        body = await request.read()
        if body:
            body = json.dumps({**json.loads(body), "amount": "99999.00"}).encode()
        headers = {"Authorization": request.headers.get("Authorization", "")}
        if body:
            headers["Content-Type"] = "application/json"
        async with (
            aiohttp.ClientSession() as http,
            http.request(request.method, target + request.path_qs, data=body, headers=headers) as r,
        ):
            return web.Response(
                status=r.status, body=await r.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def upstream(url: str, credential: str) -> dict[str, Any]:
    return {
        "url": url,
        "scheme": "jws",
        "preset": "paynet_duitnow",
        "probe": {"method": "GET", "path": "/v1/merchant", "ok": [200]},
        "credential": credential,
        "environment": "sandbox",
    }


async def sidecar_with_peer(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> tuple[Sidecar, web.Application]:
    app = peer_app()
    peer = await aiohttp_server(app)
    peer_url = str(peer.make_url("")).rstrip("/")
    hop = await aiohttp_server(tampering_hop(peer_url))
    upstreams = {
        "duitnow": upstream(peer_url, "dn"),
        "duitnow-hop": upstream(str(hop.make_url("")).rstrip("/"), "dn-hop"),
    }
    return await make_sidecar(make_config(upstreams)), app


async def put(sc: Sidecar, name: str, upstream: str, pem: str, seen: Collected) -> Any:
    fields = {**FIELDS, "private_key": pem}
    r = await sc.admin.put(f"/v1/credentials/{name}", json={"upstream": upstream, "fields": fields})
    return r.status, json.loads(await seen.response(r))


async def test_signed_call_accepted_tampered_body_refused_and_weak_key_not_saved(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Stored through the admin API (probe verified), the JWS call succeeds; the same call
    through a body-changing hop fails at the peer with data_mismatch; a 1024-bit key is 422."""
    sc, app = await sidecar_with_peer(aiohttp_server, make_config, make_sidecar)
    seen = Collected()
    assert (await put(sc, "dn", "duitnow", private_pem(), seen))[0] == 201
    assert (await put(sc, "dn-hop", "duitnow-hop", private_pem(), seen))[0] == 201
    r = await sc.proxy.post("/duitnow/v1/payment-intents", json=BODY)
    assert r.status == 200, await r.text()
    assert (await r.json())["merchant"] == FIELDS["subject"]
    r = await sc.proxy.post("/duitnow-hop/v1/payment-intents", json=BODY)
    assert (r.status, await r.json()) == (401, {"error": "data_mismatch"})
    state = app[DUITNOW_STATE]
    assert (state.accepted, state.errors["data_mismatch"]) == (3, 1)  # 2 probes + 1 call

    status, answer = await put(sc, "dn-weak", "duitnow", private_pem(1024), seen)
    assert (status, answer["code"]) == (422, "SC2014")
    assert (await sc.admin.get("/v1/credentials/dn-weak")).status == 404
    r = await sc.proxy.post("/duitnow/v1/payment-intents", data=b"amount=10")
    assert (r.status, (await r.json())["code"]) == (400, "SC4055")
    assert state.accepted == 3  # the refused body never left the sidecar


def key_material() -> list[str]:
    """The PEM, its base64 body (whole and per line), the DER (hex, base64) and the private
    numbers (decimal and hex): every form in which the key could leak."""
    pem = private_pem()
    lines = [line for line in pem.splitlines() if "-----" not in line]
    der = key(2048).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nums = key(2048).private_numbers()
    numbers = [nums.d, nums.p, nums.q, nums.dmp1, nums.dmq1, nums.iqmp]
    return [
        pem,
        "".join(lines),
        *lines,
        der.hex(),
        base64.b64encode(der).decode(),
        *(str(n) for n in numbers),
        *(format(n, "x") for n in numbers),
    ]


async def test_no_private_key_material_in_logs_answers_metrics_or_kv(
    aiohttp_server: Any,
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
    openbao: OpenBao,
    prefix: str,
) -> None:
    """Save, replace, sign, fail and scrape, then search logs, every answer, /metrics and the raw
    KV record (read straight from OpenBao) for the key in each encoding: no hit."""
    seen = Collected()
    with capture_logs() as logs:
        sc, _ = await sidecar_with_peer(aiohttp_server, make_config, make_sidecar)
        await put(sc, "dn", "duitnow", private_pem(), seen)
        await put(sc, "dn", "duitnow", private_pem(), seen)
        await put(sc, "dn-weak", "duitnow", private_pem(1024), seen)
        for path, body in (("/duitnow/v1/payment-intents", BODY), ("/duitnow/v1/x", "not-json")):
            await seen.response(await sc.proxy.post(path, json=body))
        await seen.response(await sc.admin.get("/v1/credentials/dn"))
        await seen.response(await sc.admin.get("/v1/credentials/dn/versions"))
        await seen.response(await sc.admin.get("/metrics"))
    assert {"admin_request", "credential_saved"} <= {e["event"] for e in logs}, logs[:3]
    seen.add("\n".join(repr(event) for event in logs))
    raw = openbao.client().secrets.kv.v2.read_secret_version(
        path=f"{prefix}/credentials/dn", raise_on_deleted_version=True
    )
    seen.add(json.dumps(raw))
    assert raw["data"]["data"]["fields"] == FIELDS
    assert raw["data"]["data"]["secrets"]["private_key"]["ciphertext"].startswith("vault:v")
    needles = key_material()
    assert seen.hits(needles) == []
    print(f"leak scan: {len(needles)} needles x 5 encodings over {seen.size} (texts, lines)")
