"""App -> sidecar -> shipped sandbox provider, per scheme: accepted, and a wrong secret refused.

The provider peers check auth as the providers document it (sidecar/sandbox/), so an accepted
request proves the scheme's computation byte for byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.sandbox import api_key_peer, hmac_peer, oauth2, placetopay
from sidecar.sandbox.oauth2 import OAUTH2_STATE
from sidecar.sandbox.placetopay import PLACETOPAY_STATE
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar

PTP = ("site-login-1", "ptp-secret-9f8e7d")
PAYNET = ("paynet-client-1", "paynet-secret-5a6b7c")
AZUPAY = "SECR_azupay_1d2c3b"
INTASEND = ("ISSecretKey_test_4e5f", "ISPubKey_test_6a7b")


def url_of(server: Any) -> str:
    return str(server.make_url("/")).rstrip("/")


async def start(aiohttp_server: Any, app: Any) -> tuple[Any, str]:
    server = await aiohttp_server(app)
    return app, url_of(server)


def up(url: str, scheme: Any, credential: str, **options: Any) -> dict[str, Any]:
    return {
        "url": url,
        "scheme": scheme,
        "credential": credential,
        "environment": "sandbox",
        **options,
    }


async def put(sc: Sidecar, name: str, upstream: str, **fields: str) -> int:
    r = await sc.admin.put(f"/v1/credentials/{name}", json={"upstream": upstream, "fields": fields})
    return r.status


async def test_placetopay_accepted_and_wrong_secret_relayed(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """tranKey computed by the sidecar is accepted; a wrong secret gets PlaceToPay's own 401 102."""
    app, url = await start(
        aiohttp_server,
        placetopay.make_app(
            placetopay.PlaceToPayConfig(sites={PTP[0]: placetopay.SiteConfig(secret_key=PTP[1])})
        ),
    )
    sc = await make_sidecar(make_config({"ptp": up(url, "placetopay", "ptp")}))
    assert await put(sc, "ptp", "ptp", login=PTP[0], secret_key=PTP[1]) == 201
    body = {"payment": {"reference": "r1", "amount": {"currency": "COP", "total": 1000}}}
    r = await sc.proxy.post("/ptp/api/session", json=body)
    assert r.status == 200, await r.text()
    assert (await r.json())["status"]["status"] == "OK"
    seen = app[PLACETOPAY_STATE].seen[-1]
    assert b'"secret_key"' not in seen.body and PTP[1].encode() not in seen.body

    assert (
        await put(sc, "ptp", "ptp", login=PTP[0], secret_key="wrong-secret") == 422
    )  # verify refuses
    await sc.runtime.store.put(
        "ptp", "ptp", "sandbox", {"login": PTP[0], "secret_key": "wrong-secret"}, {}
    )
    r = await sc.proxy.post("/ptp/api/session", json=body)
    answer = await r.json()
    assert r.status == 401 and "X-Sidecar-Error" not in r.headers
    assert answer["status"]["message"] == "Authentication failed 102"


