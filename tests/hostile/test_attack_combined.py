"""An attacker's pass over features that were built apart and meet on one request: answer
scrubbing with placeholders and token emulation, and the Content-Encoding check.

The app in the pod is semi-trusted (it wants the real secret or token back), the provider is
untrusted (its answers may echo what it got, in any spelling). Real OpenBao, raw loopback
providers where the answer's framing is the attack.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.errors import ConfigError
from sidecar.sandbox.openbao import OpenBao
from sidecar.server import Server
from tests.integration.conftest import (  # noqa: F401  (fixtures used by name)
    MakeConfig,
    MakeSidecar,
    make_config,
    make_sidecar,
)
from tests.integration.test_answer_scrub import SECRET as K2_SECRET
from tests.integration.test_answer_scrub import k2_echo_peer, k2_sidecar
from tests.integration.test_roles import (  # noqa: F401  (fixture used by name)
    policy,
    role_config,
    servers,
    token_for,
)
from tests.integration.test_upstream_safety import (
    KEY,
    RawProvider,
    exchange,
    header,
    raw_provider,
    sidecar_for,
)
from tests.kopokopo import k2_upstream

GET = b"GET /up/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def emulating_upstream(**extra: Any) -> dict[str, Any]:
    return k2_upstream("http://127.0.0.1:9", **extra)


def test_token_emulation_cannot_opt_out_of_scrubbing(make_config: MakeConfig) -> None:  # noqa: F811
    """``scrub_answers: false`` with token_path is a config error: token emulation promises the
    app never holds the real token, and only the scan keeps an echoing provider from handing it
    back (on 9aa6a07 the pair was accepted and the echo relayed as received)."""
    with pytest.raises(ConfigError) as err:
        make_config({"k2": emulating_upstream(scrub_answers=False)})
    assert "scrub_answers" in str(err.value) and "token_path" in str(err.value)
    make_config({"k2": emulating_upstream()})  # scrubbed: accepted
    make_config({"k2": emulating_upstream(token_path=None, scrub_answers=False)})  # no promise


COMPRESSED = [
    b"Content-Encoding: GZIP",
    b"Content-Encoding: x-gzip",
    b"Content-Encoding: identity, gzip",
    b"Content-Encoding: gzip, identity",
    b"Content-Encoding: identity\r\nContent-Encoding: gzip",
    b"Content-Encoding: \t gzip \t",
    b"content-encoding: br",
    b"Content-Encoding: identity,br",
]


@pytest.mark.parametrize("line", COMPRESSED)
async def test_compressed_answer_spellings_are_refused(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
    line: bytes,
) -> None:
    """Every spelling of a compressed answer (case, list, repeated header, blanks) is 502
    SC4031: a compressed body would carry an echoed secret past the scan."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        await state.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n%s\r\nContent-Length: 4\r\n\r\nzzzz" % line)
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET)
    assert raw.startswith(b"HTTP/1.1 502 "), raw[:80]
    assert header(raw, "X-Sidecar-Error") == "SC4031"
    assert b"zzzz" not in raw


async def test_identity_and_empty_encodings_pass(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
) -> None:
    """``identity`` and an empty Content-Encoding are plain bytes: relayed and scanned."""
    lines = [b"Content-Encoding: identity", b"Content-Encoding: IDENTITY", b"Content-Encoding:"]

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        key = head.split(b"uthorization: ", 1)[1].split(b"\r\n", 1)[0]
        line = lines[state.connections - 1]
        body = b"echo=" + key
        writer.write(b"HTTP/1.1 200 OK\r\n%s\r\nContent-Length: %d\r\n\r\n" % (line, len(body)))
        writer.write(body)
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        for _ in lines:
            raw = await exchange(sc, GET)
            assert raw.startswith(b"HTTP/1.1 200 ")
            assert raw.endswith(b"echo=" + b"*" * len(KEY))


SHORT = "4821"  # a PIN-like secret field: under scrub.MIN_SECRET, never a needle


