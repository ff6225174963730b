"""The demo PIX partner (seed 000's organization B): OAuth2 client credentials, Basic only."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sidecar.sandbox import demo
from sidecar.sandbox.server import Sandboxes, start_sandboxes

FORM = {"grant_type": "client_credentials", "scope": "pix.write pix.read"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.fixture
async def pix() -> AsyncIterator[str]:
    sandboxes: Sandboxes = await start_sandboxes({"pix-partner": demo.demo_apps()["pix-partner"]})
    yield sandboxes.url("pix-partner")
    await sandboxes.close()


async def token_status(url: str, headers: dict[str, str], form: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/oauth/token", data=form, headers=headers) as resp,
    ):
        return resp.status


async def test_seed_values_get_a_token_and_a_resource(pix: str) -> None:
    """Seed 000's client id and key, by Basic, get a Bearer that the PIX API accepts."""
    async with aiohttp.ClientSession() as http:
        auth = basic(demo.PIX_CLIENT_ID, demo.PIX_KEY)
        async with http.post(pix + "/oauth/token", data=FORM, headers=auth) as resp:
            assert resp.status == 200
            token = (await resp.json())["access_token"]
        async with http.get(pix + "/v2/cob/t1", headers={"Authorization": f"Bearer {token}"}) as r:
            assert (r.status, (await r.json())["client_id"]) == (200, demo.PIX_CLIENT_ID)
        async with http.get(pix + "/v2/cob/t1", headers={"Authorization": "Bearer forged"}) as r:
            assert r.status == 401


@pytest.mark.parametrize(
    ("headers", "form", "status"),
    [
        (basic(demo.PIX_CLIENT_ID, "71069360002199"), FORM, 401),  # wrong key
        (basic("someone-else", demo.PIX_KEY), FORM, 401),  # wrong client
        ({}, {**FORM, "client_id": demo.PIX_CLIENT_ID, "client_secret": demo.PIX_KEY}, 401),
        (basic(demo.PIX_CLIENT_ID, demo.PIX_KEY), {**FORM, "scope": "pix.admin"}, 400),
    ],
)
async def test_refusals(pix: str, headers: dict[str, str], form: dict[str, str], status: int) -> None:
    """A wrong key or client, body credentials (Basic only, as configured) and a foreign scope."""
    assert await token_status(pix, headers, form) == status
