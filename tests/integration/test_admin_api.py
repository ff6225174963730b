"""The admin API over HTTP against a real OpenBao and a real loopback provider peer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar

GOOD = {"SECR_good_key_1", "SECR_good_key_2"}


def balance_peer() -> web.Application:
    """A provider that accepts two API keys on GET /v1/balance (Azupay-shaped)."""

    async def balance(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") not in GOOD:
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"balance": 100})

    app = web.Application()
    app.router.add_get("/v1/balance", balance)
    return app


@pytest.fixture
async def sidecar(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> Sidecar:
    peer = await aiohttp_server(balance_peer())
    upstream = {
        "url": str(peer.make_url("/")).rstrip("/"),
        "scheme": "api_key",
        "credential": "azupay",
        "environment": "sandbox",
        "probe": {"method": "GET", "path": "/v1/balance"},
    }
    cfg = make_config(
        {"azupay": upstream, "pix-partner": {**upstream, "credential": "pix-partner-pix"}},
        admin={"max_body": 4096},
    )
    return await make_sidecar(cfg)


def body(key: str = "SECR_good_key_1", **extra: Any) -> dict[str, Any]:
    return {"upstream": "azupay", "fields": {"api_key": key}, **extra}


async def test_full_lifecycle_over_http(sidecar: Sidecar) -> None:
    """Create, replace, list, get, disable, verify right and wrong, versions, delete."""
    admin = sidecar.admin
    r = await admin.put("/v1/credentials/azupay", json=body(provider_data={"client_id": "C1"}))
    assert r.status == 201 and r.headers["ETag"] == '"1"'
    created = await r.json()
    assert created["fields"] == {} and created["secret_fields"] == ["api_key"]
    r = await admin.put(
        "/v1/credentials/azupay", json=body("SECR_good_key_2"), headers={"If-Match": '"1"'}
    )
    assert r.status == 200 and (await r.json())["version"] == 2
    listing = await (await admin.get("/v1/credentials?provider=azupay&enabled=true")).json()
    assert [c["name"] for c in listing["credentials"]] == ["azupay"]
    got = await admin.get("/v1/credentials/azupay")
    assert got.headers["ETag"] == '"2"'
    r = await admin.patch("/v1/credentials/azupay", json={"enabled": False})
    assert (await r.json())["enabled"] is False
    assert (await (await admin.get("/v1/credentials?enabled=true")).json())["credentials"] == []
    right = await (
        await admin.post("/v1/credentials/azupay/verify", json={"api_key": "SECR_good_key_2"})
    ).json()
    wrong = await (
        await admin.post("/v1/credentials/azupay/verify", json={"api_key": "SECR_good_key_1"})
    ).json()
    assert right == {
        "name": "azupay",
        "is_valid": True,
        "message": "Credentials verified successfully",
    }
    assert wrong["is_valid"] is False
    versions = await (await admin.get("/v1/credentials/azupay/versions")).json()
    assert [v["version"] for v in versions["versions"]] == [1, 2, 3]
    assert (await admin.delete("/v1/credentials/azupay")).status == 204
    r = await admin.get("/v1/credentials/azupay")
    assert r.status == 404 and (await r.json())["code"] == "SC2001"


async def test_no_response_contains_a_secret(sidecar: Sidecar) -> None:
    """Every admin answer for a stored credential is free of the secret value."""
    admin = sidecar.admin
    texts = [await (await admin.put("/v1/credentials/azupay", json=body())).text()]
    for path in ("/v1/credentials/azupay", "/v1/credentials", "/v1/credentials/azupay/versions"):
        texts.append(await (await admin.get(path)).text())
    assert all("SECR_good_key_1" not in t for t in texts)


async def test_rejected_verification_stores_nothing(sidecar: Sidecar) -> None:
    """The provider says no: 422 SC2005 and no record at all."""
    r = await sidecar.admin.put("/v1/credentials/azupay", json=body("SECR_wrong"))
    assert r.status == 422 and (await r.json())["code"] == "SC2005"
    assert "SECR_wrong" not in await r.text()
    assert (await sidecar.admin.get("/v1/credentials/azupay")).status == 404


async def test_pismo_create_answers_like_seed_000(sidecar: Sidecar) -> None:
    """POST /v1/credentials: "Credential saved", or "<provider> - API Invalid credential"."""
    ok = {
        "key": "SECR_good_key_1",
        "provider": "pix-partner",
        "type": "PIX",
        "provider_data": {"client_id": "Jk10014812"},
    }
    r = await sidecar.admin.post("/v1/credentials", json=ok)
    assert await r.json() == {"message": "Credential saved", "verification": "probe"}
    saved = await (await sidecar.admin.get("/v1/credentials/pix-partner-pix")).json()
    assert saved["type"] == "PIX" and saved["provider_data"] == {"client_id": "Jk10014812"}
    r = await sidecar.admin.post("/v1/credentials", json={**ok, "key": "bad"})
    assert await r.json() == {"message": "pix-partner - API Invalid credential", "code": "SC2005"}


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        ("/v1/credentials/azupay", b"{not json", 400, "SC1001"),
        ("/v1/credentials/azupay", {"upstream": "azupay"}, 422, "SC1002"),
        ("/v1/credentials/azupay", {**body(), "surprise": 1}, 422, "SC1002"),
        ("/v1/credentials/azupay", {"upstream": "azupay", "fields": {"api_key": 5}}, 422, "SC1002"),
        ("/v1/credentials/azupay", {"upstream": "azupay", "fields": {"nope": "x"}}, 422, "SC1002"),
        ("/v1/credentials/azupay", {**body(), "environment": "live"}, 422, "SC1002"),
        ("/v1/credentials/azupay", {**body(), "upstream": "nowhere"}, 422, "SC2004"),
        ("/v1/credentials/Bad_Name", body(), 400, "SC1004"),
        ("/v1/credentials/" + "a" * 65, body(), 400, "SC1004"),
        ("/v1/credentials/azupay", {**body(), "provider_data": {"pad": "x" * 5000}}, 413, "SC1003"),
    ],
)
async def test_bad_input_is_refused_and_nothing_written(
    sidecar: Sidecar, path: str, payload: Any, status: int, code: str
) -> None:
    """Each kind of bad input gets its 4xx code and no record appears."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    r = await sidecar.admin.put(path, data=data, headers={"Content-Type": "application/json"})
    assert (r.status, (await r.json())["code"]) == (status, code)
    assert (await (await sidecar.admin.get("/v1/credentials")).json())["credentials"] == []