async def test_short_secret_placeholder_is_refused_not_echoed(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
) -> None:
    """A placeholder whose field is too short to be masked in answers is refused (SC4032) and
    nothing is sent: the app chooses where the value goes, so a provider that echoes that field
    handed it back verbatim (on 9aa6a07 the echo ``{"pin": "4821"}`` reached the app)."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with raw_provider(serve) as (provider, port):
        sc = await make_sidecar(
            make_config(
                {
                    "up": {
                        "url": f"http://127.0.0.1:{port}",
                        "scheme": ["api_key", "hmac"],
                        "credential": "up",
                        "environment": "sandbox",
                        "placeholders": {"{{PIN}}": "hmac_key"},
                    }
                }
            )
        )
        await sc.runtime.store.put("up", "up", "sandbox", {"api_key": KEY, "hmac_key": SHORT}, {})
        body = json.dumps({"pin": "{{PIN}}"}).encode()
        request = (
            b"POST /up/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        raw = await exchange(sc, request)
    assert SHORT.encode() not in raw.partition(b"\r\n\r\n")[2], raw
    assert header(raw, "X-Sidecar-Error") == "SC4032"
    assert provider.connections == 0


async def test_range_requests_cannot_read_an_echoed_secret_in_pieces(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
) -> None:
    """A provider serving a document that holds the injected key, honouring ``Range``: the app
    asks for it in pieces shorter than the key, so no piece is a needle, and glues them back. On
    a scrubbed upstream the sidecar does not forward ``Range``/``If-Range`` (the answer is the
    whole, scanned document); on 9aa6a07 two ranges handed the app the whole key."""
    cut = len("token=") + len(KEY) // 2

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        key = head.split(b"uthorization: ", 1)[1].split(b"\r\n", 1)[0]
        doc = b"token=" + key + b";"
        ranged = [line for line in head.split(b"\r\n") if line.lower().startswith(b"range:")]
        if not ranged:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(doc), doc))
        else:
            first, _, last = ranged[0].split(b"=", 1)[1].partition(b"-")
            end = int(last) + 1 if last else len(doc)
            part = doc[int(first) : end]
            writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n" % len(part))
            writer.write(
                b"Content-Range: bytes %s-%d/%d\r\n\r\n%s" % (first, end - 1, len(doc), part)
            )
        await writer.drain()

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        pieces = []
        for spec in (b"0-%d" % (cut - 1), b"%d-" % cut):
            request = GET.replace(b"\r\n\r\n", b"\r\nRange: bytes=%s\r\nIf-Range: x\r\n\r\n" % spec)
            pieces.append((await exchange(sc, request)).partition(b"\r\n\r\n")[2])
        assert not any(b"range" in got.lower() for got in provider.received)
    assert KEY.encode() not in b"".join(pieces)
    assert pieces == [b"token=" + b"*" * len(KEY) + b";"] * 2


async def test_proxy_role_serves_emulation_keys_and_scrub_with_read_only_vault(
    openbao: OpenBao,
    prefix: str,
    aiohttp_server: Any,
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
    servers: list[Server],  # noqa: F811
) -> None:
    """A proxy-role sidecar on deploy/vault/proxy-policy.hcl (read, decrypt, hmac: no write)
    authenticates a proxy key at the emulated token endpoint, spends the opaque token, and
    masks the real Bearer an echo route quotes: none of it needs a Vault write at run time."""
    peer, url = await k2_echo_peer(aiohttp_server)
    upstream_extra = {"require_proxy_key": True}
    admin = await k2_sidecar(make_config, make_sidecar, url, **upstream_extra)  # root: seeds
    r = await admin.admin.post("/v1/credentials/kopokopo/keys", json={"permissions": ["* /*"]})
    assert r.status == 201, await r.text()
    key = await r.json()
    token = token_for(openbao, policy("proxy-policy.hcl", prefix))
    upstreams = {
        "kopokopo": {
            **admin.runtime.config.upstreams["kopokopo"].model_dump(exclude_unset=True, mode="json")
        }
    }
    proxy = Server(role_config(openbao, prefix, upstreams, token), "proxy")
    servers.append(proxy)
    await proxy.start()
    await proxy.runtime.wait_ready(15)
    base = f"http://{proxy.runtime.config.listen.proxy}/kopokopo"
    form = {"grant_type": "client_credentials", "client_id": key["key_id"]}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/oauth/token", data={**form, "client_secret": key["key"]}
        ) as r:
            assert r.status == 200, await r.text()
            opaque = (await r.json())["access_token"]
        async with http.get(
            f"{base}/api/v2/echo", headers={"Authorization": f"Bearer {opaque}"}
        ) as r:
            assert r.status == 200, await r.text()
            echoed = json.loads(await r.read())["auth"]
    real = set(peer.tokens)
    assert real and echoed.startswith("Bearer *") and set(echoed[7:]) == {"*"}
    assert not any(t in echoed for t in real) and K2_SECRET not in echoed


async def test_a_token_replaced_after_a_401_stays_a_needle(
    aiohttp_server: Any,
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
) -> None:
    """A provider that answers 401 once to a token it still honours, then shows its request
    log (every Authorization it got): the retry's answer, and a later call's, quote the first
    token too. It is masked like the current one (on 9aa6a07 only the last token sent in this
    request was a needle, so the first, still valid, reached the app)."""
    issued: list[str] = []
    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        issued.append(f"real-token-{len(issued)}-{'x' * 24}")
        return web.json_response({"access_token": issued[-1], "expires_in": 3600})

    async def call(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if len(seen) == 1:  # a spurious 401: the token is still good
            return web.Response(status=401)
        return web.json_response({"log": seen})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/log", call)
    server = await aiohttp_server(app)
    upstream = {
        "url": str(server.make_url("/")).rstrip("/"),
        "scheme": "oauth2_client_credentials",
        "credential": "up",
        "environment": "sandbox",
        "token_url": "/oauth/token",
    }
    sc = await make_sidecar(make_config({"up": upstream}))
    await sc.runtime.store.put(
        "up", "up", "sandbox", {"client_id": "id", "client_secret": "s" * 20}, {}
    )
    bodies = []
    for _ in range(2):
        r = await sc.proxy.get("/up/log")
        assert r.status == 200, await r.text()
        bodies.append(await r.text())
    assert len(issued) == 2 and len(seen) == 3  # 401, retry, a later call
    for body in bodies:
        assert not any(t in body for t in issued), body


BODILESS = [
    (b"HEAD", b"200 OK"),
    (b"GET", b"204 No Content"),
    (b"GET", b"304 Not Modified"),
]


@pytest.mark.parametrize(("method", "status"), BODILESS)
async def test_a_bodiless_answer_with_the_key_in_its_head_is_refused(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
    method: bytes,
    status: bytes,
) -> None:
    """HEAD, 204 and 304 skip the body scan (and the gzip check), never the head's: 502 SC4030."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        key = head.split(b"uthorization: ", 1)[1].split(b"\r\n", 1)[0]
        writer.write(b'HTTP/1.1 %s\r\nETag: "%s"\r\nContent-Length: 0\r\n\r\n' % (status, key))
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET.replace(b"GET", method, 1))
    assert header(raw, "X-Sidecar-Error") == "SC4030"
    assert KEY.encode() not in raw


