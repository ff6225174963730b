"""The PlaceToPay emulator: published vectors, every documented auth code, sessions."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sidecar.sandbox.placetopay import (
    PLACETOPAY_STATE,
    PlaceToPayConfig,
    SiteConfig,
    expected_tran_key,
    make_app,
)

LOGIN = "site-login"
SECRET = "site-Secret-Key-1"
PAYMENT = {"reference": "ORDER-1", "description": "Test", "amount": {"currency": "COP", "total": 1}}
Client = TestClient[web.Request, web.Application]


def seed_at(offset: timedelta = timedelta(0), tz: timezone = UTC) -> str:
    return (datetime.now(UTC) + offset).astimezone(tz).isoformat(timespec="seconds")


def make_auth(
    login: str = LOGIN,
    secret: str = SECRET,
    seed: str | None = None,
    raw_nonce: bytes | None = None,
    algo: str = "sha256",
) -> dict[str, str]:
    """An ``auth`` object computed here, independently of the emulator."""
    seed = seed or seed_at()
    raw_nonce = raw_nonce or secrets.token_hex(8).encode()
    digest = hashlib.new(algo, raw_nonce + seed.encode() + secret.encode()).digest()
    return {
        "login": login,
        "tranKey": base64.b64encode(digest).decode(),
        "nonce": base64.b64encode(raw_nonce).decode(),
        "seed": seed,
    }


def config(**overrides: Any) -> PlaceToPayConfig:
    sites = {
        LOGIN: SiteConfig(secret_key=SECRET),
        "other-site": SiteConfig(secret_key="other-secret"),
        "sleepy-site": SiteConfig(secret_key="sleepy-secret", active=False),
    }
    return PlaceToPayConfig(sites=sites, **overrides)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    """A client for an emulator with an active, a second and an inactive site."""
    return await aiohttp_client(make_app(config()))


async def post(client: Client, path: str, body: Any) -> tuple[int, Any]:
    async with client.post(path, json=body) as resp:
        return resp.status, await resp.json()


async def auth_code(client: Client, auth: Any) -> int:
    """The PlaceToPay code from a 401 (0 when the request was accepted)."""
    status, body = await post(client, "/api/session", {"auth": auth, "payment": PAYMENT})
    if status == 200:
        return 0
    assert status == 401
    return int(body["status"]["message"].rsplit(" ", 1)[1])


def test_published_sha256_vector() -> None:
    """The documented SHA-256 tranKey for secretKey ABCD1234 is reproduced."""
    key = expected_tran_key(b"ifYEPnAcJbpDVR1t", "2016-10-26T21:37:00+00:00", "ABCD1234", "sha256")
    assert key == "NDlpEEAIe8sbKZ6mGWQrZwbyBB62J1LcyP/a/o7LRqY="
    assert base64.b64encode(b"ifYEPnAcJbpDVR1t").decode() == "aWZZRVBuQWNKYnBEVlIxdA=="


def test_published_sha1_vectors() -> None:
    """The SHA-1 vectors from dnetix/redirection and PlaceToPay's own docs are reproduced."""
    key = expected_tran_key(b"ifYEPnAcJbpDVR1t", "2016-10-26T21:37:00+00:00", "ABCD1234", "sha1")
    assert key == "Xi5xrRwrqPU21WE2JI4hyMaCvQ8="
    raw = b"c9085e82debb82b0955579098be3d7ca"
    key = expected_tran_key(raw, "2019-04-25T18:17:23-04:00", "ABCD1234", "sha1")
    assert key == "T0O+x3gNlQUf0iBxEuenPvBPlWs="


def test_unknown_hash_refused() -> None:
    """Only the two documented hashes exist; md5 is an error, not a silent third option."""
    with pytest.raises(ValueError):
        expected_tran_key(b"n", "seed", "key", "md5")


async def test_create_session_accepted(client: Client) -> None:
    """A correctly signed create answers OK/PC with a requestId and a processUrl."""
    status, body = await post(client, "/api/session", {"auth": make_auth(), "payment": PAYMENT})
    assert status == 200
    assert body["status"]["status"] == "OK" and body["status"]["reason"] == "PC"
    assert isinstance(body["requestId"], int)
    assert f"/session/{body['requestId']}/" in body["processUrl"]
    state = client.app[PLACETOPAY_STATE]
    assert (state.accepted, state.rejected) == (1, 0)
    assert b'"tranKey"' in state.seen[-1].body


