"""The API-key peer: Azupay and IntaSend presets, query-parameter keys, strictness."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient

from sidecar.sandbox.api_key_peer import (
    API_KEY_STATE,
    ApiKeyPeerConfig,
    azupay,
    intasend,
    make_app,
)

AZUPAY_KEY = "SECR_MYBUSINESSID_nR2duCGXlqWSuYJF"
IS_SECRET, IS_PUBLIC = "ISSecretKey_test_abc", "ISPubKey_test_def"
Client = TestClient[web.Request, web.Application]


async def call(
    client: Client, path: str, headers: dict[str, str], method: str = "GET", **kw: Any
) -> tuple[int, Any]:
    async with client.request(method, path, headers=headers, **kw) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def azu(aiohttp_client: AiohttpClient) -> Client:
    """The Azupay-shaped peer."""
    return await aiohttp_client(make_app(azupay(AZUPAY_KEY)))


@pytest.fixture
async def ins(aiohttp_client: AiohttpClient) -> Client:
    """The IntaSend-shaped peer."""
    return await aiohttp_client(make_app(intasend(IS_SECRET, IS_PUBLIC)))


async def test_azupay_balance(azu: Client) -> None:
    """The bare key in Authorization reads the balance."""
    status, body = await call(azu, "/v1/balance", {"Authorization": AZUPAY_KEY})
    assert status == 200 and "balance" in body
    assert azu.app[API_KEY_STATE].saw(AZUPAY_KEY)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "SECR_wrong"}, {"Authorization": f"Bearer {AZUPAY_KEY}"}],
)
async def test_azupay_refuses(azu: Client, headers: dict[str, str]) -> None:
    """Missing, wrong, or Bearer-prefixed keys get the gateway's Unauthorized."""
    assert await call(azu, "/v1/balance", headers) == (401, {"message": "Unauthorized"})
    assert azu.app[API_KEY_STATE].rejected == 1


async def test_azupay_payment_request(azu: Client) -> None:
    """POST /v1/paymentRequest answers 201 with the request and a status block."""
    body = {"PaymentRequest": {"clientTransactionId": "t-1", "paymentAmount": 10}}
    status, created = await call(
        azu, "/v1/paymentRequest", {"Authorization": AZUPAY_KEY}, "POST", json=body
    )
    assert status == 201
    assert created["PaymentRequest"] == body["PaymentRequest"]
    assert created["PaymentRequestStatus"]["status"] == "WAITING"
    assert azu.app[API_KEY_STATE].payment_requests == 1


async def test_azupay_payment_request_needs_json(azu: Client) -> None:
    """A body that is not a JSON object is a 400."""
    status, _ = await call(
        azu, "/v1/paymentRequest", {"Authorization": AZUPAY_KEY}, "POST", data=b"nope"
    )
    assert status == 400


async def test_intasend_wallets(ins: Client) -> None:
    """Bearer secret plus the publishable key header list the wallets."""
    headers = {"Authorization": f"Bearer {IS_SECRET}", "INTASEND_PUBLIC_API_KEY": IS_PUBLIC}
    status, body = await call(ins, "/api/v1/wallets/", headers)
    assert status == 200 and isinstance(body, list)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {IS_SECRET}"},
        {"Authorization": f"Bearer {IS_PUBLIC}", "INTASEND_PUBLIC_API_KEY": IS_PUBLIC},
        {"Authorization": IS_SECRET, "INTASEND_PUBLIC_API_KEY": IS_PUBLIC},
    ],
)
async def test_intasend_refuses(ins: Client, headers: dict[str, str]) -> None:
    """Missing public key, wrong secret, or no Bearer prefix are refused DRF-style."""
    status, body = await call(ins, "/api/v1/wallets/", headers)
    assert (status, body) == (401, {"detail": "Invalid authentication credentials"})


async def test_intasend_generic_echo(ins: Client) -> None:
    """Any other path echoes an authorised request with its raw path and query."""
    headers = {"Authorization": f"Bearer {IS_SECRET}", "INTASEND_PUBLIC_API_KEY": IS_PUBLIC}
    status, body = await call(ins, "/api/v1/payment/mpesa-stk-push/?a=%20", headers, "POST")
    assert status == 200
    assert body == {
        "ok": True,
        "method": "POST",
        "path": "/api/v1/payment/mpesa-stk-push/",
        "query": "a=%20",
    }


@pytest.fixture
async def by_query(aiohttp_client: AiohttpClient) -> Client:
    """A generic peer that wants the query parameter ``api_key`` to be ``k 1``."""
    return await aiohttp_client(make_app(ApiKeyPeerConfig(query_param=("api_key", "k 1"))))


@pytest.mark.parametrize(
    ("query", "status"),
    [("api_key=k%201", 200), ("api_key=k+1", 200), ("", 401), ("api_key=k", 401)],
)
async def test_query_param_key(by_query: Client, query: str, status: int) -> None:
    """The query value is compared after URL decoding; missing or wrong is 401."""
    got, _ = await call(by_query, f"/anything?{query}", {})
    assert got == status


async def test_query_param_twice_refused(by_query: Client) -> None:
    """A key given twice is ambiguous and refused."""
    got, _ = await call(by_query, "/x?api_key=k%201&api_key=k%201", {})
    assert got == 401


def test_config_requires_something() -> None:
    """A peer that checks nothing is a configuration error."""
    with pytest.raises(ValidationError):
        ApiKeyPeerConfig()
