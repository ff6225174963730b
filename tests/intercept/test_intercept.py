"""CONNECT interception end to end: curl, aiohttp and raw sockets against a real sidecar."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.integration.conftest import MakeConfig, MakeSidecar
from tests.intercept.conftest import (
    HOST,
    SECRET,
    WALLETS,
    IntaSendPeer,
    Intercepting,
    clean_env,
    run,
    upstream,
)

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
URL = f"https://{HOST}/api/v1/wallets/"


async def curl(it: Intercepting, *args: str) -> tuple[int, str, str]:
    argv = ("curl", "-sS", "--max-time", "20", "--proxy", it.proxy_url, *args)
    return await run(*argv, env=clean_env())


async def raw_connect(
    port: int | None, target: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a connection to the proxy, send CONNECT and read the answer's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


@needs_curl
async def test_curl_reaches_the_provider_host_and_the_secret_is_added(
    intercepting: Intercepting,
) -> None:
    """curl with the sidecar's CA gets the peer's answer; the peer saw the real token."""
    code, out, err = await curl(intercepting, "--cacert", str(intercepting.ca_file), URL)
    assert code == 0, err
    assert json.loads(out) == WALLETS
    seen = intercepting.peer.seen[-1]
    assert seen["Authorization"] == f"Bearer {SECRET}"
    assert seen["path"] == "/api/v1/wallets/"


@needs_curl
async def test_curl_without_the_ca_fails_verification(intercepting: Intercepting) -> None:
    """Without the sidecar's CA, curl's TLS check fails and nothing reaches the provider."""
    code, _, err = await curl(intercepting, URL)
    assert code == 60, err
    assert intercepting.peer.seen == []


@needs_curl
async def test_curl_connect_to_an_unconfigured_host_is_refused(intercepting: Intercepting) -> None:
    """curl reports the CONNECT failure: 403 from the sidecar, no tunnel at all."""
    code, _, err = await curl(
        intercepting, "--cacert", str(intercepting.ca_file), "https://example.com/"
    )
    assert code == 56 and "CONNECT tunnel failed, response 403" in err
    assert intercepting.peer.seen == []


@pytest.mark.parametrize(
    "target", ["example.com:443", f"{HOST}:8443", "127.0.0.1:443", "[::1]:443"]
)
async def test_connect_refusals_are_403_sc4001(intercepting: Intercepting, target: str) -> None:
    """Another host, another port or an IP literal: 403 SC4001 and the connection stays HTTP."""
    _, writer, head = await raw_connect(intercepting.sidecar.proxy.port, target)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"X-Sidecar-Error: SC4001" in head


async def test_connect_to_the_peer_itself_is_refused(intercepting: Intercepting, peer: Any) -> None:
    """The upstream's url host is an IP: it is not interceptable, so no tunnel reaches it."""
    _, writer, head = await raw_connect(intercepting.sidecar.proxy.port, f"127.0.0.1:{peer[1]}")
    writer.close()
    assert head.startswith(b"HTTP/1.1 403 ")


async def test_host_header_must_match_the_tunnel(intercepting: Intercepting) -> None:
    """Inside a tunnel to the IntaSend host, a request naming another Host is refused."""
    reader, writer, head = await raw_connect(intercepting.sidecar.proxy.port, f"{HOST}:443")
    assert head.startswith(b"HTTP/1.1 200 Connection Established")
    ctx = ssl.create_default_context(cafile=str(intercepting.ca_file))
    await writer.start_tls(ctx, server_hostname=HOST)
    writer.write(
        b"GET /api/v1/wallets/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"
    )
    raw = await reader.read()
    writer.close()
    # Refused before routing: a Host no upstream declares is misdirected (hostguard, 421).
    assert raw.startswith(b"HTTP/1.1 421 ") and b"SC1015" in raw
    assert intercepting.peer.seen == []


async def test_sni_must_match_the_connect_host(intercepting: Intercepting) -> None:
    """A client that CONNECTs to one host and names another in SNI gets no certificate."""
    _, writer, _ = await raw_connect(intercepting.sidecar.proxy.port, f"{HOST}:443")
    ctx = ssl.create_default_context(cafile=str(intercepting.ca_file))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await writer.start_tls(ctx, server_hostname="other.example")
    writer.close()


