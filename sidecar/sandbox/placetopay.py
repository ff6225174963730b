"""A PlaceToPay Checkout emulator that checks ``auth`` the way PlaceToPay documents it.

This is deliberately a second, independent implementation of the tranKey formula (nothing is
imported from ``sidecar.schemes``): if the sidecar's scheme and this peer shared code, a bug in
that code would sign and verify the same wrong value and every test would still pass.

Failures answer HTTP 401 with ``{"status": {"status": "FAILED", "reason": 401, "message":
"Authentication failed <code>", "date": ...}}``, codes from PlaceToPay's table:

* 100 - UsernameToken not provided: no JSON object body (or not ``application/json``), no
  ``auth`` object, a field missing, empty or not a string, or a nonce that is not Base64.
* 107 - UsernameToken badly defined: a seed that is not ISO 8601 with a UTC offset (a naive
  time cannot be placed on the clock). Our reading of "no cumple con el encabezado WSSE".
* 101 - unknown login. 102 - tranKey mismatch. 103 - seed more than the window away from now,
  in either direction. 104 - site inactive.

Checks run in that order, so 103 and 104 are only told to a caller who proved the secret. A
nonce reused by the same login inside the window is refused as 102 (PlaceToPay lists no code
for replay; WS-Security calls it a failed digest) and counted in ``replays``. Other choices
where PlaceToPay's docs are silent: an unknown or foreign ``requestId`` answers HTTP 404 and a
session without ``payment`` HTTP 400, each with ``reason`` equal to the HTTP status, as the 401
body does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from sidecar.sandbox.recording import PeerState, recorder

AUTH_FIELDS = ("login", "tranKey", "nonce", "seed")


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret_key: str
    active: bool = True


class PlaceToPayConfig(BaseModel):
    """Sites by login; ``hash`` is sha256 (current docs) or sha1 (older SDKs)."""

    model_config = ConfigDict(extra="forbid")

    sites: dict[str, SiteConfig]
    hash: Literal["sha256", "sha1"] = "sha256"
    seed_window_seconds: float = Field(default=300, gt=0)
    reject_reused_nonce: bool = True


@dataclass(kw_only=True)
class PlaceToPayState(PeerState):
    """Inspectable state: ``codes`` counts auth failures by PlaceToPay code."""

    config: PlaceToPayConfig
    codes: Counter[int] = field(default_factory=Counter)
    replays: int = 0
    sessions: dict[int, dict[str, Any]] = field(default_factory=dict)
    nonces: dict[tuple[str, bytes], datetime] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


PLACETOPAY_STATE = web.AppKey("placetopay_state", PlaceToPayState)


class AuthFailed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"Authentication failed {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Auth:
    login: str
    tran_key: str
    raw_nonce: bytes
    seed: str
    seed_time: datetime


def expected_tran_key(raw_nonce: bytes, seed: str, secret_key: str, hash: str) -> str:
    """Base64(H(rawNonce + seed + secretKey)), H being ``sha256`` or ``sha1``."""
    if hash not in ("sha256", "sha1"):
        raise ValueError(f"unsupported hash {hash!r}")
    digest = hashlib.new(hash, raw_nonce + seed.encode() + secret_key.encode()).digest()
    return base64.b64encode(digest).decode("ascii")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def status(state: str, reason: int | str, message: str) -> dict[str, Any]:
    return {"status": state, "reason": reason, "message": message, "date": now_iso()}


def parse_auth(body: object) -> Auth:
    """The ``auth`` object, or AuthFailed(100) / AuthFailed(107) when it is unusable."""
    auth = body.get("auth") if isinstance(body, dict) else None
    if not isinstance(auth, dict):
        raise AuthFailed(100)
    values = [auth.get(name) for name in AUTH_FIELDS]
    if not all(isinstance(v, str) and v for v in values):
        raise AuthFailed(100)
    login, tran_key, nonce, seed = (str(v) for v in values)
    try:
        raw_nonce = base64.b64decode(nonce, validate=True)
    except (binascii.Error, ValueError):
        raise AuthFailed(100) from None
    try:
        seed_time = datetime.fromisoformat(seed)
    except ValueError:
        raise AuthFailed(107) from None
    if seed_time.tzinfo is None:
        raise AuthFailed(107)
    return Auth(login, tran_key, raw_nonce, seed, seed_time)


def check(state: PlaceToPayState, auth: Auth, now: datetime) -> None:
    """Apply codes 101, 102, 103, 104 and the replay rule, in that order."""
    cfg = state.config
    site = cfg.sites.get(auth.login)
    if site is None:
        raise AuthFailed(101)
    expected = expected_tran_key(auth.raw_nonce, auth.seed, site.secret_key, cfg.hash)
    if not hmac.compare_digest(expected.encode(), auth.tran_key.encode()):
        raise AuthFailed(102)
    window = timedelta(seconds=cfg.seed_window_seconds)
    if abs(now - auth.seed_time) > window:
        raise AuthFailed(103)
    if not site.active:
        raise AuthFailed(104)
    if cfg.reject_reused_nonce:
        remember_nonce(state, (auth.login, auth.raw_nonce), now, window)


def remember_nonce(
    state: PlaceToPayState, key: tuple[str, bytes], now: datetime, window: timedelta
) -> None:
    """Refuse a nonce seen inside the window; forget nonces old enough to be stale anyway."""
    for old in [k for k, until in state.nonces.items() if until < now]:
        del state.nonces[old]
    if key in state.nonces:
        state.replays += 1
        raise AuthFailed(102)
    state.nonces[key] = now + 2 * window


async def read_json(request: web.Request) -> object:
    """The JSON body; anything else is PlaceToPay's "Malformed authentication" (100)."""
    if request.content_type != "application/json":
        raise AuthFailed(100)
    try:
        return json.loads(await request.read())
    except ValueError:
        raise AuthFailed(100) from None


