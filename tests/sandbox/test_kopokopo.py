"""The Kopokopo peer: Kopokopo's token answer, the STK push API, its checks and its record."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sidecar.dev import STK_BODY
from sidecar.sandbox.kopokopo import KopokopoConfig, make_app
from sidecar.sandbox.oauth2 import OAUTH2_STATE

CLIENT_ID = "k2-client"
SECRET = "k2-secret-0001"
FORM = {"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "client_credentials"}
PAY = "/api/v2/incoming_payments"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(make_app(KopokopoConfig(clients={CLIENT_ID: SECRET})))


async def token(client: Client) -> str:
    r = await client.post("/oauth/token", data=FORM)
    assert r.status == 200
    body: dict[str, Any] = await r.json()
    return str(body["access_token"])


async def test_token_answer_has_kopokopo_shape(client: Client) -> None:
    """access_token, token_type Bearer, expires_in and created_at; no-store."""
    r = await client.post("/oauth/token", data=FORM)
    body = await r.json()
    assert sorted(body) == ["access_token", "created_at", "expires_in", "token_type"]
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({**FORM, "client_secret": "wrong"}, 401, "invalid_client"),
        ({**FORM, "client_id": "nobody"}, 401, "invalid_client"),
        ({k: v for k, v in FORM.items() if k != "grant_type"}, 400, "invalid_request"),
        ({**FORM, "grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
async def test_token_refusals(
    client: Client, form: dict[str, str], status: int, error: str
) -> None:
    """Wrong secret or client, missing or other grant: RFC 6749 errors, no token issued."""
    r = await client.post("/oauth/token", data=form)
    assert (r.status, (await r.json())["error"]) == (status, error)
    assert client.app[OAUTH2_STATE].tokens_issued == 0


async def test_stk_push_answers_201_with_location_and_can_be_read(client: Client) -> None:
    """A live Bearer and a complete body: 201, Location at the public host, GET shows it."""
    headers = {"Authorization": f"Bearer {await token(client)}"}
    r = await client.post(PAY, json=STK_BODY, headers=headers)
    location = r.headers["Location"]
    assert r.status == 201 and location.startswith(f"https://sandbox.kopokopo.com{PAY}/")
    r = await client.get(PAY + "/" + location.rsplit("/", 1)[1], headers=headers)
    assert (await r.json())["data"]["attributes"]["status"] == "Pending"


@pytest.mark.parametrize("bearer", [None, "not-issued"])
async def test_stk_push_needs_a_live_bearer(client: Client, bearer: str | None) -> None:
    """No Bearer or an unknown one: 401 invalid_token with a challenge; counted as rejected."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    r = await client.post(PAY, json=STK_BODY, headers=headers)
    assert (r.status, (await r.json())["error"]) == (401, "invalid_token")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.app[OAUTH2_STATE].rejected == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"till_number": "K1"}',
        b'{"till_number": "K1", "payment_channel": "x"}',
    ],
)
async def test_stk_push_refuses_incomplete_bodies(client: Client, body: bytes) -> None:
    """Not JSON, not an object, or a required field missing: 400 with what is missing."""
    headers = {"Authorization": f"Bearer {await token(client)}", "Content-Type": "application/json"}
    r = await client.post(PAY, data=body, headers=headers)
    assert r.status == 400 and (await r.json())["error_code"] == 400


async def test_everything_received_is_recorded(client: Client) -> None:
    """Token requests and calls are both in ``seen``, bodies and headers included."""
    bearer = await token(client)
    await client.post(PAY, json=STK_BODY, headers={"Authorization": f"Bearer {bearer}"})
    state = client.app[OAUTH2_STATE]
    assert [s.path for s in state.seen] == ["/oauth/token", PAY]
    assert state.seen[0].contains(SECRET) and state.seen[1].contains(bearer)
