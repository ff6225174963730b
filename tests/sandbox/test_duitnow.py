"""The DuitNow-style verifier: tokens made here with jwcrypto (not the sidecar), and what an
attacker sends: alg confusion, tampered bodies, replays, foreign parties, stale and far exp."""

from __future__ import annotations

import base64
import json
import time
import uuid
from functools import cache
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwk, jws
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient

from sidecar.sandbox.duitnow import DUITNOW_STATE, DuitNowConfig, make_app, remember_jti

Client = TestClient[web.Request, web.Application]
BODY = {"amount": "10.00", "merchant": {"productId": "P1"}}


@cache
def keypair(n: int = 0) -> jwk.JWK:
    """RSA 2048 key pairs made once per run (n tells them apart)."""
    return jwk.JWK.generate(kty="RSA", size=2048, kid=str(n))


def public_pem(key: jwk.JWK) -> str:
    return str(key.export_to_pem().decode())


def claims(**over: Any) -> dict[str, Any]:
    base = {
        "exp": int(time.time()) + 300,
        "iss": "acq-1",
        "sub": "m-1",
        "jti": str(uuid.uuid4()),
        "key": "k-2026",
        "data": BODY,
    }
    return {k: v for k, v in {**base, **over}.items() if v is not None}


def token(payload: dict[str, Any], key: jwk.JWK | None = None, alg: str = "RS256") -> str:
    signer = jws.JWS(json.dumps(payload).encode())
    signer.add_signature(key or keypair(), alg=alg, protected={"alg": alg, "typ": "JWT"})
    return str(signer.serialize(compact=True))


@pytest.fixture
async def peer(aiohttp_client: AiohttpClient) -> Client:
    cfg = DuitNowConfig(
        public_key=public_pem(keypair()), issuer="acq-1", merchants=["m-1"], key_name="k-2026"
    )
    return await aiohttp_client(make_app(cfg))


async def call(client: Client, tok: str | None, body: Any = BODY, **kw: Any) -> tuple[int, Any]:
    headers = {} if tok is None else {"Authorization": f"Bearer {tok}"}
    data = kw.pop("raw", None)
    if data is None and body is not None:
        data = json.dumps(body).encode()
    method = "POST" if data is not None else "GET"
    async with client.request(method, "/v1/payment-intents", headers=headers, data=data) as resp:
        return resp.status, await resp.json()


async def test_a_correct_token_is_accepted_and_the_intent_answered(peer: Client) -> None:
    """A jwcrypto-made RS256 token over the exact body is accepted."""
    status, answer = await call(peer, token(claims()))
    assert status == 200 and answer["status"] == "PENDING" and answer["merchant"] == "m-1"
    assert peer.app[DUITNOW_STATE].accepted == 1


async def test_get_without_body_needs_no_data(peer: Client) -> None:
    """No body, no data claim: accepted; a data claim without a body is a mismatch."""
    assert (await call(peer, token(claims(data=None)), body=None))[0] == 200
    assert (await call(peer, token(claims()), body=None))[1] == {"error": "data_mismatch"}


def hs256_with_public_key() -> str:
    """The classic confusion: HMAC keyed by the public key's PEM, alg HS256."""
    secret = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public_pem(keypair()).encode()).decode())
    return token(claims(), secret, "HS256")


def alg_none() -> str:
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none'})}.{b64(claims())}."


@pytest.mark.parametrize(
    "make_token,body,error",
    [
        (lambda: None, BODY, "missing_token"),
        (lambda: "not.a.jwt", BODY, "invalid_token"),
        (lambda: token(claims(), keypair(1)), BODY, "invalid_token"),
        (hs256_with_public_key, BODY, "invalid_token"),
        (alg_none, BODY, "invalid_token"),
        (lambda: token(claims(), alg="PS256"), BODY, "invalid_token"),
        (lambda: token(claims(exp=None)), BODY, "invalid_token"),
        (lambda: token(claims(jti=None)), BODY, "invalid_token"),
        (lambda: token(claims(exp=int(time.time()) - 120)), BODY, "expired"),
        (lambda: token(claims(exp="9999999999")), BODY, "expired"),
        (lambda: token(claims(exp=int(time.time()) + 86400)), BODY, "exp_too_far"),
        (lambda: token(claims(iss="acq-2")), BODY, "unknown_issuer"),
        (lambda: token(claims(sub="m-2")), BODY, "unknown_merchant"),
        (lambda: token(claims(key="k-2025")), BODY, "wrong_key"),
        (lambda: token(claims(jti="1234")), BODY, "invalid_jti"),
        (lambda: token(claims(jti=str(uuid.uuid1()))), BODY, "invalid_jti"),
        (lambda: token(claims()), {**BODY, "amount": "9999.00"}, "data_mismatch"),
        (lambda: token(claims(data=json.dumps(BODY))), BODY, "data_mismatch"),
    ],
    ids=[
        "no-token", "garbage", "other-key", "hs256-confusion", "alg-none", "ps256-not-allowed",
        "no-exp", "no-jti", "expired", "exp-string", "exp-far", "issuer", "merchant", "key-name",
        "jti-not-uuid", "jti-uuid1", "tampered-body", "data-as-string",
    ],
)  # fmt: skip
async def test_refusals(peer: Client, make_token: Any, body: Any, error: str) -> None:
    """Each broken or hostile token is a 401 naming the check that failed."""
    status, answer = await call(peer, make_token(), body)
    assert (status, answer) == (401, {"error": error})
    assert peer.app[DUITNOW_STATE].errors[error] == 1


async def test_non_json_body_is_a_data_mismatch(peer: Client) -> None:
    """A body that is not JSON cannot equal any data claim."""
    assert (await call(peer, token(claims()), raw=b"amount=10"))[1] == {"error": "data_mismatch"}


async def test_a_replayed_jti_is_refused_after_the_signature(peer: Client) -> None:
    """The same token twice: the second is replayed_jti; an unsigned copy burns nothing."""
    jti = str(uuid.uuid4())
    forged = token(claims(jti=jti), keypair(1))
    assert (await call(peer, forged))[1] == {"error": "invalid_token"}
    tok = token(claims(jti=jti))
    assert (await call(peer, tok))[0] == 200
    assert (await call(peer, tok))[1] == {"error": "replayed_jti"}


def test_key_type_must_fit_the_algorithms() -> None:
    """An EC key for RS256 (or a mix of families) is a config error, not a silent 401."""
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="must fit"):
        make_app(DuitNowConfig(public_key=ec_pem, issuer="i", merchants=["m"]))
    rsa_pem = public_pem(keypair())
    with pytest.raises(ValueError, match="must fit"):
        make_app(
            DuitNowConfig(
                public_key=rsa_pem, issuer="i", merchants=["m"], algorithms=["RS256", "ES256"]
            )
        )
    make_app(DuitNowConfig(public_key=ec_pem, issuer="i", merchants=["m"], algorithms=["ES256"]))
    with pytest.raises(ValidationError):
        DuitNowConfig(public_key=rsa_pem, issuer="i", merchants=["m"], algorithms=["HS256"])


async def test_expired_jtis_are_forgotten(peer: Client) -> None:
    """The replay memory is bounded by exp: a jti whose token expired is dropped on the next call."""
    state = peer.app[DUITNOW_STATE]
    remember_jti(state, {"jti": "old", "exp": time.time() - 3600})
    assert "old" in state.jtis
    assert (await call(peer, token(claims())))[0] == 200
    assert set(state.jtis) == {state.expiry[0][1]} and len(state.expiry) == 1