async def test_seed_in_another_time_zone_accepted(client: Client) -> None:
    """A seed in local time with its offset (PHP's date('c')) is the same instant."""
    seed = seed_at(tz=timezone(timedelta(hours=-5)))
    assert seed.endswith("-05:00")
    assert await auth_code(client, make_auth(seed=seed)) == 0


async def test_query_own_session(client: Client) -> None:
    """Querying a session returns what was created, without the auth block."""
    _, created = await post(client, "/api/session", {"auth": make_auth(), "payment": PAYMENT})
    request_id = created["requestId"]
    status, body = await post(client, f"/api/session/{request_id}", {"auth": make_auth()})
    assert status == 200
    assert body["requestId"] == request_id
    assert body["status"]["status"] == "PENDING"
    assert body["request"] == {"payment": PAYMENT}


async def test_query_unknown_or_foreign_session_is_404(client: Client) -> None:
    """An unknown requestId, or another site's, is 404 FAILED "does not exist"."""
    _, created = await post(client, "/api/session", {"auth": make_auth(), "payment": PAYMENT})
    other = make_auth(login="other-site", secret="other-secret")
    for path, auth in [
        ("/api/session/999999", make_auth()),
        (f"/api/session/{created['requestId']}", other),
    ]:
        status, body = await post(client, path, {"auth": auth})
        assert status == 404
        assert body["status"]["status"] == "FAILED"
        assert body["status"]["message"] == "The requested session does not exist"


async def test_create_without_payment_is_400(client: Client) -> None:
    """Authentication passes but a session needs a payment."""
    status, body = await post(client, "/api/session", {"auth": make_auth()})
    assert status == 400 and body["status"]["status"] == "FAILED"


async def test_collect_approves(client: Client) -> None:
    """A collect with payment and instrument is approved and can be queried."""
    body = {"auth": make_auth(), "payment": PAYMENT, "instrument": {"token": {"token": "t"}}}
    status, collected = await post(client, "/api/collect", body)
    assert status == 200 and collected["status"]["status"] == "APPROVED"
    _, queried = await post(client, f"/api/session/{collected['requestId']}", {"auth": make_auth()})
    assert queried["status"]["status"] == "APPROVED"


async def test_failure_body_shape(client: Client) -> None:
    """A 401 is exactly the documented status object, dated with an offset."""
    status, body = await post(client, "/api/session", {"auth": make_auth(secret="wrong")})
    assert status == 401
    assert set(body) == {"status"}
    assert {k: v for k, v in body["status"].items() if k != "date"} == {
        "status": "FAILED",
        "reason": 401,
        "message": "Authentication failed 102",
    }
    assert datetime.fromisoformat(body["status"]["date"]).tzinfo is not None


MALFORMED: list[Any] = [
    None,
    "auth",
    [],
    {"login": LOGIN},
    {"login": LOGIN, "tranKey": "x", "nonce": "bm9uY2U=", "seed": 5},
    {"login": "", "tranKey": "x", "nonce": "bm9uY2U=", "seed": "2020-01-01T00:00:00+00:00"},
    {"login": LOGIN, "tranKey": "x", "nonce": "not base64!", "seed": seed_at()},
]


@pytest.mark.parametrize("auth", MALFORMED)
async def test_malformed_auth_is_100(client: Client, auth: Any) -> None:
    """A missing, partial, non-string or non-Base64 auth is code 100."""
    assert await auth_code(client, auth) == 100


@pytest.mark.parametrize("drop", ["login", "tranKey", "nonce", "seed"])
async def test_each_missing_field_is_100(client: Client, drop: str) -> None:
    """Each of the four fields is required."""
    auth = make_auth()
    del auth[drop]
    assert await auth_code(client, auth) == 100


