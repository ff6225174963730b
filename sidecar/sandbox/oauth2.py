"""An OAuth2 client-credentials token server and the resource server it guards.

Shaped like PayNet's gateway (seed 004: form POST to ``/v1/picasso-guard/auth/token``, a
``bearer`` token with ``scope`` and ``expires_in``), which is also how Kopokopo and Pismo issue
tokens. It is the sidecar's peer in tests, so it follows RFC 6749 strictly rather than
forgivingly: a sidecar bug (wrong content type, credentials sent twice, Basic credentials not
form-encoded) must fail here the way it would fail against a strict provider.

Choices worth knowing:

* Client authentication comes before the grant check; a missing ``grant_type`` is
  ``invalid_request``, another grant ``unsupported_grant_type`` (RFC 6749 5.2).
* Basic credentials and a ``client_secret`` in the body together are ``invalid_request``
  (2.3: one method per request). A Basic failure carries ``WWW-Authenticate: Basic``.
* A resource request with no Bearer token gets ``WWW-Authenticate: Bearer realm="sandbox"``,
  one with a bad or expired token ``Bearer error="invalid_token"`` (RFC 6750 3.1); both bodies
  are ``{"error": "invalid_token"}``.
* Expiry follows ``time.monotonic`` plus ``OAuth2State.skew``, so a test can call
  ``advance(seconds)`` instead of sleeping.
* ``down`` (503) and ``hang()`` (no answer) switch the token endpoint off live, for outage tests.
* ``accepted``/``rejected`` count resource requests; ``tokens_issued``/``token_failures`` count
  the token endpoint; ``injected_failures`` counts the deliberate 500s.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from sidecar.sandbox.recording import PeerState, recorder, split_target

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuth2Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: dict[str, str]
    token_path: str = "/v1/picasso-guard/auth/token"
    expires_in: int = Field(default=3600, gt=0)
    scope: str = "rpp:merchant"
    accept_basic: bool = True
    accept_body: bool = True
    fail_token_requests: int = Field(default=0, ge=0)
    slow_ms: int = Field(default=0, ge=0)


@dataclass(frozen=True, slots=True)
class Token:
    client_id: str
    expires_at: float


@dataclass(kw_only=True)
class OAuth2State(PeerState):
    """Issued tokens and counters; ``fail_token_requests`` and ``slow_ms`` may be changed live."""

    config: OAuth2Config
    tokens: dict[str, Token] = field(default_factory=dict)
    tokens_issued: int = 0
    token_failures: int = 0
    injected_failures: int = 0
    revocations: int = 0
    fail_token_requests: int = 0
    slow_ms: int = 0
    skew: float = 0.0
    down: bool = False  # token endpoint answers 503 while set (an IdP outage)
    answering: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: a hung IdP

    def __post_init__(self) -> None:
        self.answering.set()

    def hang(self, hung: bool) -> None:
        """Hold every token request (no answer at all) until called with False."""
        if hung:
            self.answering.clear()
        else:
            self.answering.set()

    def now(self) -> float:
        return time.monotonic() + self.skew

    def advance(self, seconds: float) -> None:
        """Move this server's clock forward, as if ``seconds`` had passed."""
        self.skew += seconds

    def issue(self, client_id: str) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = Token(client_id, self.now() + self.config.expires_in)
        self.tokens_issued += 1
        return token

    def valid(self, token: str) -> Token | None:
        info = self.tokens.get(token)
        if info is None or info.expires_at <= self.now():
            return None
        return info

    def revoke_all(self) -> int:
        """Invalidate every issued token at once; returns how many there were."""
        count = len(self.tokens)
        self.tokens.clear()
        self.revocations += 1
        return count

    def stats(self) -> dict[str, int]:
        return {
            "tokens_issued": self.tokens_issued,
            "tokens_live": sum(1 for t in self.tokens.values() if t.expires_at > self.now()),
            "token_failures": self.token_failures,
            "injected_failures": self.injected_failures,
            "revocations": self.revocations,
            "accepted": self.accepted,
            "rejected": self.rejected,
        }


OAUTH2_STATE = web.AppKey("oauth2_state", OAuth2State)


class TokenError(Exception):
    def __init__(self, status: int, error: str, basic: bool = False) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.basic = basic

    def response(self) -> web.Response:
        headers = dict(NO_STORE)
        if self.basic:
            headers["WWW-Authenticate"] = 'Basic realm="sandbox"'
        return web.json_response({"error": self.error}, status=self.status, headers=headers)