AuthedHandler = Callable[[web.Request, dict[str, Any], Auth], Awaitable[web.Response]]


def authenticated(handler: AuthedHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Run the auth check before ``handler``; a failure answers 401 with the code."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.Response:
        state = request.app[PLACETOPAY_STATE]
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise AuthFailed(100)
            auth = parse_auth(body)
            check(state, auth, datetime.now(UTC))
        except AuthFailed as exc:
            state.rejected += 1
            state.codes[exc.code] += 1
            return web.json_response({"status": status("FAILED", 401, str(exc))}, status=401)
        state.accepted += 1
        return await handler(request, body, auth)

    return wrapper


def store_session(
    state: PlaceToPayState, auth: Auth, body: dict[str, Any], session_status: dict[str, Any]
) -> int:
    request_id = next(state.ids)
    request_data = {k: v for k, v in body.items() if k != "auth"}
    state.sessions[request_id] = {
        "login": auth.login,
        "request": request_data,
        "status": session_status,
    }
    return request_id


def missing(message: str) -> web.Response:
    return web.json_response({"status": status("FAILED", 400, message)}, status=400)


@authenticated
async def create_session(request: web.Request, body: dict[str, Any], auth: Auth) -> web.Response:
    if not isinstance(body.get("payment"), dict):
        return missing("The payment information is required")
    pending = status("PENDING", "PT", "La petición se encuentra pendiente")
    request_id = store_session(request.app[PLACETOPAY_STATE], auth, body, pending)
    token = secrets.token_hex(16)
    return web.json_response(
        {
            "status": status("OK", "PC", "La petición se ha procesado correctamente"),
            "requestId": request_id,
            "processUrl": f"{request.scheme}://{request.host}/spa/session/{request_id}/{token}",
        }
    )


def session_view(request_id: int, session: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "status": session["status"],
        "request": session["request"],
        "payment": None,
        "subscription": None,
    }


@authenticated
async def query_session(request: web.Request, body: dict[str, Any], auth: Auth) -> web.Response:
    request_id = int(request.match_info["request_id"])
    session = request.app[PLACETOPAY_STATE].sessions.get(request_id)
    if session is None or session["login"] != auth.login:
        failed = status("FAILED", 404, "The requested session does not exist")
        return web.json_response({"status": failed}, status=404)
    return web.json_response(session_view(request_id, session))


@authenticated
async def collect(request: web.Request, body: dict[str, Any], auth: Auth) -> web.Response:
    """Charge a stored token at once; the emulator approves every well-formed collect."""
    if not isinstance(body.get("payment"), dict) or not isinstance(body.get("instrument"), dict):
        return missing("The payment and instrument information is required")
    approved = status("APPROVED", "00", "La petición ha sido aprobada exitosamente")
    state = request.app[PLACETOPAY_STATE]
    request_id = store_session(state, auth, body, approved)
    return web.json_response(session_view(request_id, state.sessions[request_id]))


def make_app(cfg: PlaceToPayConfig) -> web.Application:
    """The Checkout API subset the sidecar talks to: create, query and collect."""
    app = web.Application(middlewares=[recorder(lambda a: a[PLACETOPAY_STATE])])
    app[PLACETOPAY_STATE] = PlaceToPayState(config=cfg)
    app.router.add_post("/api/session", create_session)
    app.router.add_post(r"/api/session/{request_id:\d+}", query_session)
    app.router.add_post("/api/collect", collect)
    return app
