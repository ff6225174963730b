"""A Kopokopo-shaped peer: the OAuth2 token endpoint and the incoming-payments (STK push) API.

Shaped after Kopokopo's API as its official Python SDK (``k2-connect`` 2.0.0) calls it:

* ``POST /oauth/token`` (``/oauth/token.json`` too, as Rails routes it): a form of
  ``client_id``, ``client_secret`` and ``grant_type=client_credentials``, answered
  ``{"access_token", "token_type": "Bearer", "expires_in", "created_at"}`` (``created_at`` in
  unix seconds). Client authentication and the grant are checked by the strict RFC 6749
  helpers of :mod:`sidecar.sandbox.oauth2`.
* ``POST /api/v2/incoming_payments`` (``/api/v1/...`` too, as older SDKs call it), a JSON STK
  push request with a live Bearer token: ``201 Created`` with the payment's URL in
  ``Location`` and no body, which is what the SDK returns to the app.
* ``GET /api/v2/incoming_payments/{id}``: the payment as recorded, ``status`` ``Pending``.

Every request is recorded before any check (``OAuth2State.seen``), so tests can prove the
real client credentials reached only the token endpoint and the real Bearer only the API.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from sidecar.sandbox.oauth2 import (
    NO_STORE,
    OAUTH2_STATE,
    OAuth2Config,
    OAuth2State,
    TokenError,
    bearer_token,
    granted_client,
    stats,
)
from sidecar.sandbox.recording import recorder
from sidecar.sandbox.webhooks import add_sender

TOKEN_PATH = "/oauth/token"
PAYMENTS = ("/api/v1/incoming_payments", "/api/v2/incoming_payments")
PUBLIC_BASE = "https://sandbox.kopokopo.com"
PAYMENTS_KEY = web.AppKey("kopokopo_payments", dict[str, Any])


class KopokopoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: dict[str, str]
    expires_in: int = Field(default=3600, gt=0)
    public_base: str = PUBLIC_BASE  # where Location points, as the real API answers
    webhook_key: str | None = None  # the API key webhooks are signed with (X-KopoKopo-Signature)


CONFIG_KEY = web.AppKey("kopokopo_config", KopokopoConfig)


async def token_endpoint(request: web.Request) -> web.Response:
    """Kopokopo's token answer: ``Bearer`` and ``created_at``, no ``scope``."""
    state = request.app[OAUTH2_STATE]
    try:
        client_id = await granted_client(request, state)
    except TokenError as exc:
        return exc.response()
    body = {
        "access_token": state.issue(client_id),
        "token_type": "Bearer",
        "expires_in": state.config.expires_in,
        "created_at": int(time.time()),
    }
    return web.json_response(body, headers=NO_STORE)


def authorized(request: web.Request) -> web.Response | None:
    """None for a live Bearer; else Kopokopo's 401 (and the rejection is counted)."""
    state = request.app[OAUTH2_STATE]
    token = bearer_token(request)
    if token is not None and state.valid(token) is not None:
        state.accepted += 1
        return None
    state.rejected += 1
    challenge = 'Bearer error="invalid_token"' if token else 'Bearer realm="kopokopo"'
    body = {"error": "invalid_token", "error_description": "The access token is invalid"}
    return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})


def payment_problem(doc: Any) -> str | None:
    """What a STK push request lacks, as Kopokopo checks it; None when it is complete."""
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    subscriber, amount = doc.get("subscriber"), doc.get("amount")
    links = doc.get("_links")
    if not doc.get("till_number") or not doc.get("payment_channel"):
        return "till_number and payment_channel are required"
    if not isinstance(subscriber, dict) or not subscriber.get("phone_number"):
        return "subscriber.phone_number is required"
    if not isinstance(amount, dict) or not amount.get("currency") or not amount.get("value"):
        return "amount.currency and amount.value are required"
    if not isinstance(links, dict) or not links.get("callback_url"):
        return "_links.callback_url is required"
    return None


async def create_payment(request: web.Request) -> web.Response:
    refusal = authorized(request)
    if refusal is not None:
        return refusal
    try:
        doc = await request.json()
    except ValueError:
        doc = None
    problem = payment_problem(doc)
    if problem is not None:
        return web.json_response({"error_code": 400, "error_message": problem}, status=400)
    payment_id = str(uuid.uuid4())
    request.app[PAYMENTS_KEY][payment_id] = doc
    location = f"{request.app[CONFIG_KEY].public_base}{request.path}/{payment_id}"
    return web.Response(status=201, headers={"Location": location})


async def view_payment(request: web.Request) -> web.Response:
    refusal = authorized(request)
    if refusal is not None:
        return refusal
    payment_id = request.match_info["payment_id"]
    doc = request.app[PAYMENTS_KEY].get(payment_id)
    if doc is None:
        return web.json_response({"error_code": 404, "error_message": "Not found"}, status=404)
    data = {
        "id": payment_id,
        "type": "incoming_payment",
        "attributes": {**doc, "status": "Pending"},
    }
    return web.json_response({"data": data})


def make_app(cfg: KopokopoConfig) -> web.Application:
    """Token endpoint, the incoming-payments API, and ``/_sandbox/stats``."""
    app = web.Application(middlewares=[recorder(lambda a: a[OAUTH2_STATE])])
    oauth = OAuth2Config(clients=cfg.clients, token_path=TOKEN_PATH, expires_in=cfg.expires_in)
    app[OAUTH2_STATE] = OAuth2State(config=oauth)
    app[CONFIG_KEY] = cfg
    app[PAYMENTS_KEY] = {}
    app.router.add_get("/_sandbox/stats", stats)
    if cfg.webhook_key is not None:  # POST /_sandbox/webhooks/send: a signed event to the app
        add_sender(app, cfg.webhook_key)
    app.router.add_post(TOKEN_PATH, token_endpoint)
    # Kopokopo's token endpoint is Doorkeeper's (Rails): ``/oauth/token(.:format)`` routes
    # ``/oauth/token.json`` to it too, which the sidecar must never forward (SC4044).
    app.router.add_post(TOKEN_PATH + ".{format:json}", token_endpoint)
    for path in PAYMENTS:
        app.router.add_post(path, create_payment)
        app.router.add_get(path + "/{payment_id}", view_payment)
    return app