async def test_wrong_content_type_and_bad_filter_have_codes(sidecar: Sidecar) -> None:
    """A non-JSON Content-Type is 415 SC1008; a bad list filter is 400 SC1009."""
    r = await sidecar.admin.put(
        "/v1/credentials/azupay", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert (r.status, (await r.json())["code"]) == (415, "SC1008")
    r = await sidecar.admin.get("/v1/credentials?enabled=maybe")
    assert (r.status, (await r.json())["code"]) == (400, "SC1009")
    r = await sidecar.admin.get("/v1/credentials?environment=prod")
    assert (r.status, (await r.json())["code"]) == (400, "SC1009")


async def test_unknown_route_and_method_have_codes(sidecar: Sidecar) -> None:
    """404 and 405 answer with the JSON error shape too."""
    r = await sidecar.admin.get("/v1/nothing")
    assert (r.status, (await r.json())["code"]) == (404, "SC1005")
    r = await sidecar.admin.post("/v1/credentials/azupay")
    assert (r.status, (await r.json())["code"]) == (405, "SC1006")


async def test_fifty_concurrent_replaces_over_http(sidecar: Sidecar) -> None:
    """50 concurrent PUTs: each 200/201 or 409, and the final record is one of the payloads."""
    await sidecar.admin.put("/v1/credentials/azupay", json=body())

    async def put(i: int) -> int:
        r = await sidecar.admin.put("/v1/credentials/azupay", json=body(provider_data={"i": i}))
        return r.status

    statuses = await asyncio.gather(*(put(i) for i in range(50)))
    assert set(statuses) <= {200, 201, 409} and 200 in statuses
    final = await (await sidecar.admin.get("/v1/credentials/azupay")).json()
    assert final["version"] == 1 + statuses.count(200)
    assert 0 <= final["provider_data"]["i"] < 50


async def test_readyz_reports_vault_and_cache(sidecar: Sidecar) -> None:
    """Ready once Vault authenticated and the cache loaded."""
    r = await sidecar.admin.get("/readyz")
    assert r.status == 200 and (await r.json())["ready"] is True


async def test_admin_token_is_required_when_configured(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """With admin.token set, every admin route but health needs the Bearer token."""
    cfg = make_config({}, admin={"token": "adm-token-0123456789"})
    sidecar = await make_sidecar(cfg)
    r = await sidecar.admin.get("/v1/credentials")
    assert (r.status, (await r.json())["code"]) == (401, "SC1007")
    r = await sidecar.admin.get("/v1/credentials", headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    r = await sidecar.admin.get(
        "/v1/credentials", headers={"Authorization": "Bearer adm-token-0123456789"}
    )
    assert r.status == 200
    assert (await sidecar.admin.get("/healthz")).status == 200


async def test_verify_is_rate_limited_per_credential_and_audited(sidecar: Sidecar) -> None:
    """10 verifies a minute per credential: the 11th is 429 SC1018 with Retry-After, another
    credential is unaffected, and every attempt (refused ones too) leaves an audit line."""
    from structlog.testing import capture_logs

    admin = sidecar.admin
    for name in ("azupay", "pix-partner-pix"):
        upstream = "azupay" if name == "azupay" else "pix-partner"
        r = await admin.put(f"/v1/credentials/{name}", json={**body(), "upstream": upstream})
        assert r.status == 201
    statuses: list[int] = []
    with capture_logs() as logs:
        for i in range(11):
            guess = {"api_key": "SECR_good_key_1" if i == 0 else f"SECR_guess_{i}"}
            r = await admin.post("/v1/credentials/azupay/verify", json=guess)
            statuses.append(r.status)
        refused = await r.json()
        retry_after = r.headers.get("Retry-After", "")
        other = await admin.post("/v1/credentials/pix-partner-pix/verify", json={"api_key": "x"})
    assert statuses == [200] * 10 + [429]
    assert refused["code"] == "SC1018" and retry_after.isdigit() and 1 <= int(retry_after) <= 60
    assert other.status == 200
    events = [e for e in logs if e["event"] == "credential_verify"]
    outcomes = [e["outcome"] for e in events if e["credential"] == "azupay"]
    assert outcomes == ["valid"] + ["invalid"] * 9 + ["SC1018"]
    assert len(events) == 12 and not [e for e in events if "SECR_" in repr(e)]
    print(f"verify: statuses {statuses}, Retry-After {retry_after} s, other credential 200")
