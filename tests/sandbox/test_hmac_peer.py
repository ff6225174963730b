"""The HMAC verifier: PayNet preset, full templates, tolerance, replay, keys, config errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient

from sidecar.sandbox.hmac_peer import HMAC_STATE, HmacPeerConfig, make_app, paynet_reports

SECRET = "paynet-client-secret"
Client = TestClient[web.Request, web.Application]
FULL = "{method}\n{path}\n{query}\n{timestamp}\n{body_sha256}\n{nonce}"


def sign(secret: str, message: str, algo: str = "sha256", b64: bool = False) -> str:
    """Computed here, independently of the peer."""
    digest = hmac.new(secret.encode(), message.encode(), getattr(hashlib, algo)).digest()
    return base64.b64encode(digest).decode() if b64 else digest.hex()


def now() -> str:
    return str(int(time.time()))


async def call(
    client: Client, headers: dict[str, str], path: str = "/reports", **kw: Any
) -> tuple[int, Any]:
    method = kw.pop("method", "GET")
    async with client.request(method, path, headers=headers, **kw) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def paynet(aiohttp_client: AiohttpClient) -> Client:
    """The PayNet reports preset keyed by one client secret."""
    return await aiohttp_client(make_app(paynet_reports(SECRET)))


async def test_paynet_preset_accepts(paynet: Client) -> None:
    """X-Signature = hex HMAC-SHA256(secret, X-Timestamp) is accepted and echoed."""
    ts = now()
    status, body = await call(paynet, {"X-Timestamp": ts, "X-Signature": sign(SECRET, ts)})
    assert status == 200
    assert body == {"ok": True, "method": "GET", "path": "/reports", "query": "", "key_id": ""}
    assert paynet.app[HMAC_STATE].saw(sign(SECRET, ts))


@pytest.mark.parametrize("timestamp", [None, "abc", -400, 400])
async def test_stale_or_missing_timestamp(paynet: Client, timestamp: str | int | None) -> None:
    """Missing, non-numeric, or more than 300 s away either way is stale_timestamp."""
    # Offsets are applied now, not at collection: a long suite would otherwise age them.
    if isinstance(timestamp, int):
        timestamp = str(int(time.time()) + timestamp)
    headers = {} if timestamp is None else {"X-Timestamp": timestamp}
    ts = headers.get("X-Timestamp", "")
    headers["X-Signature"] = sign(SECRET, ts)
    assert await call(paynet, headers) == (401, {"error": "stale_timestamp"})


@pytest.mark.parametrize("skew", [-250, 250])
async def test_timestamp_inside_tolerance(paynet: Client, skew: int) -> None:
    """250 s of skew either way is inside the 300 s tolerance."""
    ts = str(int(time.time()) + skew)
    status, _ = await call(paynet, {"X-Timestamp": ts, "X-Signature": sign(SECRET, ts)})
    assert status == 200


def bad_signature(kind: str, ts: str) -> str | None:
    return {
        "absent": None,
        "empty": "",
        "other_key": sign("other-secret", ts),
        "upper_hex": sign(SECRET, ts).upper(),
    }[kind]


@pytest.mark.parametrize("kind", ["absent", "empty", "other_key", "upper_hex"])
async def test_bad_signature(paynet: Client, kind: str) -> None:
    """Absent, empty, wrong-key or upper-case-hex signatures are invalid_signature."""
    ts = now()
    headers = {"X-Timestamp": ts}
    signature = bad_signature(kind, ts)
    if signature is not None:
        headers["X-Signature"] = signature
    assert await call(paynet, headers) == (401, {"error": "invalid_signature"})
    assert paynet.app[HMAC_STATE].errors["invalid_signature"] == 1


def full_config(**overrides: Any) -> HmacPeerConfig:
    settings: dict[str, Any] = {
        "keys": {"key-1": "first-secret", "key-2": "second-secret"},
        "template": FULL,
        "algorithm": "sha512",
        "encoding": "base64",
        "signature_header": "Authorization",
        "signature_format": "HMAC {signature}",
        "nonce_header": "X-Nonce",
        "key_id_header": "X-Key-Id",
    }
    return HmacPeerConfig(**{**settings, **overrides})


@pytest.fixture
async def full(aiohttp_client: AiohttpClient) -> Client:
    """A peer signing method, raw path, raw query, timestamp, body hash and nonce."""
    return await aiohttp_client(make_app(full_config()))


def full_headers(
    method: str, path: str, query: str, body: bytes, key_id: str = "key-1", **kw: str
) -> dict[str, str]:
    ts, nonce = kw.get("ts", now()), kw.get("nonce", uuid.uuid4().hex)
    secret = {"key-1": "first-secret", "key-2": "second-secret"}.get(key_id, "x")
    message = "\n".join([method, path, query, ts, hashlib.sha256(body).hexdigest(), nonce])
    signature = sign(secret, message, "sha512", b64=True)
    return {
        "Authorization": f"HMAC {signature}",
        "X-Timestamp": ts,
        "X-Nonce": nonce,
        "X-Key-Id": key_id,
    }


async def test_full_template_accepts_raw_path_and_query(full: Client) -> None:
    """The raw percent-encoded path and query are what is signed, with a SHA-512 Base64."""
    path, query, body = "/v1/a%2Fb/c%20d", "x=1%2B2&y=", b'{"amount": 10}'
    headers = full_headers("POST", path, query, body)
    status, echo = await call(full, headers, f"{path}?{query}", method="POST", data=body)
    assert status == 200
    assert (echo["path"], echo["query"], echo["key_id"]) == (path, query, "key-1")


async def test_decoded_path_signature_refused(full: Client) -> None:
    """Signing the decoded path (a classic client bug) does not verify."""
    headers = full_headers("GET", "/v1/a/b/c d", "", b"")
    assert await call(full, headers, "/v1/a%2Fb/c%20d") == (401, {"error": "invalid_signature"})


async def test_empty_body_hashes_empty_bytes(full: Client) -> None:
    """A GET with no body signs sha256(b"")."""
    status, _ = await call(full, full_headers("GET", "/v1/x", "", b""), "/v1/x")
    assert status == 200


async def test_tampered_body_refused(full: Client) -> None:
    """A body changed after signing fails."""
    headers = full_headers("POST", "/v1/x", "", b'{"amount": 10}')
    result = await call(full, headers, "/v1/x", method="POST", data=b'{"amount": 99}')
    assert result == (401, {"error": "invalid_signature"})


async def test_second_key_by_id(full: Client) -> None:
    """The key named by X-Key-Id is the one used."""
    status, echo = await call(full, full_headers("GET", "/v1/x", "", b"", key_id="key-2"), "/v1/x")
    assert status == 200 and echo["key_id"] == "key-2"


async def test_unknown_key_id(full: Client) -> None:
    """An unknown key id is refused before anything else is computed."""
    headers = full_headers("GET", "/v1/x", "", b"", key_id="key-9")
    assert await call(full, headers, "/v1/x") == (401, {"error": "unknown_key"})


async def test_replayed_nonce(full: Client) -> None:
    """The same signed request twice: the second is replayed_nonce."""
    headers = full_headers("GET", "/v1/x", "", b"")
    assert (await call(full, headers, "/v1/x"))[0] == 200
    assert await call(full, headers, "/v1/x") == (401, {"error": "replayed_nonce"})
    assert (await call(full, full_headers("GET", "/v1/x", "", b""), "/v1/x"))[0] == 200


async def test_unsigned_nonce_not_burned(full: Client) -> None:
    """A badly signed request does not use up its nonce."""
    good = full_headers("GET", "/v1/x", "", b"", nonce="n-1")
    bad = {**good, "Authorization": "HMAC AAAA"}
    assert await call(full, bad, "/v1/x") == (401, {"error": "invalid_signature"})
    assert (await call(full, good, "/v1/x"))[0] == 200


async def test_missing_nonce(full: Client) -> None:
    """With nonce_header configured a request without it is refused."""
    headers = full_headers("GET", "/v1/x", "", b"")
    del headers["X-Nonce"]
    assert await call(full, headers, "/v1/x") == (401, {"error": "missing_nonce"})


async def test_signature_format_enforced(full: Client) -> None:
    """A valid signature under the wrong prefix is invalid_signature."""
    headers = full_headers("GET", "/v1/x", "", b"")
    headers["Authorization"] = headers["Authorization"].replace("HMAC ", "Bearer ")
    assert await call(full, headers, "/v1/x") == (401, {"error": "invalid_signature"})


async def test_keys_tried_without_key_id(aiohttp_client: AiohttpClient) -> None:
    """Without key_id_header any configured key may sign; the echo names which."""
    client = await aiohttp_client(make_app(HmacPeerConfig(keys={"a": "sa", "b": "sb"})))
    ts = now()
    status, echo = await call(client, {"X-Timestamp": ts, "X-Signature": sign("sb", ts)})
    assert status == 200 and echo["key_id"] == "b"


async def test_api_key_and_signature_both_required(aiohttp_client: AiohttpClient) -> None:
    """An Azupay HMAC-enabled key: the API key header and a signature are both needed."""
    cfg = HmacPeerConfig(secret="hmac-key", require_api_key={"Authorization": "SECR_KEY"})
    client = await aiohttp_client(make_app(cfg))
    ts = now()
    signed = {"X-Timestamp": ts, "X-Signature": sign("hmac-key", ts)}
    assert await call(client, signed) == (401, {"error": "invalid_api_key"})
    no_signature = {"Authorization": "SECR_KEY", "X-Timestamp": ts}
    assert await call(client, no_signature) == (401, {"error": "invalid_signature"})
    assert (await call(client, {**signed, "Authorization": "SECR_KEY"}))[0] == 200


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"secret": "s", "template": "{timestamp}{nonce}"},
        {"secret": "s", "template": "{timestamp}{host}"},
        {"secret": "s", "template": "{timestamp!r}"},
        {"secret": "s", "signature_format": "HMAC"},
        {"secret": "s", "key_id_header": "X-Key-Id"},
    ],
)
def test_config_errors(settings: dict[str, Any]) -> None:
    """No key, {nonce} without a header, unknown placeholders, bad formats are refused."""
    with pytest.raises(ValidationError):
        HmacPeerConfig(**settings)