async def read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded body; a parameter given twice is ``invalid_request`` (RFC 6749 3.2)."""
    if request.content_type != FORM:
        raise TokenError(400, "invalid_request")
    try:
        pairs = parse_qsl((await request.read()).decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise TokenError(400, "invalid_request") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise TokenError(400, "invalid_request")
    return form


def parse_basic(header: str) -> tuple[str, str]:
    """client_id and secret from Basic: Base64, then form-urldecoded each (RFC 6749 2.3.1)."""
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode()
    except (IndexError, binascii.Error, ValueError):
        raise TokenError(401, "invalid_client", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise TokenError(401, "invalid_client", basic=True)
    return unquote_plus(client_id), unquote_plus(secret)


def client_credentials(request: web.Request, form: dict[str, str], cfg: OAuth2Config) -> str:
    """Authenticate the client by Basic header or body parameters; returns its id."""
    header = request.headers.get("Authorization", "")
    basic = header[:6].lower() == "basic "
    if basic and "client_secret" in form:
        raise TokenError(400, "invalid_request")
    if basic:
        client_id, secret = parse_basic(header)
        allowed = cfg.accept_basic
    elif "client_secret" in form:
        client_id, secret = form.get("client_id", ""), form["client_secret"]
        allowed = cfg.accept_body
    else:
        raise TokenError(401, "invalid_client")
    expected = cfg.clients.get(client_id)
    good = hmac.compare_digest((expected or "\0").encode(), secret.encode())
    if not (allowed and expected is not None and good):
        raise TokenError(401, "invalid_client", basic=basic)
    return client_id


def check_grant(form: dict[str, str], cfg: OAuth2Config) -> None:
    grant = form.get("grant_type")
    if grant is None:
        raise TokenError(400, "invalid_request")
    if grant != "client_credentials":
        raise TokenError(400, "unsupported_grant_type")
    if not set(form.get("scope", "").split()) <= set(cfg.scope.split()):
        raise TokenError(400, "invalid_scope")


async def granted_client(request: web.Request, state: OAuth2State) -> str:
    """The client a token request authenticates; a refusal is counted, then raised."""
    try:
        form = await read_form(request)
        client_id = client_credentials(request, form, state.config)
        check_grant(form, state.config)
    except TokenError:
        state.token_failures += 1
        raise
    return client_id


async def token_endpoint(request: web.Request) -> web.Response:
    state = request.app[OAUTH2_STATE]
    if request.method != "POST":
        return web.json_response(
            {"error": "invalid_request"}, status=405, headers={"Allow": "POST"}
        )
    await state.answering.wait()
    if state.down:
        state.injected_failures += 1
        return web.json_response({"error": "temporarily_unavailable"}, status=503)
    if state.fail_token_requests > 0:
        state.fail_token_requests -= 1
        state.injected_failures += 1
        return web.json_response({"error": "server_error"}, status=500)
    try:
        client_id = await granted_client(request, state)
    except TokenError as exc:
        return exc.response()
    body: dict[str, Any] = {
        "access_token": state.issue(client_id),
        "token_type": "bearer",
        "scope": state.config.scope,
        "expires_in": state.config.expires_in,
    }
    return web.json_response(body, headers=NO_STORE)


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def protected(request: web.Request) -> web.Response:
    """Any other path: echo the request if, and only if, it carries a live token."""
    state = request.app[OAUTH2_STATE]
    if state.slow_ms:
        await asyncio.sleep(state.slow_ms / 1000)
    token = bearer_token(request)
    info = state.valid(token) if token else None
    if info is None:
        state.rejected += 1
        challenge = 'Bearer error="invalid_token"' if token else 'Bearer realm="sandbox"'
        headers = {"WWW-Authenticate": challenge}
        return web.json_response({"error": "invalid_token"}, status=401, headers=headers)
    state.accepted += 1
    path, _ = split_target(request.raw_path)
    return web.json_response(
        {"ok": True, "method": request.method, "path": path, "client_id": info.client_id}
    )


async def revoke(request: web.Request) -> web.Response:
    return web.json_response({"revoked": request.app[OAUTH2_STATE].revoke_all()})


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[OAUTH2_STATE].stats())


def make_app(cfg: OAuth2Config) -> web.Application:
    """Token endpoint at ``cfg.token_path``, admin under ``/_sandbox/``, resources elsewhere."""
    app = web.Application(middlewares=[recorder(lambda a: a[OAUTH2_STATE])])
    app[OAUTH2_STATE] = OAuth2State(
        config=cfg, fail_token_requests=cfg.fail_token_requests, slow_ms=cfg.slow_ms
    )
    app.router.add_post("/_sandbox/revoke", revoke)
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_route("*", cfg.token_path, token_endpoint)
    app.router.add_route("*", "/{tail:.*}", protected)
    return app
