"""The OAuth2 client-credentials emulator: client auth, grants, expiry, revoke, failures."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sidecar.sandbox.oauth2 import OAUTH2_STATE, OAuth2Config, make_app

CLIENT_ID = "merchant-app"
SECRET = "s3cr:t+/=value"  # characters that Basic must form-encode
TOKEN_PATH = "/v1/picasso-guard/auth/token"
FORM = {"grant_type": "client_credentials"}
Client = TestClient[web.Request, web.Application]


def basic(client_id: str, secret: str, encode: bool = True) -> str:
    """RFC 6749 2.3.1: form-urlencode each part, then Base64 ``id:secret``."""
    if encode:
        client_id, secret = quote_plus(client_id), quote_plus(secret)
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def make(aiohttp_client: AiohttpClient, **overrides: Any) -> Client:
    cfg = OAuth2Config(clients={CLIENT_ID: SECRET}, **overrides)
    return await aiohttp_client(make_app(cfg))


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    """A token server with one client and default settings."""
    return await make(aiohttp_client)


async def token_request(
    client: Client, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    async with client.post(TOKEN_PATH, data=form, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def get_token(client: Client) -> str:
    status, body, _ = await token_request(
        client, {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    )
    assert status == 200
    return str(body["access_token"])


async def resource(client: Client, token: str | None, path: str = "/v1/things") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.get(path, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_body_credentials_issue_token(client: Client) -> None:
    """client_id/client_secret in the form body (PayNet's curl) get a bearer token."""
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    status, body, headers = await token_request(client, form)
    assert status == 200
    assert body["token_type"] == "bearer" and body["scope"] == "rpp:merchant"
    assert body["expires_in"] == 3600 and len(body["access_token"]) >= 32
    assert headers["Cache-Control"] == "no-store"
    assert client.app[OAUTH2_STATE].tokens_issued == 1


async def test_basic_credentials_issue_token(client: Client) -> None:
    """Basic with form-encoded id and secret is accepted."""
    auth = {"Authorization": basic(CLIENT_ID, SECRET)}
    status, body, _ = await token_request(client, FORM, auth)
    assert status == 200 and body["access_token"]


async def test_basic_without_form_encoding_refused(client: Client) -> None:
    """A raw '+' in a Basic secret decodes to a space, so the secret no longer matches."""
    auth = {"Authorization": basic(CLIENT_ID, SECRET, encode=False)}
    status, body, headers = await token_request(client, FORM, auth)
    assert (status, body) == (401, {"error": "invalid_client"})
    assert headers["WWW-Authenticate"].startswith("Basic")


async def test_basic_disabled(aiohttp_client: AiohttpClient) -> None:
    """accept_basic=False refuses otherwise good Basic credentials."""
    client = await make(aiohttp_client, accept_basic=False)
    status, body, _ = await token_request(client, FORM, {"Authorization": basic(CLIENT_ID, SECRET)})
    assert (status, body) == (401, {"error": "invalid_client"})


async def test_body_disabled(aiohttp_client: AiohttpClient) -> None:
    """accept_body=False refuses otherwise good body credentials."""
    client = await make(aiohttp_client, accept_body=False)
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    status, body, _ = await token_request(client, form)
    assert (status, body) == (401, {"error": "invalid_client"})


async def test_two_auth_methods_refused(client: Client) -> None:
    """Basic plus a body secret is invalid_request (one method per request)."""
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    status, body, _ = await token_request(client, form, {"Authorization": basic(CLIENT_ID, SECRET)})
    assert (status, body) == (400, {"error": "invalid_request"})


@pytest.mark.parametrize(
    "form",
    [
        {**FORM, "client_id": CLIENT_ID, "client_secret": "wrong"},
        {**FORM, "client_id": "stranger", "client_secret": SECRET},
        FORM,
    ],
)
async def test_bad_client_refused(client: Client, form: dict[str, str]) -> None:
    """A wrong secret, an unknown client or no client authentication is invalid_client."""
    status, body, _ = await token_request(client, form)
    assert (status, body) == (401, {"error": "invalid_client"})
    assert client.app[OAUTH2_STATE].token_failures == 1


@pytest.mark.parametrize(
    ("grant", "error"),
    [(None, "invalid_request"), ("password", "unsupported_grant_type")],
)
async def test_grant_type_required(client: Client, grant: str | None, error: str) -> None:
    """A missing grant is invalid_request, another grant unsupported_grant_type."""
    form = {"client_id": CLIENT_ID, "client_secret": SECRET}
    if grant:
        form["grant_type"] = grant
    status, body, _ = await token_request(client, form)
    assert (status, body) == (400, {"error": error})


async def test_unknown_scope_refused(client: Client) -> None:
    """Asking for a scope the server does not grant is invalid_scope."""
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET, "scope": "admin"}
    status, body, _ = await token_request(client, form)
    assert (status, body) == (400, {"error": "invalid_scope"})


