"""``POST /v1/credentials/{name}/webhook-signature/verify`` on the local API, end to end.

A Kopokopo-style credential (client_id, client_secret and the API key that signs webhooks) is
stored through the admin API against the real OpenBao; a sandbox peer of the test's own (the
shipped ``add_sender``) signs and delivers a webhook to a receiver here, and the test forwards
it as an app would: the raw body, the provider's header unchanged.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.testing import capture_logs

from sidecar.app import build_local_app
from sidecar.sandbox import kopokopo, oauth2
from sidecar.sandbox.openbao import OpenBao
from sidecar.sandbox.webhooks import PATH, add_sender, sign
from sidecar.server import Server
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.integration.test_roles import policy, role_config, token_for
from tests.leakscan import Collected

CLIENT_ID, CLIENT_SECRET = "k2-client-7c1d", "k2-secret-3e9a0b"
API_KEY = "k2-webhook-api-key-5f2e8d"
HEADER = "X-KopoKopo-Signature"
LIMIT = 4096
URL = "/v1/credentials/kopokopo/webhook-signature/verify"
EVENT = {"id": "tx-1", "amount": "100.0", "currency": "KES", "reference": "OJM6Q1W84K"}


@dataclass
class Received:
    """What the app's callback endpoint got: raw bytes and headers, as an app would keep them."""

    items: list[tuple[bytes, CIMultiDictProxy[str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.items.append((await request.read(), request.headers.copy()))
        return web.json_response({"ok": True})


@dataclass
class Env:
    sidecar: Sidecar
    local: TestClient[Any, Any]
    peer: TestClient[Any, Any]
    received: Received
    callback: str
    upstreams: dict[str, Any]
    seen: Collected = field(default_factory=Collected)

    async def deliver(self, event: dict[str, Any]) -> tuple[bytes, str]:
        """The peer signs and POSTs a webhook to the receiver; its raw body and signature."""
        r = await self.peer.post(PATH, json={"url": self.callback, "event": event})
        assert r.status == 200, await r.text()
        body, headers = self.received.items[-1]
        return body, headers[HEADER]

    async def verify(self, body: bytes, headers: Any, name: str = "kopokopo") -> tuple[int, Any]:
        url = URL.replace("kopokopo", name)
        r = await self.local.post(url, data=body, headers=headers)
        text = await self.seen.response(r)
        return r.status, json.loads(text)


def kopokopo_upstream(url: str) -> dict[str, Any]:
    return {
        "url": url,
        "hosts": ["sandbox.kopokopo.com"],
        "scheme": "oauth2_client_credentials",
        "token_url": "/oauth/token",
        "credential": "kopokopo",
        "environment": "sandbox",
        "webhook_signature": {"preset": "kopokopo", "max_body": LIMIT},
    }


@pytest.fixture
async def env(
    aiohttp_server: Any, aiohttp_client: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> Env:
    """A sidecar with a Kopokopo credential holding the webhook key, a sender and a receiver."""
    tokens = oauth2.make_app(
        oauth2.OAuth2Config(clients={CLIENT_ID: CLIENT_SECRET}, token_path="/oauth/token")
    )
    token_server = await aiohttp_server(tokens)
    plain = {"url": "http://127.0.0.1:9", "scheme": "api_key", "credential": "plain"}
    upstreams = {
        "kopokopo": kopokopo_upstream(str(token_server.make_url("")).rstrip("/")),
        "plain": {**plain, "environment": "sandbox"},
    }
    cfg = make_config(upstreams)
    sidecar = await make_sidecar(cfg)
    local = await aiohttp_client(build_local_app(sidecar.runtime, own_runtime=False))
    fields = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "api_key": API_KEY}
    r = await sidecar.admin.put(
        "/v1/credentials/kopokopo",
        json={"upstream": "kopokopo", "environment": "sandbox", "fields": fields},
    )
    assert r.status == 201, await r.text()
    received = Received()
    receiver = web.Application()
    receiver.router.add_post("/webhooks/kopokopo", received.handle)
    callback = str((await aiohttp_server(receiver)).make_url("/webhooks/kopokopo"))
    peer = web.Application()
    add_sender(peer, API_KEY)
    return Env(sidecar, local, await aiohttp_client(peer), received, callback, upstreams)


def forwarded(signature: str, **extra: str) -> dict[str, str]:
    return {HEADER: signature, "Content-Type": "application/json", **extra}


async def test_webhook_from_the_peer_is_valid(env: Env) -> None:
    """The peer's signed webhook, forwarded unchanged, is valid, and /metrics counts it."""
    body, signature = await env.deliver(EVENT)
    assert json.loads(body)["event"]["resource"] == EVENT
    assert await env.verify(body, forwarded(signature)) == (200, {"valid": True})
    metrics = await (await env.local.get("/metrics")).text()
    assert 'sidecar_webhook_verifications_total{outcome="valid"} 1.0' in metrics
    assert 'sidecar_webhook_verifications_total{outcome="invalid"} 0.0' in metrics


async def test_many_verifications_are_each_counted(env: Env) -> None:
    """200 forwarded webhooks, half tampered: 100 valid and 100 invalid, counted exactly."""
    body, signature = await env.deliver(EVENT)
    started = time.perf_counter()
    for i in range(200):
        sent = body if i % 2 == 0 else body + b" "
        r = await env.local.post(URL, data=sent, headers=forwarded(signature))
        assert r.status == 200
        await r.read()
    elapsed = time.perf_counter() - started
    metrics = await (await env.local.get("/metrics")).text()
    assert 'sidecar_webhook_verifications_total{outcome="valid"} 100.0' in metrics
    assert 'sidecar_webhook_verifications_total{outcome="invalid"} 100.0' in metrics
    print(
        f"webhook verify: 200 sequential checks, {elapsed / 200 * 1e3:.2f} ms each (client incl.)"
    )


async def test_tampered_body_is_invalid(env: Env) -> None:
    """One changed amount in the body, same signature: invalid."""
    body, signature = await env.deliver(EVENT)
    tampered = body.replace(b'"100.0"', b'"900.0"')
    assert tampered != body
    assert await env.verify(tampered, forwarded(signature)) == (200, {"valid": False})


async def test_wrong_signature_is_invalid(env: Env) -> None:
    """A signature made with another key (an attacker's) is invalid; so is a flipped digit."""
    body, signature = await env.deliver(EVENT)
    assert await env.verify(body, forwarded(sign(body, "attacker-key"))) == (200, {"valid": False})
    flipped = ("1" if signature[0] != "1" else "2") + signature[1:]
    assert await env.verify(body, forwarded(flipped)) == (200, {"valid": False})
    metrics = await (await env.local.get("/metrics")).text()
    assert 'sidecar_webhook_verifications_total{outcome="invalid"} 2.0' in metrics


async def test_unknown_credential_is_404(env: Env) -> None:
    """A credential that is not stored: 404 SC2001, the body not even read."""
    body, signature = await env.deliver(EVENT)
    status, answer = await env.verify(body, forwarded(signature), name="nope")
    assert (status, answer["code"]) == (404, "SC2001")


async def test_upstream_without_webhook_signature_and_credential_without_key(env: Env) -> None:
    """No webhook_signature on the upstream: 422 SC4045; no key stored: 422 SC4046."""
    r = await env.sidecar.admin.put(
        "/v1/credentials/plain",
        json={"upstream": "plain", "environment": "sandbox", "fields": {"api_key": "p-key-1"}},
    )
    assert r.status == 201
    body, signature = await env.deliver(EVENT)
    status, answer = await env.verify(body, forwarded(signature), name="plain")
    assert (status, answer["code"]) == (422, "SC4045")
    fields = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}  # api_key is optional
    r = await env.sidecar.admin.put(
        "/v1/credentials/kopokopo",
        json={"upstream": "kopokopo", "environment": "sandbox", "fields": fields},
    )
    assert r.status == 200, await r.text()
    status, answer = await env.verify(body, forwarded(signature))
    assert (status, answer["code"]) == (422, "SC4046")


async def test_disabled_credential_is_refused(env: Env) -> None:
    """A disabled credential's key may be a leaked one: 403 SC4003, no verdict."""
    r = await env.sidecar.admin.patch("/v1/credentials/kopokopo", json={"enabled": False})
    assert r.status == 200
    body, signature = await env.deliver(EVENT)
    status, answer = await env.verify(body, forwarded(signature))
    assert (status, answer["code"]) == (403, "SC4003")


async def test_any_content_type_is_accepted(env: Env) -> None:
    """The body is the provider's bytes: text/plain, a form type or none at all still verify."""
    body, signature = await env.deliver(EVENT)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = (
            {HEADER: signature} if ctype is None else {HEADER: signature, "Content-Type": ctype}
        )
        assert await env.verify(body, headers) == (200, {"valid": True}), ctype


@pytest.mark.parametrize(
    "signature",
    ["not-hex-at-all", "zz" * 32, "", " ", "0x00", "é" * 10],
    ids=["words", "zz", "empty", "space", "0x", "latin1"],
)
async def test_malformed_signature_is_invalid(env: Env, signature: str) -> None:
    """Whatever an attacker writes in the signature header, the answer is 200 valid: false."""
    body, _ = await env.deliver(EVENT)
    headers = {HEADER: signature}
    assert await env.verify(body, headers) == (200, {"valid": False})


async def test_missing_or_repeated_signature_header_is_invalid(env: Env) -> None:
    """No header, or the right one twice (or beside a wrong one): ambiguous, so invalid."""
    body, signature = await env.deliver(EVENT)
    assert await env.verify(body, {"Content-Type": "application/json"}) == (200, {"valid": False})
    for second in (signature, sign(body, "other")):
        twice = CIMultiDict([(HEADER, signature), (HEADER, second)])
        assert await env.verify(body, twice) == (200, {"valid": False})


async def test_body_above_the_limit_is_413(env: Env) -> None:
    """A body one byte above webhook_signature.max_body, declared or chunked: 413 SC4047."""
    big = b"x" * (LIMIT + 1)
    status, answer = await env.verify(big, forwarded(sign(big, API_KEY)))
    assert (status, answer["code"]) == (413, "SC4047")

    async def chunks() -> Any:
        for _ in range(LIMIT // 1024 + 1):
            yield b"y" * 1024

    r = await env.local.post(URL, data=chunks(), headers=forwarded("00"))
    assert (r.status, (await r.json())["code"]) == (413, "SC4047")
    exact = b"z" * LIMIT
    assert await env.verify(exact, forwarded(sign(exact, API_KEY))) == (200, {"valid": True})


async def test_huge_declared_body_is_refused_before_it_is_sent(env: Env) -> None:
    """Content-Length of 1 GiB, a few bytes sent: the 413 comes back at once (raw socket)."""
    port = env.local.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {1 << 30}\r\n"
        f"{HEADER}: 00\r\n\r\n"
    )
    writer.write(head.encode() + b"{")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"SC4047"' in answer


async def test_never_chunked_body_is_refused_while_it_arrives(env: Env) -> None:
    """A chunked body that never ends: 413 as soon as it passes the limit (raw socket)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.local.server.port)
    head = f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(head.encode())
    for _ in range(LIMIT // 1000 + 1):
        writer.write(b"3e8\r\n" + b"w" * 1000 + b"\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"SC4047"' in answer


@pytest.mark.parametrize(
    ("extra", "status", "code"),
    [
        ({"Origin": "https://evil.example"}, 403, "SC1016"),
        ({"Origin": "null"}, 403, "SC1016"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "SC1017"),
        ({"Host": "evil.example"}, 421, "SC1015"),
        ({"Host": "10.0.0.5:8081"}, 421, "SC1015"),
    ],
    ids=["origin", "null-origin", "cross-site", "rebound-host", "pod-ip-host"],
)
async def test_browser_guards_apply(
    env: Env, extra: dict[str, str], status: int, code: str
) -> None:
    """A web page (foreign Origin, cross-site fetch, rebinding Host) gets no verdict at all."""
    body, signature = await env.deliver(EVENT)
    got, answer = await env.verify(body, {HEADER: signature, "Content-Type": "text/plain", **extra})
    assert (got, answer["code"]) == (status, code)
    assert "valid" not in answer


async def test_other_methods_are_405(env: Env) -> None:
    """GET on the route is 405 SC1006 with Allow: POST; nothing else answers there."""
    r = await env.local.get(URL)
    assert r.status == 405 and (await r.json())["code"] == "SC1006" and "POST" in r.headers["Allow"]


async def test_no_secret_in_answers_logs_or_metrics(env: Env) -> None:
    """Valid, invalid and refused checks: the key and client secret appear nowhere."""
    with capture_logs() as logs:
        body, signature = await env.deliver(EVENT)
        await env.verify(body, forwarded(signature))
        await env.verify(body + b" ", forwarded(signature))
        await env.verify(body, forwarded("zz"), name="nope")
        await env.verify(b"q" * (LIMIT + 1), forwarded(signature))
        await env.seen.response(await env.local.get("/metrics"))
        await env.seen.response(await env.sidecar.admin.get("/v1/credentials/kopokopo"))
    view = json.loads(env.seen.texts[-2])
    assert "api_key" in view["secret_fields"] and "api_key" not in view["fields"]
    env.seen.add("\n".join(repr(e) for e in logs))
    assert [e["outcome"] for e in logs if e["event"] == "webhook_signature_checked"] == [
        "valid",
        "invalid",
    ]
    assert env.seen.hits([API_KEY, CLIENT_SECRET]) == []
    print(f"leak scan: {env.seen.size[0]} texts, {env.seen.size[1]} lines, no secret")


async def test_openapi_documents_a_raw_body(env: Env) -> None:
    """The generated document lists the route with a binary body of any type and its codes."""
    doc = await (await env.sidecar.admin.get("/v1/openapi.json")).json()
    op = doc["paths"]["/v1/credentials/{name}/webhook-signature/verify"]["post"]
    assert list(op["requestBody"]["content"]) == ["*/*"]
    assert {"200", "404", "413", "422"} <= set(op["responses"])


async def test_proxy_role_with_the_proxy_policy_verifies_over_its_local_listener(
    env: Env, openbao: OpenBao, prefix: str
) -> None:
    """`sidecar run` (proxy role), whose Vault token may only read and decrypt, answers the
    verdict on listen.local over a real socket: no write right is needed to check a webhook."""
    token = token_for(openbao, policy("proxy-policy.hcl", prefix))
    server = Server(role_config(openbao, prefix, env.upstreams, token), "proxy")
    await server.start()
    try:
        await server.runtime.wait_ready(15)
        body, signature = await env.deliver(EVENT)
        url = f"http://{server.config.listen.local}{URL}"
        async with aiohttp.ClientSession() as http:
            for sent, expected in ((body, True), (body[:-1], False)):
                async with http.post(url, data=sent, headers=forwarded(signature)) as r:
                    assert (r.status, await r.json()) == (200, {"valid": expected})
    finally:
        await server.stop()


async def exchange(env: Env, head: str, body: bytes = b"") -> bytes:
    """Send a raw request head (and body, if any) to the local listener; the first bytes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.local.server.port)
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return answer


async def test_expect_continue_only_for_a_body_that_will_be_read(env: Env) -> None:
    """Expect: 100-continue: a declared 1 GiB body gets 413 at once, never 100 Continue; a
    fitting one gets 100 Continue, then its verdict."""
    head = f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
    big = await exchange(env, head + f"Content-Length: {1 << 30}\r\n{HEADER}: 00\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413 ") and b'"SC4047"' in big
    body, signature = await env.deliver(EVENT)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.local.server.port)
    writer.write(f"{head}Content-Length: {len(body)}\r\n{HEADER}: {signature}\r\n\r\n".encode())
    await writer.drain()
    assert (
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        == b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(body)
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"valid": true}')


async def test_the_kopokopo_peer_signs_webhooks_the_sidecar_verifies(
    env: Env, aiohttp_client: Any
) -> None:
    """The shipped Kopokopo peer (as `make run` starts it) sends a webhook: valid, then tampered."""
    cfg = kopokopo.KopokopoConfig(clients={CLIENT_ID: CLIENT_SECRET}, webhook_key=API_KEY)
    env.peer = await aiohttp_client(kopokopo.make_app(cfg))
    body, signature = await env.deliver(EVENT)
    assert await env.verify(body, forwarded(signature)) == (200, {"valid": True})
    tampered = body.replace(b"OJM6Q1W84K", b"OJM6Q1W84X")
    assert await env.verify(tampered, forwarded(signature)) == (200, {"valid": False})
