"""A peer that wants fixed API-key headers and/or a query parameter, with provider presets.

The ``azupay`` preset wants the key itself as ``Authorization`` (no ``Bearer``) and answers
``GET /v1/balance`` and ``POST /v1/paymentRequest``; refusals are ``{"message":
"Unauthorized"}``, the API-gateway body Azupay's clients see. The ``intasend`` preset wants
``Authorization: Bearer <secret key>`` *and* ``INTASEND_PUBLIC_API_KEY: <publishable key>``,
answers ``GET /api/v1/wallets/`` with a list and refuses with a DRF-style ``{"detail": ...}``.
Every other path, in every flavor, echoes an authorised request. Values are compared in
constant time and exactly: a peer that trimmed or case-folded would hide sidecar bugs.
"""

from __future__ import annotations

import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidecar.sandbox.recording import ADMIN_PREFIX, PeerState, recorder, split_target

WALLETS = [
    {"wallet_id": "SANDBOX01", "label": "default", "currency": "KES", "available_balance": 0}
]


class ApiKeyPeerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required_headers: dict[str, str] = Field(default_factory=dict)
    query_param: tuple[str, str] | None = None
    flavor: Literal["generic", "azupay", "intasend"] = "generic"
    error_status: int = 401
    error_body: dict[str, Any] = Field(default_factory=lambda: {"message": "Unauthorized"})

    @model_validator(mode="after")
    def _something_required(self) -> ApiKeyPeerConfig:
        if not self.required_headers and self.query_param is None:
            raise ValueError("give required_headers and/or query_param")
        return self


def azupay(api_key: str) -> ApiKeyPeerConfig:
    """Azupay: ``Authorization: <key>`` exactly, as in seed 003."""
    return ApiKeyPeerConfig(required_headers={"Authorization": api_key}, flavor="azupay")


def intasend(secret_key: str, public_key: str) -> ApiKeyPeerConfig:
    """IntaSend: Bearer secret key plus the publishable key in its own header."""
    return ApiKeyPeerConfig(
        required_headers={
            "Authorization": f"Bearer {secret_key}",
            "INTASEND_PUBLIC_API_KEY": public_key,
        },
        flavor="intasend",
        error_body={"detail": "Invalid authentication credentials"},
    )


@dataclass(kw_only=True)
class ApiKeyState(PeerState):
    """Inspectable state: ``payment_requests`` counts payment requests created."""

    config: ApiKeyPeerConfig
    payment_requests: int = 0


API_KEY_STATE = web.AppKey("api_key_state", ApiKeyState)


def same(sent: str | None, expected: str) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), expected.encode())


def authorised(request: web.Request, cfg: ApiKeyPeerConfig) -> bool:
    headers_ok = all(same(request.headers.get(k), v) for k, v in cfg.required_headers.items())
    if cfg.query_param is None:
        return headers_ok
    name, expected = cfg.query_param
    values = [v for k, v in parse_qsl(split_target(request.raw_path)[1]) if k == name]
    return headers_ok and len(values) == 1 and same(values[0], expected)


@web.middleware
async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[API_KEY_STATE]
    if request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    if not authorised(request, state.config):
        state.rejected += 1
        return web.json_response(state.config.error_body, status=state.config.error_status)
    state.accepted += 1
    return await handler(request)


async def echo(request: web.Request) -> web.Response:
    path, query = split_target(request.raw_path)
    return web.json_response({"ok": True, "method": request.method, "path": path, "query": query})


async def balance(_request: web.Request) -> web.Response:
    return web.json_response({"balance": "1000.00", "currency": "AUD"})


async def payment_request(request: web.Request) -> web.Response:
    """Store-and-echo, with the status block Azupay adds to a created payment request."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"message": "Invalid request body"}, status=400)
    request.app[API_KEY_STATE].payment_requests += 1
    created = {
        "paymentRequestId": uuid.uuid4().hex,
        "status": "WAITING",
        "createdDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return web.json_response({**body, "PaymentRequestStatus": created}, status=201)


async def wallets(_request: web.Request) -> web.Response:
    return web.json_response(WALLETS)


def make_app(cfg: ApiKeyPeerConfig) -> web.Application:
    """The flavor's endpoints, then an echo for any other path and method."""
    app = web.Application(middlewares=[recorder(lambda a: a[API_KEY_STATE]), require_key])
    app[API_KEY_STATE] = ApiKeyState(config=cfg)
    if cfg.flavor == "azupay":
        app.router.add_get("/v1/balance", balance)
        app.router.add_post("/v1/paymentRequest", payment_request)
    elif cfg.flavor == "intasend":
        app.router.add_get("/api/v1/wallets/", wallets)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