async def paynet_sidecar(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> tuple[Any, Sidecar]:
    """The sandbox OAuth2 token server (PayNet's token path) and a sidecar in front of it."""
    app, url = await start(
        aiohttp_server, oauth2.make_app(oauth2.OAuth2Config(clients=dict([PAYNET])))
    )
    options = {"token_url": "/v1/picasso-guard/auth/token"}
    upstream = up(url, "oauth2_client_credentials", "paynet", **options)
    return app, await make_sidecar(make_config({"paynet": upstream}))


async def test_oauth2_accepted_and_wrong_secret_relayed(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A Bearer token from the sandbox token server is accepted; a wrong secret is 502 SC4008."""
    _, sc = await paynet_sidecar(aiohttp_server, make_config, make_sidecar)
    assert await put(sc, "paynet", "paynet", client_id=PAYNET[0], client_secret="nope") == 422
    assert await put(sc, "paynet", "paynet", client_id=PAYNET[0], client_secret=PAYNET[1]) == 201
    r = await sc.proxy.get("/paynet/v1/bank-list")
    assert r.status == 200 and (await r.json())["client_id"] == PAYNET[0]
    await sc.runtime.store.put(
        "paynet", "paynet", "sandbox", {"client_id": PAYNET[0], "client_secret": "bad"}, {}
    )
    r = await sc.proxy.get("/paynet/v1/bank-list")
    assert (r.status, r.headers.get("X-Sidecar-Error")) == (502, "SC4008")
    assert "bad" not in await r.text()


async def test_oauth2_thousand_first_requests_make_one_token_request_and_revoke_one_refresh(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """1,000 concurrent first requests: one token request; revoke: one refresh, all succeed."""
    app, sc = await paynet_sidecar(aiohttp_server, make_config, make_sidecar)
    await sc.runtime.store.put(
        "paynet", "paynet", "sandbox", {"client_id": PAYNET[0], "client_secret": PAYNET[1]}, {}
    )
    state = app[OAUTH2_STATE]

    async def burst() -> list[int]:
        async def one(i: int) -> int:
            r = await sc.proxy.get(f"/paynet/v1/item/{i}")
            await r.read()
            return r.status

        return await asyncio.gather(*(one(i) for i in range(1000)))

    statuses = await burst()
    print(
        f"oauth2: 1000 first requests -> {statuses.count(200)} ok, tokens issued {state.tokens_issued}"
    )
    assert statuses == [200] * 1000 and state.tokens_issued == 1
    state.revoke_all()
    statuses = await burst()
    print(
        f"oauth2: after revoke 1000 requests -> {statuses.count(200)} ok, tokens issued {state.tokens_issued}"
    )
    assert statuses == [200] * 1000 and state.tokens_issued == 2


@pytest.mark.parametrize(
    ("peer", "options", "fields", "path"),
    [
        (
            api_key_peer.azupay(AZUPAY),
            {
                "header": "Authorization",
                "template": "{api_key}",
                "probe": {"method": "GET", "path": "/v1/balance"},
            },
            {"api_key": AZUPAY},
            "/v1/balance",
        ),
        (
            api_key_peer.intasend(*INTASEND),
            {
                "template": "Bearer {api_key}",
                "extra_headers": {"INTASEND_PUBLIC_API_KEY": "{public_key}"},
                "probe": {"method": "GET", "path": "/api/v1/wallets/"},
            },
            {"api_key": INTASEND[0], "public_key": INTASEND[1]},
            "/api/v1/wallets/",
        ),
    ],
    ids=["azupay", "intasend"],
)
async def test_api_key_accepted_and_wrong_key_relayed(
    aiohttp_server: Any,
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
    peer: Any,
    options: dict[str, Any],
    fields: dict[str, str],
    path: str,
) -> None:
    """The key reaches the peer in the documented header; a wrong key gets the peer's own 401."""
    _, url = await start(aiohttp_server, api_key_peer.make_app(peer))
    sc = await make_sidecar(make_config({"p": up(url, "api_key", "p", **options)}))
    assert await put(sc, "p", "p", **{**fields, "api_key": "wrong"}) == 422
    assert await put(sc, "p", "p", **fields) == 201
    assert (await sc.proxy.get(f"/p{path}")).status == 200
    await sc.runtime.store.put("p", "p", "sandbox", {**fields, "api_key": "wrong"}, {})
    r = await sc.proxy.get(f"/p{path}")
    assert r.status == 401 and "X-Sidecar-Error" not in r.headers


async def test_hmac_paynet_reports_accepted_and_wrong_secret_relayed(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """X-Timestamp/X-Signature verified by the HMAC peer; a wrong secret gets its 401."""
    _, url = await start(aiohttp_server, hmac_peer.make_app(hmac_peer.paynet_reports(PAYNET[1])))
    sc = await make_sidecar(make_config({"rep": up(url, "hmac", "rep", preset="paynet_reports")}))
    assert await put(sc, "rep", "rep", client_secret=PAYNET[1]) == 201
    assert (await sc.proxy.get("/rep/v1/reports?date=2026-01-01")).status == 200
    await sc.runtime.store.put("rep", "rep", "sandbox", {"client_secret": "wrong"}, {})
    r = await sc.proxy.get("/rep/v1/reports")
    assert r.status == 401 and (await r.json())["error"] == "invalid_signature"


async def test_composite_api_key_and_hmac_over_body(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Azupay-style HMAC-enabled key: API key AND a signature over method, path and body hash."""
    template = "{timestamp}\n{method}\n{path}\n{body_sha256}"
    peer = hmac_peer.HmacPeerConfig(
        keys={"k": "hmac-secret-0f0e"},
        template=template,
        require_api_key={"Authorization": AZUPAY},
    )
    _, url = await start(aiohttp_server, hmac_peer.make_app(peer))
    scheme = [{"name": "api_key"}, {"name": "hmac", "template": template}]
    sc = await make_sidecar(make_config({"az": up(url, scheme, "az")}))
    assert await put(sc, "az", "az", api_key=AZUPAY, hmac_key="hmac-secret-0f0e") == 201
    r = await sc.proxy.post("/az/v1/paymentRequest", json={"amount": 10})
    assert r.status == 200, await r.text()
