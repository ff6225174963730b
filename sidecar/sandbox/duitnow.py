"""A DuitNow Pay-style API: every request needs an RS256 JWT signed by the acquirer's key.

PayNet's DuitNow Pay docs (API Authentication) say the acquirer registers the public key of an
RS256 key pair and signs each request's JWT with claims ``exp``, ``iss`` (client/acquirer id),
``sub`` (merchant id), ``jti`` (UUIDv4), ``key`` (merchant key name) and ``data`` (the request
payload), sent in ``Authorization``. This peer holds only the public key and checks, in order,
each refusal a 401 with ``{"error": ...}``:

``missing_token`` (no ``Authorization: Bearer``), ``invalid_token`` (malformed, another
``alg``, or a signature that the public key does not verify), ``expired`` (``exp`` missing or
past), ``exp_too_far`` (``exp`` more than ``max_lifetime`` ahead: a long-lived token could be
replayed once its ``jti`` is forgotten), ``unknown_issuer``, ``unknown_merchant``,
``wrong_key`` (``key`` is not the registered key name), ``invalid_jti`` (not a UUIDv4),
``data_mismatch`` (``data`` is not the request body's JSON value, or present without a body),
``replayed_jti`` (checked last, so nobody burns a jti they cannot sign).

``POST /v1/payment-intents`` answers like an intent was created; any other path (the probe's
``GET /v2/bw/banks``, DuitNow Pay's bank list, included) echoes what was verified.
"""

from __future__ import annotations

import heapq
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, ConfigDict, Field

from sidecar.sandbox.recording import PeerState, Refused, recorder, refusal, split_target

REQUIRED = ["exp", "iss", "sub", "jti"]
_NO_BODY = object()
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Alg = Literal["RS256", "PS256", "ES256"]


class DuitNowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(description="PEM of the acquirer's registered public key")
    issuer: str = Field(description="the client/acquirer id (iss)")
    merchants: list[str] = Field(min_length=1, description="merchant ids (sub) of this issuer")
    key_name: str | None = Field(None, description="merchant key name (key claim); None = any")
    algorithms: list[Alg] = Field(default_factory=lambda: list[Alg](["RS256"]), min_length=1)
    max_lifetime: float = Field(600, gt=0, description="seconds exp may lie ahead")
    leeway: float = Field(30, ge=0, description="clock skew allowed on exp")


@dataclass(kw_only=True)
class DuitNowState(PeerState):
    """Inspectable state: ``errors`` counts refusals by their ``error`` string."""

    config: DuitNowConfig
    key: PublicKey
    errors: Counter[str] = field(default_factory=Counter)
    jtis: dict[str, float] = field(default_factory=dict)
    expiry: list[tuple[float, str]] = field(default_factory=list)  # heap of (until, jti)


DUITNOW_STATE = web.AppKey("duitnow_state", DuitNowState)


def bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token:
        raise Refused("missing_token")
    return token


def decoded(token: str, state: DuitNowState) -> dict[str, Any]:
    """Signature, alg and the presence of the required claims; exp is judged separately."""
    options: Any = {"require": REQUIRED, "verify_exp": False, "verify_iat": False}
    try:
        return jwt.decode(token, state.key, algorithms=state.config.algorithms, options=options)
    except jwt.InvalidTokenError:
        raise Refused("invalid_token") from None


def check_times(claims: dict[str, Any], cfg: DuitNowConfig) -> None:
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp < now - cfg.leeway:
        raise Refused("expired")
    if exp > now + cfg.max_lifetime:
        raise Refused("exp_too_far")


def check_parties(claims: dict[str, Any], cfg: DuitNowConfig) -> None:
    if claims.get("iss") != cfg.issuer:
        raise Refused("unknown_issuer")
    if claims.get("sub") not in cfg.merchants:
        raise Refused("unknown_merchant")
    if cfg.key_name is not None and claims.get("key") != cfg.key_name:
        raise Refused("wrong_key")
    if not is_uuid4(claims.get("jti")):
        raise Refused("invalid_jti")


def is_uuid4(value: Any) -> bool:
    """A UUIDv4 in its canonical lower-case, hyphenated text form."""
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return False
    return parsed is not None and parsed.version == 4 and str(parsed) == value


def check_data(claims: dict[str, Any], body: bytes) -> None:
    """``data`` equals the body's JSON value (absent when there is no body)."""
    try:
        sent = json.loads(body) if body else _NO_BODY
    except ValueError:
        raise Refused("data_mismatch") from None
    if claims.get("data", _NO_BODY) != sent:
        raise Refused("data_mismatch")


def remember_jti(state: DuitNowState, claims: dict[str, Any]) -> None:
    """A jti is kept until its token expires (it could not be replayed after that); the heap
    makes forgetting cost O(log n) per request, not a scan of every remembered jti."""
    now = time.time()
    while state.expiry and state.expiry[0][0] < now:
        del state.jtis[heapq.heappop(state.expiry)[1]]
    if claims["jti"] in state.jtis:
        raise Refused("replayed_jti")
    until = float(claims["exp"]) + state.config.leeway
    state.jtis[claims["jti"]] = until
    heapq.heappush(state.expiry, (until, claims["jti"]))


async def verify(request: web.Request, state: DuitNowState) -> dict[str, Any]:
    """Run every check; returns the verified claims."""
    claims = decoded(bearer(request), state)
    check_times(claims, state.config)
    check_parties(claims, state.config)
    check_data(claims, await request.read())
    remember_jti(state, claims)
    return claims


async def handle(request: web.Request) -> web.Response:
    state = request.app[DUITNOW_STATE]
    try:
        claims = await verify(request, state)
    except Refused as exc:
        return refusal(state, state.errors, exc)
    state.accepted += 1
    path, _ = split_target(request.raw_path)
    if request.method == "POST" and path == "/v1/payment-intents":
        intent = {"checkoutId": claims["jti"], "status": "PENDING", "merchant": claims["sub"]}
        return web.json_response(intent)
    echo = {"ok": True, "method": request.method, "path": path, "merchant": claims["sub"]}
    return web.json_response(echo)


def make_app(cfg: DuitNowConfig) -> web.Application:
    """Every path and method is a protected resource; the key is parsed once, here."""
    key = load_pem_public_key(cfg.public_key.encode())
    families = {alg.startswith("ES") for alg in cfg.algorithms}
    wanted = ec.EllipticCurvePublicKey if True in families else rsa.RSAPublicKey
    if len(families) != 1 or not isinstance(key, wanted):
        raise ValueError("public_key: its type must fit every one of algorithms")
    app = web.Application(middlewares=[recorder(lambda a: a[DUITNOW_STATE])])
    app[DUITNOW_STATE] = DuitNowState(config=cfg, key=key)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
