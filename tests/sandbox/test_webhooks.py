"""The sandbox's signed-webhook sender: Kopokopo's signature, envelope, and loopback-only targets."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from sidecar.sandbox.webhooks import PATH, SENDER, add_sender, sign

KEY = "k2-sandbox-api-key"


def test_sign_is_kopokopo_hex_hmac_sha256() -> None:
    """``sign`` is what Kopokopo's SDKs check: hex HMAC-SHA256 of the raw body with the API key."""
    body = b'{"topic":"buygoods_transaction_received"}'
    assert sign(body, KEY) == hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()


async def test_sender_signs_and_delivers_a_kopokopo_envelope(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """The receiver gets Kopokopo's envelope around the event, signed over its exact bytes."""
    got: list[tuple[bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers["X-KopoKopo-Signature"]))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    url = str((await aiohttp_server(receiver)).make_url("/hook"))
    peer = web.Application()
    add_sender(peer, KEY)
    client = await aiohttp_client(peer)
    r = await client.post(PATH, json={"url": url, "event": {"amount": "10.0"}})
    answer = await r.json()
    [(body, signature)] = got
    event = json.loads(body)
    assert r.status == 200 and answer["delivered"] == 204 and answer["id"] == event["id"]
    assert answer["answer"] is None  # a 204 has no JSON body to show
    assert event["topic"] == "buygoods_transaction_received"
    assert event["event"]["resource"] == {"amount": "10.0"} and event["created_at"]
    assert signature == sign(body, KEY) and peer[SENDER].sent == 1


@pytest.mark.parametrize(
    "request_body",
    [
        {"url": "http://evil.example/hook", "event": {}},
        {"url": "http://10.0.0.1/hook", "event": {}},
        {"url": "file:///etc/passwd", "event": {}},
        {"url": "http://127.0.0.1/hook", "event": []},
        {"url": "http://127.0.0.1/hook"},
        [],
    ],
    ids=["foreign-host", "private-ip", "file-url", "event-not-object", "no-event", "not-object"],
)
async def test_sender_refuses_non_loopback_targets_and_bad_requests(
    aiohttp_client: AiohttpClient, request_body: Any
) -> None:
    """Only loopback http(s) targets and an event object: 400 otherwise, nothing sent."""
    peer = web.Application()
    add_sender(peer, KEY)
    client = await aiohttp_client(peer)
    r = await client.post(PATH, json=request_body)
    assert r.status == 400 and "error" in await r.json()
    assert peer[SENDER].sent == 0


async def test_unreachable_receiver_is_502(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """A receiver that is gone: 502 with the reason, and nothing counted as sent."""
    server = await aiohttp_server(web.Application())
    url = str(server.make_url("/hook"))
    await server.close()
    peer = web.Application()
    add_sender(peer, KEY)
    r = await (await aiohttp_client(peer)).post(PATH, json={"url": url, "event": {}})
    assert r.status == 502 and "delivery failed" in (await r.json())["error"]
    assert peer[SENDER].sent == 0
