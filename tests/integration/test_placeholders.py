"""Placeholders end to end: a real sidecar on the suite's OpenBao, a recording sandbox peer.

The peer records every request before checking auth, so "nothing was sent" is a count of zero,
and "the provider got the substituted bytes" is the recorded body with its Content-Length.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from structlog.testing import capture_logs
from yarl import URL

from sidecar.sandbox import api_key_peer, hmac_peer
from sidecar.sandbox.api_key_peer import API_KEY_STATE, ApiKeyPeerConfig
from sidecar.sandbox.hmac_peer import HMAC_STATE
from sidecar.sandbox.recording import PeerState
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.leakscan import Collected

KEY = 'SECR_ph"&=%+\\key'  # the Authorization key, also sent in bodies by the "SDK"
PUBLIC = 'pub "q" & 100% + \u00e9\u4e2d'  # a public field with every escaping hazard
PLACEHOLDERS = {"{{API_KEY}}": "api_key", "{{PUBLIC}}": "public_key"}
HOST = "api.pay.test"


def upstream(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "hosts": [HOST],
        "scheme": "api_key",
        "credential": "pay",
        "environment": "sandbox",
        "placeholders": PLACEHOLDERS,
        **extra,
    }


async def sidecar_and_peer(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar, **extra: Any
) -> tuple[Sidecar, PeerState]:
    """The generic api_key peer (wants ``Authorization: KEY``) behind a sidecar with placeholders."""
    peer = api_key_peer.make_app(ApiKeyPeerConfig(required_headers={"Authorization": KEY}))
    server = await aiohttp_server(peer)
    url = str(server.make_url("/")).rstrip("/")
    sc = await make_sidecar(make_config({"pay": upstream(url, **extra)}))
    fields = {"api_key": KEY, "public_key": PUBLIC}
    r = await sc.admin.put("/v1/credentials/pay", json={"upstream": "pay", "fields": fields})
    assert r.status == 201, await r.text()
    return sc, peer[API_KEY_STATE]


@pytest.fixture
async def pair(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> tuple[Sidecar, PeerState]:
    return await sidecar_and_peer(aiohttp_server, make_config, make_sidecar)


async def test_json_body_reaches_the_provider_substituted_with_its_length(
    pair: tuple[Sidecar, PeerState],
) -> None:
    """Path mode: the provider gets valid JSON holding the exact values, and a matching length."""
    sc, state = pair
    sent = b'{"amount": 10.50, "key": "{{API_KEY}}", "meta": {"pub": "{{PUBLIC}}"}}'
    with capture_logs() as logs:
        r = await sc.proxy.post(
            "/pay/v1/charge", data=sent, headers={"Content-Type": "application/json"}
        )
        assert r.status == 200, await r.text()
    assert logs and KEY not in repr(logs) and json.dumps(KEY) not in repr(logs)
    seen = state.seen[-1]
    assert json.loads(seen.body) == {"amount": 10.5, "key": KEY, "meta": {"pub": PUBLIC}}
    assert seen.body.startswith(b'{"amount": 10.50, "key": "')
    assert seen.headers["Content-Length"] == str(len(seen.body))
    assert KEY not in await r.text()


async def test_form_body_and_query_substituted(pair: tuple[Sidecar, PeerState]) -> None:
    """A form body and an (encoded) query value both decode to the exact values upstream."""
    sc, state = pair
    target = URL("/pay/v1/token?client=%7B%7BPUBLIC%7D%7D&x=1", encoded=True)
    r = await sc.proxy.post(
        target,
        data=b"grant_type=client_credentials&client_secret={{API_KEY}}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 200, await r.text()
    seen = state.seen[-1]
    assert dict(parse_qsl(seen.body.decode())) == {
        "grant_type": "client_credentials",
        "client_secret": KEY,
    }
    assert dict(parse_qsl(seen.query)) == {"client": PUBLIC, "x": "1"}
    assert seen.headers["Content-Length"] == str(len(seen.body))


async def test_forward_mode_substitutes_too(pair: tuple[Sidecar, PeerState]) -> None:
    """An absolute-form request for the upstream's host is substituted like path mode."""
    sc, state = pair
    body = b'{"key":"{{API_KEY}}"}'
    head = (
        f"POST http://{HOST}/v1/charge?pub=%7B%7BPUBLIC%7D%7D HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(sc.proxy.host, sc.proxy.port)
    writer.write(head.encode() + body)
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    seen = state.seen[-1]
    assert json.loads(seen.body) == {"key": KEY} and dict(parse_qsl(seen.query)) == {"pub": PUBLIC}
    assert seen.headers["Content-Length"] == str(len(seen.body))


REFUSED = [
    ("/pay/v1/x", b'{"key": "{{NOPE}}"}', {"Content-Type": "application/json"}, "SC4050"),
    (
        "/pay/v1/x",
        b'{"key": "%7B%7BAPI_KEY%7D%7D"}',
        {"Content-Type": "application/json"},
        "SC4050",
    ),
    (
        "/pay/v1/x",
        b'{"k": "\\\\u007b\\\\u007bAPI_KEY}}"}',
        {"Content-Type": "application/json"},
        "SC4050",
    ),
    ("/pay/v1/x", b'{"k": "Bearer {{API_KEY}}"}', {"Content-Type": "application/json"}, "SC4050"),
    ("/pay/v1/x?k=%257B%257BAPI_KEY%257D%257D", None, {}, "SC4050"),
    ("/pay/v1/x", b"k={{API_KEY}}", {"Content-Type": "text/plain"}, "SC4051"),
    ("/pay/v1/x", b'{"k": "{{API_KEY}}"', {"Content-Type": "application/json"}, "SC4051"),
    (
        "/pay/v1/x",
        b"\x1f\x8b",
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        "SC4053",
    ),
    ("/pay/v1/x", b'{"{{API_KEY}}": 1}', {"Content-Type": "application/json"}, "SC4054"),
    ("/pay/v1/x?%7B%7BAPI_KEY%7D%7D=1", None, {}, "SC4054"),
]


async def test_refusals_send_nothing_and_leak_nothing(pair: tuple[Sidecar, PeerState]) -> None:
    """Each leftover placeholder is 400 with its code; the provider records zero requests."""
    sc, state = pair
    seen = Collected()
    with capture_logs() as logs:
        for target, body, headers, code in REFUSED:
            r = await sc.proxy.post(URL(target, encoded=True), data=body, headers=headers)
            await seen.response(r)
            assert (r.status, r.headers.get("X-Sidecar-Error")) == (400, code), target
    assert len(state.seen) == 0
    seen.add(repr(logs))
    assert seen.hits([KEY, PUBLIC]) == []
    print(f"scanned {seen.size} (texts, lines) for {len(REFUSED)} refusals")


async def test_missing_optional_field_is_sc4052_and_nothing_sent(
    pair: tuple[Sidecar, PeerState],
) -> None:
    """A placeholder for a field this credential lacks is refused at request time."""
    sc, state = pair
    r = await sc.admin.put(
        "/v1/credentials/pay", json={"upstream": "pay", "fields": {"api_key": KEY}}
    )
    assert r.status == 200
    r = await sc.proxy.post("/pay/v1/x", json={"pub": "{{PUBLIC}}"})
    assert (r.status, r.headers.get("X-Sidecar-Error")) == (400, "SC4052")
    assert "{{PUBLIC}}" in (await r.json())["message"] and len(state.seen) == 0


async def test_body_over_max_body_is_413_and_query_only_reads_nothing(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """With placeholders the body is read whole up to max_body (413 beyond); a GET needs none."""
    sc, state = await sidecar_and_peer(aiohttp_server, make_config, make_sidecar, max_body=64)
    r = await sc.proxy.post("/pay/v1/x", json={"k": "{{API_KEY}}", "pad": "x" * 64})
    assert (r.status, r.headers.get("X-Sidecar-Error")) == (413, "SC4005")
    assert len(state.seen) == 0
    r = await sc.proxy.get(URL("/pay/v1/x?k=%7B%7BAPI_KEY%7D%7D", encoded=True))
    assert r.status == 200 and len(state.seen) == 1
    assert dict(parse_qsl(state.seen[-1].query)) == {"k": KEY}


async def test_hmac_signs_the_substituted_body(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Substitution runs before the scheme: the peer verifies the signature over the final body."""
    template = "{timestamp}\n{method}\n{path}\n{body_sha256}"
    peer = hmac_peer.HmacPeerConfig(keys={"k": "hmac-secret-7a7a"}, template=template)
    app = hmac_peer.make_app(peer)
    url = str((await aiohttp_server(app)).make_url("/")).rstrip("/")
    options = {"template": template, "placeholders": {"{{HMAC}}": "hmac_key"}}
    cfg = make_config({"h": {**upstream(url, **options), "scheme": "hmac", "credential": "h"}})
    sc = await make_sidecar(cfg)
    fields = {"hmac_key": "hmac-secret-7a7a"}
    r = await sc.admin.put("/v1/credentials/h", json={"upstream": "h", "fields": fields})
    assert r.status == 201, await r.text()
    r = await sc.proxy.post("/h/v1/pay", json={"echo": "{{HMAC}}"})
    assert r.status == 200, await r.text()
    assert json.loads(app[HMAC_STATE].seen[-1].body) == {"echo": "hmac-secret-7a7a"}


async def test_body_of_max_size_is_rewritten_off_the_loop(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A body of exactly max_body (512 KiB, over the 64 KiB inline limit) arrives substituted."""
    size = 512 * 1024  # the peer (aiohttp) takes at most 1 MiB, and the body grows
    sc, state = await sidecar_and_peer(aiohttp_server, make_config, make_sidecar, max_body=size)
    items = [{"k": "{{API_KEY}}", "n": i} for i in range(2000)]
    sent = json.dumps({"items": items}).encode().ljust(size, b" ")
    r = await sc.proxy.post("/pay/v1/bulk", data=sent, headers={"Content-Type": "application/json"})
    assert r.status == 200, await r.text()
    seen = state.seen[-1]
    assert all(item["k"] == KEY for item in json.loads(seen.body)["items"])
    assert seen.headers["Content-Length"] == str(len(seen.body))
    assert len(seen.body) == size + 2000 * (len(json.dumps(KEY)) - len('"{{API_KEY}}"'))