async def test_json_body_refused(client: Client) -> None:
    """The token endpoint takes a form, not JSON."""
    body = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    async with client.post(TOKEN_PATH, json=body) as resp:
        assert resp.status == 400 and await resp.json() == {"error": "invalid_request"}


async def test_repeated_parameter_refused(client: Client) -> None:
    """A parameter sent twice is invalid_request."""
    data = f"grant_type=client_credentials&client_id={CLIENT_ID}&client_id=x&client_secret=s"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with client.post(TOKEN_PATH, data=data, headers=headers) as resp:
        assert resp.status == 400


async def test_token_endpoint_is_post_only(client: Client) -> None:
    """GET on the token path is 405, not a protected resource."""
    async with client.get(TOKEN_PATH) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_resource_with_token(client: Client) -> None:
    """A live token reaches the resource, which echoes method, raw path and client."""
    token = await get_token(client)
    status, body, _ = await resource(client, token, "/v1/a%20b")
    assert status == 200
    assert body == {"ok": True, "method": "GET", "path": "/v1/a%20b", "client_id": CLIENT_ID}
    assert client.app[OAUTH2_STATE].seen[-1].headers["Authorization"] == f"Bearer {token}"


async def test_resource_without_token(client: Client) -> None:
    """No token: 401 invalid_token body, a plain Bearer challenge (RFC 6750 3.1)."""
    status, body, headers = await resource(client, None)
    assert (status, body) == (401, {"error": "invalid_token"})
    assert headers["WWW-Authenticate"] == 'Bearer realm="sandbox"'


async def test_resource_with_unknown_token(client: Client) -> None:
    """A token this server never issued is invalid_token in body and challenge."""
    status, body, headers = await resource(client, "made-up")
    assert (status, body) == (401, {"error": "invalid_token"})
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_token_expires(aiohttp_client: AiohttpClient) -> None:
    """A token works until expires_in has passed on the server's clock, then not."""
    client = await make(aiohttp_client, expires_in=60)
    token = await get_token(client)
    state = client.app[OAUTH2_STATE]
    state.advance(59)
    assert (await resource(client, token))[0] == 200
    state.advance(2)
    assert (await resource(client, token))[0] == 401
    assert (await resource(client, await get_token(client)))[0] == 200


async def test_revoke_all(client: Client) -> None:
    """revoke_all() invalidates every issued token; new tokens work."""
    first, second = await get_token(client), await get_token(client)
    assert client.app[OAUTH2_STATE].revoke_all() == 2
    assert (await resource(client, first))[0] == 401
    assert (await resource(client, second))[0] == 401
    assert (await resource(client, await get_token(client)))[0] == 200


async def test_revoke_endpoint(client: Client) -> None:
    """POST /_sandbox/revoke does the same, and is not logged as provider traffic."""
    token = await get_token(client)
    async with client.post("/_sandbox/revoke") as resp:
        assert await resp.json() == {"revoked": 1}
    assert (await resource(client, token))[0] == 401
    assert all(not r.path.startswith("/_sandbox/") for r in client.app[OAUTH2_STATE].seen)


async def test_injected_failures_from_config(aiohttp_client: AiohttpClient) -> None:
    """fail_token_requests=2 answers 500 twice, then issues tokens again."""
    client = await make(aiohttp_client, fail_token_requests=2)
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    statuses = [(await token_request(client, form))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    state = client.app[OAUTH2_STATE]
    assert (state.injected_failures, state.tokens_issued) == (2, 1)


async def test_injected_failures_at_runtime(client: Client) -> None:
    """The failure count can be set on the live state."""
    client.app[OAUTH2_STATE].fail_token_requests = 1
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": SECRET}
    assert (await token_request(client, form))[0] == 500
    assert (await token_request(client, form))[0] == 200


async def test_stats_hold_no_secrets(client: Client) -> None:
    """GET /_sandbox/stats reports counts only: no client secret, no token."""
    token = await get_token(client)
    await resource(client, token)
    await resource(client, None)
    async with client.get("/_sandbox/stats") as resp:
        text = await resp.text()
        stats = await resp.json()
    assert SECRET not in text and token not in text
    assert stats["tokens_issued"] == 1 and stats["tokens_live"] == 1
    assert (stats["accepted"], stats["rejected"]) == (1, 1)


async def test_slow_resource(aiohttp_client: AiohttpClient) -> None:
    """slow_ms holds resource answers back, so a client timeout fires."""
    client = await make(aiohttp_client, slow_ms=2000)
    token = await get_token(client)
    with pytest.raises(asyncio.TimeoutError):
        await client.get(
            "/v1/x",
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=0.05),
        )
