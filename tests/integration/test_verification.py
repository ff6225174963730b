"""No silent "verified": create/replace answers say what the save rested on.

Against a real OpenBao and real loopback peers: an ``api_key`` upstream with a probe, the same
without one, an OAuth2 upstream, and a composite (OAuth2 + HMAC). The presence-only upstream
stores a key its provider would refuse, and its provider is never asked: the answer says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from sidecar.sandbox import oauth2
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar, api_key_upstream

GOOD_KEY = "SECR_verification_good_1"
CLIENT = ("verification-client", "verification-secret-1")


class CountingPeer:
    """Accepts ``Authorization: GOOD_KEY`` and counts every request it is sent."""

    def __init__(self) -> None:
        self.requests = 0

    async def answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        ok = request.headers.get("Authorization") == GOOD_KEY
        return web.json_response({} if ok else {"message": "Unauthorized"}, status=200 if ok else 401)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        return app


async def url_of(aiohttp_server: Any, app: web.Application) -> str:
    return str((await aiohttp_server(app)).make_url("/")).rstrip("/")


@pytest.fixture
async def peer() -> CountingPeer:
    return CountingPeer()


@pytest.fixture
async def sidecar(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar, peer: CountingPeer
) -> Sidecar:
    key_url = await url_of(aiohttp_server, peer.app())
    idp = oauth2.OAuth2Config(clients=dict([CLIENT]), token_path="/oauth/token")
    idp_url = await url_of(aiohttp_server, oauth2.make_app(idp))
    oauth = {"name": "oauth2_client_credentials", "token_url": "/oauth/token"}
    upstreams = {
        "probed": api_key_upstream(key_url, "probed", probe={"path": "/v1/balance"}),
        "unprobed": api_key_upstream(key_url, "unprobed"),
        "oauth": {**api_key_upstream(idp_url, "oauth"), "scheme": "oauth2_client_credentials"},
        "both": {**api_key_upstream(idp_url, "both"), "scheme": [oauth, {"name": "hmac"}]},
    }
    for upstream in upstreams.values():
        if upstream["scheme"] == "oauth2_client_credentials":
            upstream["token_url"] = "/oauth/token"
    return await make_sidecar(make_config(upstreams))


async def put(sidecar: Sidecar, name: str, fields: dict[str, str]) -> tuple[int, Any]:
    r = await sidecar.admin.put(f"/v1/credentials/{name}", json={"upstream": name, "fields": fields})
    return r.status, await r.json()


async def test_each_answer_names_the_check_that_ran(sidecar: Sidecar, peer: CountingPeer) -> None:
    """probe for a probed api_key, token for OAuth2, the strongest part for a composite."""
    oauth_fields = {"client_id": CLIENT[0], "client_secret": CLIENT[1]}
    assert (await put(sidecar, "probed", {"api_key": GOOD_KEY}))[0] == 201
    status, answer = await put(sidecar, "probed", {"api_key": GOOD_KEY})
    assert (status, answer["verification"], answer["version"]) == (200, "probe", 2)
    status, answer = await put(sidecar, "oauth", oauth_fields)
    assert (status, answer["verification"]) == (201, "token")
    status, answer = await put(sidecar, "both", {**oauth_fields, "hmac_key": "h" * 32})
    assert (status, answer["verification"], answer["scheme"]) == (
        201,
        "token",
        "oauth2_client_credentials+hmac",
    )
    assert peer.requests == 2


async def test_presence_only_stores_what_the_provider_would_refuse(
    sidecar: Sidecar, peer: CountingPeer
) -> None:
    """Without a probe a wrong key is saved unasked, and the answer says presence-only."""
    status, answer = await put(sidecar, "unprobed", {"api_key": "SECR_wrong"})
    assert (status, answer["verification"]) == (201, "presence-only")
    assert peer.requests == 0
    status, answer = await put(sidecar, "probed", {"api_key": "SECR_wrong"})
    assert (status, answer["code"]) == (422, "SC2005") and "verification" not in answer
    assert peer.requests == 1


async def test_pismo_create_answers_the_check(sidecar: Sidecar, peer: CountingPeer) -> None:
    """The Pismo-shaped POST carries the same field beside its seed message."""
    body: dict[str, Any] = {"key": "SECR_wrong", "provider": "unprobed", "type": "PIX"}
    r = await sidecar.admin.post("/v1/credentials", json=body)
    assert r.status == 201
    assert await r.json() == {"message": "Credential saved", "verification": "presence-only"}
    data = {"client_id": CLIENT[0]}
    body = {"key": CLIENT[1], "provider": "oauth", "type": "PIX", "provider_data": data}
    r = await sidecar.admin.post("/v1/credentials", json=body)
    assert (r.status, await r.json()) == (
        201,
        {"message": "Credential saved", "verification": "token"},
    )
    assert peer.requests == 0


async def test_a_caller_cannot_claim_a_verification(sidecar: Sidecar, peer: CountingPeer) -> None:
    """``verification`` is the sidecar's word only: a body that sends one is refused unsaved."""
    body = {"upstream": "unprobed", "fields": {"api_key": "x"}, "verification": "probe"}
    r = await sidecar.admin.put("/v1/credentials/unprobed", json=body)
    assert (r.status, (await r.json())["code"]) == (422, "SC1002")
    pismo = {"key": "x", "provider": "unprobed", "type": "PIX", "verification": "probe"}
    r = await sidecar.admin.post("/v1/credentials", json=pismo)
    assert (r.status, (await r.json())["code"]) == (422, "SC1002")
    assert (await sidecar.admin.get("/v1/credentials/unprobed")).status == 404
    assert peer.requests == 0
