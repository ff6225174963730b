"""Starting peers on loopback ports, the demo set, and ``python -m sidecar.sandbox``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from sidecar import config
from sidecar.dev import STK_BODY
from sidecar.sandbox import demo
from sidecar.sandbox.api_key_peer import ApiKeyPeerConfig
from sidecar.sandbox.api_key_peer import make_app as api_key_app
from sidecar.sandbox.oauth2 import OAUTH2_STATE
from sidecar.sandbox.server import Sandboxes, SandboxSpec, start_sandboxes
from sidecar.tlskeys import load_chain

ROOT = Path(__file__).resolve().parents[2]


def key_app(key: str) -> web.Application:
    return api_key_app(ApiKeyPeerConfig(required_headers={"X-Key": key}))


async def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status


async def test_free_ports_and_close() -> None:
    """Two apps get distinct free loopback ports, answer, and stop on close()."""
    sandboxes = await start_sandboxes({"a": key_app("ka"), "b": SandboxSpec(key_app("kb"))})
    try:
        assert sandboxes["a"].port != sandboxes["b"].port
        assert sandboxes.url("a").startswith("http://127.0.0.1:")
        assert await status_of(sandboxes.url("a") + "/x", {"X-Key": "ka"}) == 200
        assert await status_of(sandboxes.url("b") + "/x", {"X-Key": "ka"}) == 401
        assert sandboxes.describe()["b"]["port"] == sandboxes["b"].port
    finally:
        await sandboxes.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(sandboxes.url("a") + "/x")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
async def test_non_loopback_refused(host: str) -> None:
    """Peers accept fake credentials, so they never bind anything but loopback."""
    with pytest.raises(ValueError, match="loopback"):
        await start_sandboxes({"a": key_app("k")}, host=host)


async def test_port_in_use_starts_nothing() -> None:
    """If one port is taken the peers already started are stopped again."""
    async with await start_sandboxes({"busy": key_app("k")}) as taken:
        specs = {
            "first": SandboxSpec(key_app("k")),
            "second": SandboxSpec(key_app("k"), taken["busy"].port),
        }
        with pytest.raises(OSError):
            await start_sandboxes(specs)


@pytest.fixture
async def demo_sandboxes() -> AsyncIterator[Sandboxes]:
    """The demo set on free ports."""
    sandboxes = await start_sandboxes(demo.demo_specs(0))
    yield sandboxes
    await sandboxes.close()


async def test_demo_credentials_work(demo_sandboxes: Sandboxes) -> None:
    """Every demo credential authenticates against its own demo peer."""
    creds = {name: c["fields"] for name, c in demo.demo_credentials().items()}
    async with aiohttp.ClientSession() as http:
        assert await placetopay_status(http, demo_sandboxes.url("placetopay"), creds) == 200
        assert await paynet_status(http, demo_sandboxes.url("paynet"), creds) == 200
        ts = str(int(time.time()))
        signature = hmac.new(
            creds["paynet-reports"]["client_secret"].encode(), ts.encode(), "sha256"
        )
        headers = {"X-Timestamp": ts, "X-Signature": signature.hexdigest()}
        async with http.get(demo_sandboxes.url("paynet-reports") + "/r", headers=headers) as r:
            assert r.status == 200
        headers = {"Authorization": creds["azupay"]["api_key"]}
        async with http.get(demo_sandboxes.url("azupay") + "/v1/balance", headers=headers) as r:
            assert r.status == 200
        headers = {
            "Authorization": f"Bearer {creds['intasend']['api_key']}",
            "INTASEND_PUBLIC_API_KEY": creds["intasend"]["public_key"],
        }
        async with http.get(
            demo_sandboxes.url("intasend") + "/api/v1/wallets/", headers=headers
        ) as r:
            assert r.status == 200
        assert await kopokopo_status(http, demo_sandboxes.url("kopokopo"), creds) == 201
    assert demo_sandboxes.app("paynet")[OAUTH2_STATE].tokens_issued == 1


async def placetopay_status(
    http: aiohttp.ClientSession, url: str, creds: dict[str, dict[str, str]]
) -> int:
    fields = creds["placetopay-main"]
    seed, raw = datetime.now(UTC).isoformat(timespec="seconds"), secrets.token_bytes(12)
    digest = hashlib.sha256(raw + seed.encode() + fields["secret_key"].encode()).digest()
    auth = {
        "login": fields["login"],
        "tranKey": base64.b64encode(digest).decode(),
        "nonce": base64.b64encode(raw).decode(),
        "seed": seed,
    }
    body = {"auth": auth, "payment": {"reference": "r", "amount": {"total": 1}}}
    async with http.post(url + "/api/session", json=body) as resp:
        return resp.status


async def paynet_status(
    http: aiohttp.ClientSession, url: str, creds: dict[str, dict[str, str]]
) -> int:
    form = {"grant_type": "client_credentials", **creds["paynet"]}
    async with http.post(url + "/v1/picasso-guard/auth/token", data=form) as resp:
        token = (await resp.json())["access_token"]
    async with http.get(url + "/v1/x", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


def test_demo_ports_match_dev_yaml() -> None:
    """By default the demo peers use config/dev.yaml's ports (and its scheme, https for TLS)."""
    ports = {name: spec.port for name, spec in demo.demo_specs().items()}
    assert ports == demo.DEFAULT_PORTS
    dev = config.load(ROOT / "config" / "dev.yaml", {})
    assert {name: URL(u.url).port for name, u in dev.upstreams.items()} == ports
    tls = {name for name, spec in demo.demo_specs().items() if spec.tls is not None}
    assert tls == {name for name, u in dev.upstreams.items() if u.url.startswith("https:")}


