"""A signed-webhook sender for sandbox peers: what Kopokopo does when a payment arrives.

Kopokopo POSTs an event to the app's callback URL with ``X-KopoKopo-Signature``: the hex
HMAC-SHA256 of the raw body keyed with the OAuth application's API key (k2-connect-php
``Helpers\\Auth``, k2-connect-node ``lib/helpers/auth.js``). A peer calls :func:`add_sender` to
get ``POST /_sandbox/webhooks/send`` with ``{"url": ..., "event": {...}}``: the event is wrapped
in Kopokopo's envelope (``topic``, ``id``, ``created_at``, ``event.resource``), signed with the
peer's key and delivered; the answer says the receiver's status and, when it is JSON, its body
(so a send straight to the sidecar's verify endpoint shows the verdict). Targets are loopback
only: a sandbox must not become a way to POST anywhere.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from yarl import URL

from sidecar import webhooksig
from sidecar.hostguard import is_local_name

PATH = "/_sandbox/webhooks/send"
ANSWER_MAX = 4096
KOPOKOPO = webhooksig.WebhookSignature.model_validate(webhooksig.PRESETS["kopokopo"])


def sign(body: bytes, key: str, spec: webhooksig.WebhookSignature = KOPOKOPO) -> str:
    """The signature header's value for ``body`` (Kopokopo's: hex HMAC-SHA256)."""
    signature = webhooksig.sign(spec, key, body, CIMultiDict())
    if signature is None:  # a template naming headers needs them; a sender has none to give
        raise ValueError("the template signs headers; sign(body, key) covers {body} only")
    return signature


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    event: dict[str, Any]
    topic: str = "buygoods_transaction_received"

    @field_validator("url")
    @classmethod
    def _loopback(cls, v: str) -> str:
        u = URL(v)
        if u.scheme not in ("http", "https") or not u.host or not is_local_name(u.host):
            raise ValueError("must be an http(s) URL on loopback")
        return v


def envelope(topic: str, resource: dict[str, Any]) -> dict[str, Any]:
    """Kopokopo's webhook shape around one event resource."""
    event_id = str(uuid.uuid4())
    return {
        "topic": topic,
        "id": event_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "event": {"type": "Buygoods Transaction", "resource": resource},
        "_links": {"self": f"https://sandbox.kopokopo.com/api/v1/webhook_events/{event_id}"},
    }


@dataclass
class Sender:
    key: str
    header: str = KOPOKOPO.header
    sent: int = 0

    async def send(self, request: web.Request) -> web.Response:
        try:
            wanted = SendRequest.model_validate(await request.json())
        except (ValueError, ValidationError) as exc:
            return web.json_response({"error": str(exc).splitlines()[0]}, status=400)
        body = json.dumps(envelope(wanted.topic, wanted.event)).encode()
        headers = {"Content-Type": "application/json", self.header: sign(body, self.key)}
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(wanted.url, data=body, headers=headers) as resp,
            ):
                status, answer = resp.status, await _answer(resp)
        except aiohttp.ClientError as exc:
            return web.json_response({"error": f"delivery failed: {exc!r}"}, status=502)
        self.sent += 1
        event_id = json.loads(body)["id"]
        return web.json_response({"delivered": status, "id": event_id, "answer": answer})


async def _answer(resp: aiohttp.ClientResponse) -> Any:
    """The receiver's JSON answer (at most 4 KiB), else None: sent straight to the sidecar's
    verify endpoint, a webhook's verdict is then visible to whoever asked for the send."""
    raw = await resp.content.read(ANSWER_MAX + 1)
    if len(raw) > ANSWER_MAX:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


SENDER = web.AppKey("webhook_sender", Sender)


def add_sender(app: web.Application, key: str, header: str = KOPOKOPO.header) -> Sender:
    """Register ``POST /_sandbox/webhooks/send`` on a peer's app, signing with ``key``."""
    sender = app[SENDER] = Sender(key, header)
    app.router.add_post(PATH, sender.send)
    return sender
