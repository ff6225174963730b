"""Seed 000: the Pismo create answers a proxy value that works, and only the intended caller can spend."""

from __future__ import annotations

from tests.integration.conftest import MakeConfig, MakeSidecar
from tests.keys.conftest import SECRET, Provider, bearer, keyed_upstream


async def test_pismo_create_returns_a_working_proxy_value(
    provider: tuple[Provider, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """POST /v1/credentials answers "Credential saved" plus a proxy_value that spends the key."""
    peer, url = provider
    upstream = keyed_upstream(url, credential="pix-partner-pix")
    sc = await make_sidecar(make_config({"pix-partner": upstream}))
    body = {"key": SECRET, "provider": "pix-partner", "type": "PIX", "provider_data": {"x": 1}}
    r = await sc.admin.post("/v1/credentials", json=body)
    answer = await r.json()
    assert r.status == 201 and answer["message"] == "Credential saved"
    assert answer["proxy_value"].startswith("sck_pk") and SECRET not in str(answer)
    r = await sc.proxy.post(
        "/pix-partner/pix/transfer", headers=bearer(answer["proxy_value"]), data=b"{}"
    )
    assert r.status == 200 and peer.seen[-1]["headers"]["Authorization"] == SECRET
    r = await sc.proxy.post("/pix-partner/pix/transfer", data=b"{}")
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5001")
    keys = await (await sc.admin.get("/v1/credentials/pix-partner-pix/keys")).json()
    assert [k["permissions"] for k in keys["keys"]] == [["* /*"]]


async def test_pismo_create_without_required_keys_has_no_proxy_value(
    provider: tuple[Provider, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """An upstream that does not require keys answers the seed's message and the check made."""
    _, url = provider
    upstream = keyed_upstream(url, credential="pix-partner-pix", require_proxy_key=False)
    sc = await make_sidecar(make_config({"pix-partner": upstream}))
    body = {"key": SECRET, "provider": "pix-partner", "type": "PIX"}
    r = await sc.admin.post("/v1/credentials", json=body)
    assert await r.json() == {"message": "Credential saved", "verification": "presence-only"}
