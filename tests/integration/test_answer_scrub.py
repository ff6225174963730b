"""Answers never carry a secret back to the app (``sidecar/proxy/scrub.py``), real OpenBao.

The providers here echo what the sidecar sent them: a raw provider quoting the injected key in
a header or in its body (split across chunks at every offset), and the Kopokopo sandbox peer
with an added echo route and its payment view, which shows the fields it stored.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
from aiohttp import web
from structlog.testing import capture_logs

from sidecar.sandbox import kopokopo
from sidecar.sandbox.oauth2 import OAUTH2_STATE
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.integration.test_upstream_safety import (
    KEY,
    RawProvider,
    exchange,
    header,
    raw_provider,
    sidecar_for,
)
from tests.kopokopo import CLIENT_ID, STK, k2_upstream
from tests.leakscan import Collected

SECRET = "k2-real-client-secret-scrub"
GET = b"GET /up/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
MASK = b"*" * len(KEY)


def injected(head: bytes) -> bytes:
    """The Authorization value the sidecar sent (the api_key), from a raw request head."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"authorization:"):
            return line.split(b":", 1)[1].strip()
    raise AssertionError("no Authorization sent")


def redactions(sc: Sidecar, upstream: str) -> float:
    value = sc.runtime.metrics.registry.get_sample_value(
        "sidecar_answer_redactions_total", {"upstream": upstream}
    )
    return value or 0.0


def body_of(raw: bytes) -> bytes:
    """The body of a raw answer, de-chunked when chunked (framing checked on the way)."""
    rest = raw.partition(b"\r\n\r\n")[2]
    if header(raw, "Transfer-Encoding") != "chunked":
        length = header(raw, "Content-Length")
        assert length is not None and int(length) == len(rest)
        return rest
    out = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        assert size > 0 or rest == b"\r\n"  # no empty chunk before the last
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size:]
        assert rest.startswith(b"\r\n")
        rest = rest[2:]


async def test_secret_echoed_in_a_header_is_502_and_never_reaches_the_app(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A header (or reason phrase) quoting the injected key: 502 SC4030, request sent complete."""

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        key = injected(await state.read_head(reader))
        where = state.connections
        if where == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Echo: auth=%s\r\nContent-Length: 2\r\n\r\nok" % key)
        else:
            writer.write(b"HTTP/1.1 400 Bad key %s\r\nContent-Length: 2\r\n\r\nok" % key)
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        for _ in range(2):
            raw = await exchange(sc, GET)
            assert raw.startswith(b"HTTP/1.1 502 ")
            assert header(raw, "X-Sidecar-Error") == "SC4030"
            assert header(raw, "X-Sidecar-Request-Sent") == "complete"
            assert KEY.encode() not in raw


async def test_secret_split_across_chunks_is_masked_at_every_offset(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """The key echoed in a body, cut at every offset, chunked and sized: masked, framing exact."""
    cuts = list(range(len(KEY) + 1))
    plan = [(cut, chunked) for chunked in (True, False) for cut in cuts]

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        key = injected(await state.read_head(reader))
        cut, chunked = plan[state.connections - 1]
        body = b"token=" + key + b";again=" + key + b";end"
        parts = [body[: 6 + cut], body[6 + cut : 20 + cut], body[20 + cut :]]
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked and part else part)
            await writer.drain()
            await asyncio.sleep(0.002)  # separate reads at the sidecar, most of the time
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        for _ in plan:
            raw = await exchange(sc, GET)
            assert KEY.encode() not in raw
            assert body_of(raw) == b"token=" + MASK + b";again=" + MASK + b";end"
        assert redactions(sc, "up") == 2 * len(plan)


async def test_large_streamed_body_is_masked(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Past the one-write size the body streams: the key is masked there too, length unchanged."""
    filler = b"x" * (200 * 1024)

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        key = injected(await state.read_head(reader))
        body = filler + key + filler
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET)
        assert body_of(raw) == filler + MASK + filler


async def test_no_false_redaction_of_short_or_partial_values(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """A secret under 8 bytes is not scanned; a near miss of a long one passes untouched."""
    near = KEY[:-1].encode() + b"|" + KEY[1:].encode()

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        key = injected(await state.read_head(reader))
        body = near + b" " + key + b" pin=k3y-42"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, GET)
        assert body_of(raw) == near + b" " + MASK + b" pin=k3y-42"
        assert redactions(sc, "up") == 1
        await sc.runtime.store.put("up", "up", "sandbox", {"api_key": "k3y-42"}, {})
        raw = await exchange(sc, GET)
        assert body_of(raw) == near + b" k3y-42 pin=k3y-42"  # too short to scan
        assert redactions(sc, "up") == 1


async def test_compressed_answer_is_refused_and_identity_is_asked(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """The app's Accept-Encoding becomes identity; a gzip answer anyway is 502 SC4031 (but a
    bodiless answer to HEAD passes: there is nothing to scan)."""
    seen: list[bytes] = []

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        seen.append(head)
        body = gzip.compress(b"token=" + injected(head))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), b"" if head.startswith(b"HEAD") else body)
        )
        await writer.drain()

    request = GET.replace(b"\r\n\r\n", b"\r\nAccept-Encoding: gzip, br\r\n\r\n")
    async with raw_provider(serve) as (_provider, port):
        sc = await sidecar_for(make_config, make_sidecar, f"http://127.0.0.1:{port}")
        raw = await exchange(sc, request)
        assert raw.startswith(b"HTTP/1.1 502 ") and header(raw, "X-Sidecar-Error") == "SC4031"
        assert header(raw, "X-Sidecar-Request-Sent") == "complete"
        assert b"accept-encoding: identity\r\n" in seen[0].lower()
        assert b"gzip" not in seen[0]
        raw = await exchange(sc, request.replace(b"GET ", b"HEAD ", 1))
        assert raw.startswith(b"HTTP/1.1 200 ")  # no body to scan: a HEAD answer passes


