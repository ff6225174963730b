"""JWS signing: tokens checked by an independent JOSE implementation (jwcrypto), claims,
headers, body refusals, key checks at verify, the per-version key cache, and the probe."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk
from jwcrypto import jws as jjws
from pydantic import ValidationError
from yarl import URL

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.sandbox import duitnow
from sidecar.sandbox.duitnow import DUITNOW_STATE
from sidecar.schemes.base import Credential, OutboundRequest, UpstreamContext
from sidecar.schemes.jws import Jws, JwsOptions
from sidecar.schemes.registry import build_scheme
from tests.unit.conftest import credential, outbound

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
CTX = UpstreamContext(name="duitnow", url=URL("https://duitnow.test"))
NOW = 1_700_000_000.7
FIELDS = {"issuer": "acq-1", "subject": "merchant-9", "key_id": "key-2026"}
BODY = b'{"amount": "10.00", "merchant": {"productId": "P1"}, "n": [1, 2.5, null, true]}'


@cache
def private_key(kind: str) -> Any:
    """Keys made once per test run: rsa2048, rsa1024, p256, p384, ed25519; a "b" suffix is
    a second key of the same kind."""
    if kind.endswith("b"):
        return private_key.__wrapped__(kind[:-1])
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1() if kind == "p256" else ec.SECP384R1())


def pem(kind: str, password: bytes | None = None) -> str:
    encryption: Any = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    raw = private_key(kind).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return str(raw.decode())


def public_pem(kind: str) -> str:
    raw = (
        private_key(kind)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(raw.decode())


def cred(kind: str = "rsa2048", version: int = 1, **fields: str) -> Credential:
    return credential({**FIELDS, **fields}, {"private_key": pem(kind)}, version=version)


def make(upstream: UpstreamContext = CTX, **options: Any) -> Jws:
    scheme = Jws(JwsOptions.model_validate(options), upstream)
    scheme.clock = lambda: NOW
    return scheme


async def sign(scheme: Jws, request: OutboundRequest, c: Credential) -> OutboundRequest:
    flow = scheme.auth_flow(request, c)
    sent = await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.__anext__()
    return sent


def verified(token: str, kind: str, alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(protected header, claims) of a token verified by jwcrypto, not by PyJWT."""
    checker = jjws.JWS()
    checker.deserialize(token, key=jwk.JWK.from_pem(public_pem(kind).encode()), alg=alg)
    return dict(checker.jose_header), json.loads(checker.payload)


@pytest.mark.parametrize(
    "alg,kind", [("RS256", "rsa2048"), ("PS256", "rsa2048"), ("ES256", "p256")]
)
async def test_each_algorithm_verifies_with_jwcrypto(alg: str, kind: str) -> None:
    """RS256, PS256 and ES256 tokens verify with jwcrypto and the key's public half."""
    scheme = make(preset="paynet_duitnow", algorithm=alg)
    sent = await sign(scheme, outbound("POST", body=BODY), cred(kind))
    scheme_name, token = sent.headers["Authorization"].split(" ")
    header, claims = verified(token, kind, alg)
    assert scheme_name == "Bearer" and header["alg"] == alg and "kid" not in header
    assert claims["data"] == json.loads(BODY)
    with pytest.raises(jjws.InvalidJWSSignature):
        verified(token, kind + "b", alg)  # another key of the same kind does not verify it


async def test_paynet_duitnow_claims_are_the_documented_ones() -> None:
    """exp = now+300, iss = issuer, sub = subject, jti a fresh UUIDv4, key = key_id, data = body."""
    scheme = make(preset="paynet_duitnow")
    first = await sign(scheme, outbound("POST", body=BODY), cred())
    second = await sign(scheme, outbound("POST", body=BODY), cred())
    _, claims = verified(first.headers["Authorization"][7:], "rsa2048", "RS256")
    _, again = verified(second.headers["Authorization"][7:], "rsa2048", "RS256")
    assert set(claims) == {"exp", "iss", "sub", "jti", "key", "data"}
    assert claims["exp"] == 1_700_000_300 and isinstance(claims["exp"], int)
    assert (claims["iss"], claims["sub"], claims["key"]) == ("acq-1", "merchant-9", "key-2026")
    assert uuid.UUID(claims["jti"]).version == 4 and claims["jti"] != again["jti"]
    assert scheme.requires_request_body and scheme.optional_fields == ()
    assert scheme.secret_fields == ("private_key",)


async def test_custom_template_literals_text_and_body_hash() -> None:
    """Literals stay typed, text templates render as strings, braces escape, hashes are hex."""
    claims = {
        "iat": "{now}",
        "ver": 2,
        "flags": {"live": False},
        "aud": "payments",
        "tag": "{issuer}/{subject}@{now}",
        "lit": "{{not a placeholder}}",
        "h": "{body_sha256}",
    }
    scheme = make(algorithm="ES256", claims=claims, kid=True)
    sent = await sign(scheme, outbound("POST", body=b"not json at all"), cred("p256"))
    header, got = verified(sent.headers["Authorization"][7:], "p256", "ES256")
    assert got == {
        "iat": 1_700_000_000,
        "ver": 2,
        "flags": {"live": False},
        "aud": "payments",
        "tag": "acq-1/merchant-9@1700000000",
        "lit": "{not a placeholder}",
        "h": hashlib.sha256(b"not json at all").hexdigest(),
    }
    assert header["kid"] == "key-2026"
    assert scheme.optional_fields == () and scheme.requires_request_body