async def test_trace_echo_of_the_request_is_masked(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
) -> None:
    """TRACE: a provider answering with the request it received (message/http) quotes the
    injected key in its body; the app gets it masked."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: message/http\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(head), head))
        await writer.drain()

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET.replace(b"GET", b"TRACE", 1))
    assert provider.connections == 1 and KEY.encode() in provider.received[0]
    assert raw.startswith(b"HTTP/1.1 200 ") and b"*" * len(KEY) in raw
    assert KEY.encode() not in raw


async def test_a_rotated_key_the_provider_logged_stays_masked(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
) -> None:
    """Rotation: the provider keeps the old key valid for an overlap and shows its request log;
    after the credential is replaced, the log quotes the old key. It was injected in
    Authorization, so it stays a needle (on 9aa6a07 only the current key was)."""
    new_key = "SECR_rotated_key_v2_0002"

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        await state.read_head(reader)
        log = b"".join(state.received)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(log), log))
        await writer.drain()

    async with raw_provider(serve) as (provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        await exchange(sc, GET)
        await sc.runtime.store.put("up", "up", "sandbox", {"api_key": new_key}, {})
        raw = await exchange(sc, GET)
    assert KEY.encode() in provider.received[0] and new_key.encode() in provider.received[1]
    assert KEY.encode() not in raw and new_key.encode() not in raw