async def test_non_json_content_type_is_100(client: Client) -> None:
    """A JSON body sent as text/plain is "Malformed authentication", as the docs warn."""
    data = json.dumps({"auth": make_auth(), "payment": PAYMENT})
    async with client.post("/api/session", data=data, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 401
        assert (await r.json())["status"]["message"] == "Authentication failed 100"


async def test_body_not_json_object_is_100(client: Client) -> None:
    """Unparseable JSON and a top-level array are both malformed."""
    headers = {"Content-Type": "application/json"}
    for data in ("{not json", "[1, 2]"):
        async with client.post("/api/session", data=data, headers=headers) as resp:
            assert (await resp.json())["status"]["message"] == "Authentication failed 100"


async def test_unknown_login_is_101(client: Client) -> None:
    """A login no site has is 101."""
    assert await auth_code(client, make_auth(login="nobody")) == 101


async def test_wrong_secret_is_102(client: Client) -> None:
    """A tranKey made with the wrong secret is 102."""
    assert await auth_code(client, make_auth(secret="not-the-secret")) == 102


async def test_wrong_hash_is_102(client: Client) -> None:
    """A SHA-1 tranKey sent to a SHA-256 site does not match."""
    assert await auth_code(client, make_auth(algo="sha1")) == 102


async def test_sha1_site_accepts_sha1(aiohttp_client: AiohttpClient) -> None:
    """With hash=sha1 the emulator verifies like older SDKs sign, and refuses SHA-256."""
    client = await aiohttp_client(make_app(config(hash="sha1")))
    assert await auth_code(client, make_auth(algo="sha1")) == 0
    assert await auth_code(client, make_auth(algo="sha256")) == 102


@pytest.mark.parametrize("minutes", [-6, 6])
async def test_seed_outside_window_is_103(client: Client, minutes: int) -> None:
    """A seed more than five minutes in the past or the future is 103."""
    assert await auth_code(client, make_auth(seed=seed_at(timedelta(minutes=minutes)))) == 103


@pytest.mark.parametrize("minutes", [-4, 4])
async def test_seed_inside_window_accepted(client: Client, minutes: int) -> None:
    """Four minutes of clock skew either way is tolerated."""
    assert await auth_code(client, make_auth(seed=seed_at(timedelta(minutes=minutes)))) == 0


async def test_inactive_site_is_104(client: Client) -> None:
    """A correctly signed request for an inactive site is 104."""
    assert await auth_code(client, make_auth(login="sleepy-site", secret="sleepy-secret")) == 104


@pytest.mark.parametrize("seed", ["yesterday", "2024-13-45T99:00:00+00:00", "2024-05-01T10:00:00"])
async def test_bad_seed_is_107(client: Client, seed: str) -> None:
    """A seed that is not ISO 8601 with an offset is 107 (bad UsernameToken)."""
    assert await auth_code(client, make_auth(seed=seed)) == 107


async def test_tran_key_checked_before_seed_age(client: Client) -> None:
    """Stale and wrongly signed is 102: only a caller with the secret learns about time."""
    stale = seed_at(timedelta(minutes=-10))
    assert await auth_code(client, make_auth(secret="wrong", seed=stale)) == 102


async def test_reused_nonce_is_102(client: Client) -> None:
    """The same nonce twice for one login is refused and counted as a replay."""
    auth = make_auth()
    assert await auth_code(client, auth) == 0
    assert await auth_code(client, auth) == 102
    state = client.app[PLACETOPAY_STATE]
    assert state.replays == 1 and state.codes[102] == 1


async def test_reused_nonce_allowed_when_configured(aiohttp_client: AiohttpClient) -> None:
    """reject_reused_nonce=False lets an identical auth through twice."""
    client = await aiohttp_client(make_app(config(reject_reused_nonce=False)))
    auth = make_auth()
    assert [await auth_code(client, auth), await auth_code(client, auth)] == [0, 0]


async def test_codes_counted(client: Client) -> None:
    """Each refusal is counted under its code, for assertions in integration tests."""
    await auth_code(client, make_auth(login="nobody"))
    await auth_code(client, make_auth(secret="x"))
    state = client.app[PLACETOPAY_STATE]
    assert dict(state.codes) == {101: 1, 102: 1} and state.rejected == 2