async def test_demo_bank_requires_the_demo_client_certificate(demo_sandboxes: Sandboxes) -> None:
    """The https demo peer answers the demo credential's certificate and refuses none."""
    pki = demo.mtls_peer.demo_pki()
    url = demo_sandboxes.url("bank-mtls") + "/v1/accounts"
    assert url.startswith("https://")
    with_cert = ssl.create_default_context(cadata=pki.ca.cert_pem)
    load_chain(with_cert, pki.client.cert_pem, pki.client.key_pem)
    async with aiohttp.ClientSession() as http:
        async with http.get(url, ssl=with_cert) as resp:
            assert int((await resp.json())["serial"]) == pki.client.serial
        with pytest.raises(aiohttp.ClientError):
            bare = ssl.create_default_context(cadata=pki.ca.cert_pem)
            async with http.get(url, ssl=bare) as resp:
                await resp.read()


async def test_module_main_prints_json_and_stops() -> None:
    """``python -m sidecar.sandbox --port-base 0`` prints URLs, serves, and exits on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar.sandbox", "--port-base", "0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        summary = await asyncio.wait_for(read_json_document(proc), 20)
        assert set(summary["sandboxes"]) == set(demo.DEFAULT_PORTS)
        url = summary["sandboxes"]["azupay"]["url"]
        key = summary["credentials"]["azupay"]["fields"]["api_key"]
        assert await status_of(url + "/v1/balance", {"Authorization": key}) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def read_json_document(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    text = ""
    while True:
        line = await proc.stdout.readline()
        assert line, "process ended before printing its summary"
        text += line.decode()
        try:
            return dict(json.loads(text))
        except json.JSONDecodeError:
            continue


async def kopokopo_status(
    http: aiohttp.ClientSession, url: str, creds: dict[str, dict[str, str]]
) -> int:
    form = {"grant_type": "client_credentials", **creds["kopokopo"]}
    async with http.post(url + "/oauth/token", data=form) as resp:
        answer = await resp.json()
    assert answer["token_type"] == "Bearer" and isinstance(answer["created_at"], int)
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    async with http.post(url + "/api/v2/incoming_payments", json=STK_BODY, headers=headers) as r:
        assert r.headers["Location"].startswith("https://sandbox.kopokopo.com/api/v2/")
        return r.status