async def test_opt_out_relays_answers_as_they_are(
    make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """With ``scrub_answers: false`` the echo and the app's Accept-Encoding pass unchanged."""
    seen: list[bytes] = []

    async def serve(state: RawProvider, reader: Any, writer: Any) -> None:
        head = await state.read_head(reader)
        seen.append(head)
        key = injected(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\nX-Echo: %s\r\nContent-Length: %d\r\n\r\n%s" % (key, len(key), key)
        )
        await writer.drain()

    request = GET.replace(b"\r\n\r\n", b"\r\nAccept-Encoding: gzip\r\n\r\n")
    async with raw_provider(serve) as (_provider, port):
        url = f"http://127.0.0.1:{port}"
        sc = await sidecar_for(make_config, make_sidecar, url, scrub_answers=False)
        raw = await exchange(sc, request)
        assert raw.startswith(b"HTTP/1.1 200 ") and body_of(raw) == KEY.encode()
        assert header(raw, "X-Echo") == KEY
        assert b"Accept-Encoding: gzip\r\n" in seen[0]


# ----------------------------------------------------------------- OAuth2: the real token


async def k2_echo_peer(aiohttp_server: Any) -> tuple[Any, str]:
    """The Kopokopo peer plus ``/api/v2/echo``: it quotes the request's headers, body and head."""
    app = kopokopo.make_app(kopokopo.KopokopoConfig(clients={CLIENT_ID: SECRET}))

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        doc = json.dumps({"headers": dict(request.headers), "auth": auth}).encode()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if request.query.get("in") == "header":
            resp.headers["X-Seen-Authorization"] = auth
        await resp.prepare(request)
        for at in range(0, len(doc), 7):  # small chunks: the token spans several
            await resp.write(doc[at : at + 7])
        await resp.write_eof()
        return resp

    app.router.add_get("/api/v2/echo", echo)
    server = await aiohttp_server(app)
    return app[OAUTH2_STATE], str(server.make_url("/")).rstrip("/")


async def k2_sidecar(
    make_config: MakeConfig, make_sidecar: MakeSidecar, url: str, **cfg: Any
) -> Sidecar:
    sc = await make_sidecar(make_config({"kopokopo": k2_upstream(url, **cfg)}))
    body = {"upstream": "kopokopo", "fields": {"client_id": CLIENT_ID, "client_secret": SECRET}}
    r = await sc.admin.put("/v1/credentials/kopokopo", json=body)
    assert r.status in (200, 201), await r.text()  # a second sidecar shares the prefix
    return sc


async def received(resp: aiohttp.ClientResponse, seen: list[bytes]) -> Any:
    """The answer's JSON body; everything the SDK side saw of it is added to ``seen``."""
    body = await resp.read()
    head = b"".join(b"%s: %s\n" % pair for pair in resp.raw_headers)
    seen.append(f"{resp.status} {resp.reason}\n".encode() + head + body)
    return json.loads(body)


async def test_emulated_token_sdk_never_sees_the_real_token_or_secret(
    make_config: MakeConfig, make_sidecar: MakeSidecar, aiohttp_server: Any
) -> None:
    """Token emulation + an echoing route: body masked, header echo 502, stored secret masked."""
    with capture_logs() as logs:
        seen, real = await _k2_echoes(make_config, make_sidecar, aiohttp_server)
    collected = Collected([answer.decode("latin-1") for answer in seen] + [str(logs)])
    assert collected.hits([SECRET, *real]) == []  # nor Base64/hex of them, nor in the logs


async def _k2_echoes(
    make_config: MakeConfig, make_sidecar: MakeSidecar, aiohttp_server: Any
) -> tuple[list[bytes], set[str]]:
    """The SDK side's view of the echo route and of a stored-and-shown secret."""
    state, url = await k2_echo_peer(aiohttp_server)
    placeholder = {"{{K2_SECRET}}": "client_secret"}
    sc = await k2_sidecar(make_config, make_sidecar, url)
    form = {"client_id": "x", "client_secret": "y", "grant_type": "client_credentials"}
    r = await sc.proxy.post("/kopokopo/oauth/token", data=form)
    opaque = (await r.json())["access_token"]
    auth = {"Authorization": f"Bearer {opaque}"}
    seen: list[bytes] = []
    doc = await received(await sc.proxy.get("/kopokopo/api/v2/echo", headers=auth), seen)
    refused = await sc.proxy.get("/kopokopo/api/v2/echo?in=header", headers=auth)
    assert refused.status == 502 and refused.headers["X-Sidecar-Error"] == "SC4030"
    await received(refused, seen)
    real = set(state.tokens)
    assert real and opaque not in real
    assert doc["auth"] == "Bearer " + "*" * len(next(iter(real)))
    # A placeholder (no token_path) puts the client secret in a stored field; the view shows it.
    sc2 = await k2_sidecar(
        make_config, make_sidecar, url, token_path=None, placeholders=placeholder
    )
    pay = {**STK, "metadata": {"note": "{{K2_SECRET}}"}}
    created = await sc2.proxy.post("/kopokopo/api/v2/incoming_payments", json=pay)
    assert created.status == 201, await created.text()
    payment = created.headers["Location"].rsplit("/", 1)[1]
    view = await sc2.proxy.get("/kopokopo/api/v2/incoming_payments/" + payment)
    stored = await received(view, seen)
    assert stored["data"]["attributes"]["metadata"]["note"] == "*" * len(SECRET)
    return seen, real | set(state.tokens)