async def test_header_and_prefix_are_configurable_and_fields_optional() -> None:
    """The JWS goes into the configured header with the configured prefix; unused fields optional."""
    scheme = make(header="X-JWS-Signature", prefix="", claims={"jti": "{uuid4}"})
    sent = await sign(scheme, outbound("GET"), credential({}, {"private_key": pem("rsa2048")}))
    assert "Authorization" not in sent.headers
    header, claims = verified(sent.headers["X-JWS-Signature"], "rsa2048", "RS256")
    assert set(claims) == {"jti"} and "kid" not in header
    assert scheme.optional_fields == ("issuer", "subject", "key_id")
    assert not scheme.requires_request_body


async def test_no_body_leaves_data_out() -> None:
    """A request without a body carries no data claim (the peer expects none)."""
    scheme = make(preset="paynet_duitnow")
    sent = await sign(scheme, outbound("GET"), cred())
    _, claims = verified(sent.headers["Authorization"][7:], "rsa2048", "RS256")
    assert "data" not in claims


@pytest.mark.parametrize(
    "body",
    [
        b"amount=10",
        b'{"a": 1',
        b'{"a": NaN}',
        b'{"a": 1, "a": 2}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe\x00",
    ],
    ids=["form", "truncated", "nan", "duplicate-key", "deep", "binary"],
)
async def test_body_that_is_not_json_is_refused_before_sending(body: bytes) -> None:
    """{body_json} over a body that is not one unambiguous JSON value: SC4055, nothing yielded."""
    scheme = make(preset="paynet_duitnow")
    flow = scheme.auth_flow(outbound("POST", body=body), cred())
    with pytest.raises(SidecarError) as caught:
        await flow.__anext__()
    assert caught.value.code == "SC4055" and caught.value.status == 400


async def test_a_token_over_max_token_bytes_is_refused() -> None:
    """A body that would make the header larger than max_token_bytes: SC4056 (413)."""
    scheme = make(preset="paynet_duitnow", max_token_bytes=2048)
    await sign(scheme, outbound("POST", body=b'{"a": "' + b"x" * 500 + b'"}'), cred())
    big = b'{"a": "' + b"x" * 4000 + b'"}'
    with pytest.raises(SidecarError) as caught:
        await sign(scheme, outbound("POST", body=big), cred())
    assert caught.value.code == "SC4056" and caught.value.status == 413


async def test_key_parsed_once_per_version_and_old_versions_dropped() -> None:
    """Three requests parse the PEM once; version 2 parses again and evicts version 1."""
    scheme = make(preset="paynet_duitnow")
    for _ in range(3):
        await sign(scheme, outbound("POST", body=b"{}"), cred(version=1))
    assert scheme.keys.parses == 1 and len(scheme.keys) == 1
    sent = await sign(scheme, outbound("POST", body=b"{}"), cred("rsa2048", version=2))
    verified(sent.headers["Authorization"][7:], "rsa2048", "RS256")
    assert scheme.keys.parses == 2 and len(scheme.keys) == 1


async def test_same_version_with_another_pem_is_parsed_again() -> None:
    """A cache hit needs the same PEM: a re-created credential never signs with the old key."""
    scheme = make(algorithm="RS256")
    c1 = credential(FIELDS, {"private_key": pem("rsa2048")}, version=1)
    c2 = credential(FIELDS, {"private_key": pem("rsa1024")}, version=1)
    await sign(scheme, outbound(), c1)
    with pytest.raises(SidecarError) as caught:
        await sign(scheme, outbound(), c2)
    assert caught.value.code == "SC4057"


async def test_key_cache_is_bounded() -> None:
    """More credentials than the cache holds: the oldest entries go."""
    scheme = make()
    scheme.keys.size = 3
    for i in range(5):
        c = credential(FIELDS, {"private_key": pem("rsa2048")}, name=f"c{i}")
        await sign(scheme, outbound(), c)
    assert len(scheme.keys) == 3 and scheme.keys.parses == 5