async def test_path_mode_is_never_routed_by_host(intercepting: Intercepting) -> None:
    """A plain request naming the IntaSend host in Host is not routed: only tunnels use Host."""
    resp = await intercepting.sidecar.proxy.get("/api/v1/wallets/", headers={"Host": HOST})
    assert (resp.status, resp.headers["X-Sidecar-Error"]) == (403, "SC4001")
    assert intercepting.peer.seen == []


async def test_aiohttp_client_reuses_one_tunnel(intercepting: Intercepting) -> None:
    """An aiohttp client sends several requests over one intercepted connection."""
    ctx = ssl.create_default_context(cafile=str(intercepting.ca_file))
    with capture_logs() as logs:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            for _ in range(3):
                async with http.get(URL, proxy=intercepting.proxy_url) as resp:
                    assert (resp.status, await resp.json()) == (200, WALLETS)
    assert [e["event"] for e in logs].count("intercept_established") == 1
    assert len(intercepting.peer.seen) == 3


async def test_ca_pem_is_served_and_written(intercepting: Intercepting) -> None:
    """GET /v1/ca.pem answers the same certificate the CA file holds, and nothing else."""
    resp = await intercepting.sidecar.admin.get("/v1/ca.pem")
    body = await resp.read()
    assert resp.status == 200 and resp.content_type == "application/x-pem-file"
    assert body == intercepting.ca_file.read_bytes()
    assert body.count(b"BEGIN CERTIFICATE") == 1 and b"PRIVATE" not in body


async def test_interception_off_means_no_ca_and_no_tunnel(
    make_config: MakeConfig, make_sidecar: MakeSidecar, peer: tuple[IntaSendPeer, int]
) -> None:
    """With interception disabled, /v1/ca.pem is 404 and CONNECT to a configured host is 403."""
    sidecar = await make_sidecar(make_config({"intasend": upstream(peer[1])}))
    resp = await sidecar.admin.get("/v1/ca.pem")
    assert (resp.status, (await resp.json())["code"]) == (404, "SC1005")
    _, writer, head = await raw_connect(sidecar.proxy.port, f"{HOST}:443")
    writer.close()
    assert head.startswith(b"HTTP/1.1 403 ")


async def test_host_added_by_reload_rotates_the_ca(
    intercepting: Intercepting, make_config: MakeConfig, peer: Any
) -> None:
    """A host added by a config reload gets a new CA; the file then holds new and old CAs."""
    other = {**upstream(peer[1]), "hosts": ["api.other.example"], "credential": "other"}
    intercepting.sidecar.runtime.reload(
        make_config(
            {"intasend": upstream(peer[1]), "other": other},
            intercept={"enabled": True, "ca_cert_path": str(intercepting.ca_file)},
        )
    )
    reader, writer, head = await raw_connect(
        intercepting.sidecar.proxy.port, "api.other.example:443"
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    bundle = intercepting.ca_file.read_text()
    assert bundle.count("BEGIN CERTIFICATE") == 2
    ctx = ssl.create_default_context(cadata=bundle)
    await writer.start_tls(ctx, server_hostname="api.other.example")
    writer.write(b"GET /x HTTP/1.1\r\nHost: api.other.example\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 503 ") and b"SC4002" in raw  # no credential stored yet


async def test_stop_closes_an_idle_tunnel_without_waiting_out_the_grace(
    intercepting: Intercepting,
) -> None:
    """Shutting the proxy down closes an idle intercepted keep-alive connection at once."""
    reader, writer, _ = await raw_connect(intercepting.sidecar.proxy.port, f"{HOST}:443")
    ctx = ssl.create_default_context(cafile=str(intercepting.ca_file))
    await writer.start_tls(ctx, server_hostname=HOST)
    writer.write(b"GET /api/v1/wallets/ HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
    assert (await reader.readuntil(b"]")).startswith(b"HTTP/1.1 200 ")
    await asyncio.wait_for(intercepting.sidecar.proxy.close(), 3)
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