@pytest.mark.parametrize(
    "alg,secret,code",
    [
        ("RS256", lambda: pem("rsa1024"), "SC2014"),
        ("PS256", lambda: pem("p256"), "SC2014"),
        ("RS256", lambda: pem("ed25519"), "SC2014"),
        ("ES256", lambda: pem("rsa2048"), "SC2014"),
        ("ES256", lambda: pem("p384"), "SC2014"),
        ("RS256", lambda: public_pem("rsa2048"), "SC2016"),
        ("RS256", lambda: pem("rsa2048", b"passphrase-1"), "SC2015"),
        (
            "RS256",
            lambda: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "SC2013",
        ),
        ("RS256", lambda: "not a key", "SC2013"),
    ],
    ids=[
        "rsa-1024",
        "ec-for-ps256",
        "ed25519",
        "rsa-for-es256",
        "p384",
        "public",
        "encrypted",
        "bad-der",
        "garbage",
    ],
)
async def test_verify_refuses_keys_that_do_not_fit(alg: str, secret: Any, code: str) -> None:
    """Wrong type, curve or size, a public key, an encrypted or unreadable PEM: 422 with a code,
    and the message quotes nothing of the key."""
    value = secret()
    scheme = make(algorithm=alg, claims={"jti": "{uuid4}"})
    async with aiohttp.ClientSession() as http:
        with pytest.raises(SidecarError) as caught:
            await scheme.verify(credential({}, {"private_key": value}), http)
    assert caught.value.code == code and caught.value.status == 422
    body = json.dumps(caught.value.body())
    lines = [line for line in value.splitlines() if line and "-----" not in line]
    assert not any(line in body or line[:16] in body for line in lines)
    with pytest.raises(SidecarError) as at_send:
        await sign(scheme, outbound(), credential({}, {"private_key": value}))
    assert at_send.value.code == "SC4057" and value not in str(at_send.value)


async def test_verify_accepts_fitting_keys_without_a_probe() -> None:
    """A 2048-bit RSA key for RS256/PS256 and a P-256 key for ES256 pass verify."""
    async with aiohttp.ClientSession() as http:
        for alg, kind in (("RS256", "rsa2048"), ("PS256", "rsa2048"), ("ES256", "p256")):
            await make(algorithm=alg).verify(cred(kind), http)


@pytest.mark.parametrize(
    "options,error",
    [
        ({"claims": {"x": "{password}"}}, "unknown placeholder"),
        ({"claims": {"x": "{now-5}"}}, "unknown placeholder"),
        ({"claims": {"x": "data={body_json}"}}, "must be the whole value"),
        ({"claims": {"x": "{now!r}"}}, "no format spec"),
        ({"claims": {"iss": 3}}, "claims.iss: must be a string"),
        ({"claims": {"sub": "{now}"}}, "claims.sub: must be a string"),
        ({"claims": {"jti": "{body_json}"}}, "claims.jti: must be a string"),
        ({"claims": {"exp": "{issuer}"}}, "claims.exp: must be a number"),
        ({"claims": {"iat": True}}, "claims.iat: must be a number"),
        ({"claims": {"when": datetime.date(2026, 1, 1)}}, "JSON values"),
        ({"claims": {"x": float("nan")}}, "JSON values"),
        ({"header": "Bad Header:"}, "HTTP header name"),
        ({"prefix": "Bearer\r\nX: y"}, "control characters"),
        ({"algorithm": "HS256"}, "algorithm"),
        ({"algorithm": "none"}, "algorithm"),
        ({"min_rsa_bits": 1024}, "min_rsa_bits"),
        ({"preset": "nope"}, "preset"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_options_are_validated(options: dict[str, Any], error: str) -> None:
    """Bad templates, header names, algorithms (no HMAC, no none) fail at config load."""
    with pytest.raises(ValidationError, match=error):
        JwsOptions.model_validate(options)


def test_options_override_the_preset_and_every_option_is_described() -> None:
    """An option beside the preset wins; the JSON Schema describes every option."""
    opts = JwsOptions.model_validate({"preset": "paynet_duitnow", "algorithm": "PS256"})
    assert opts.algorithm == "PS256" and opts.claims["data"] == "{body_json}"
    properties = JwsOptions.model_json_schema()["properties"].values()
    assert all(p.get("description") for p in properties)
    scheme = build_scheme([("jws", opts)], CTX)
    assert isinstance(scheme, Jws)


def peer(kind: str = "rsa2048") -> web.Application:
    cfg = duitnow.DuitNowConfig(
        public_key=public_pem(kind), issuer="acq-1", merchants=["merchant-9"], key_name="key-2026"
    )
    return duitnow.make_app(cfg)


@pytest.mark.parametrize("registered,valid", [("rsa2048", True), ("rsa2048b", False)])
async def test_verify_runs_the_signed_probe(
    aiohttp_server: ServerFactory, registered: str, valid: bool
) -> None:
    """With a probe the DuitNow peer judges the token: accepted passes, 401 is VerificationFailed."""
    app = peer(registered)
    server = await aiohttp_server(app)
    ctx = UpstreamContext(name="duitnow", url=server.make_url("/"))
    scheme = Jws(
        JwsOptions.model_validate(
            {"preset": "paynet_duitnow", "probe": {"path": "/v1/merchant", "ok": [200]}}
        ),
        ctx,
    )
    async with aiohttp.ClientSession() as http:
        if valid:
            await scheme.verify(cred(), http)
        else:
            with pytest.raises(VerificationFailed, match="duitnow - API Invalid credential"):
                await scheme.verify(cred(), http)
    state = app[DUITNOW_STATE]
    assert (state.accepted, state.rejected) == ((1, 0) if valid else (0, 1))
    assert state.errors.get("invalid_token", 0) == (0 if valid else 1)
