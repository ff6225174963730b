"""An attacker's pass over issue 15's surfaces: token emulation, placeholders, webhook verify.

The app in the pod is semi-trusted (it may be compromised and want the real secret, the real
provider token, more than its proxy key allows, or a revoked key's life), a provider's answers
are untrusted, and a web page on the same host is untrusted. Each test sends what such an
attacker would, over real loopback sockets where the framing matters, to a real sidecar on the
suite's OpenBao in front of the shipped Kopokopo sandbox peer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar.proxy import tokens
from sidecar.sandbox import kopokopo
from sidecar.sandbox.oauth2 import OAUTH2_STATE, OAuth2State
from tests.integration.conftest import (  # noqa: F401  (fixtures used by name)
    MakeConfig,
    MakeSidecar,
    Sidecar,
    make_config,
    make_sidecar,
)

HOST = "sandbox.kopokopo.com"
CLIENT_ID = "k2-attack-client-id"
SECRET = "k2-attack-real-secret-7f3a"
PH_ID, PH_SECRET = "{{K2_CLIENT_ID}}", "{{K2_CLIENT_SECRET}}"
FORM = f"client_id={PH_ID}&client_secret={PH_SECRET}&grant_type=client_credentials"
PLACEHOLDERS = {PH_ID: "client_id", PH_SECRET: "client_secret"}


@dataclass
class Target:
    sidecar: Sidecar
    peer: OAuth2State

    @property
    def port(self) -> int:
        port = self.sidecar.proxy.server.port
        assert port is not None
        return port

    async def raw(self, data: bytes, wait: float = 5.0) -> bytes:
        """Send bytes on a fresh connection; everything the sidecar answers until it closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(-1), wait)
        finally:
            writer.close()

    def app_requests(self) -> list[str]:
        """Paths of requests the peer got that the sidecar did not make for its own token."""
        own = [s for s in self.peer.seen if s.path == "/oauth/token" and CLIENT_ID in _text(s)]
        return [s.path for s in self.peer.seen if s not in own]


def _text(seen: Any) -> str:
    return str(seen.body) + str(dict(seen.headers))


def post(path: str, body: str, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body.encode())}",
        *headers,
        "Connection: close",
        "",
        body,
    ]
    return "\r\n".join(lines).encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")
    return doc


@pytest.fixture
async def start(make_config: MakeConfig, make_sidecar: MakeSidecar, aiohttp_server: Any) -> Any:
    """A sidecar emulating Kopokopo's token endpoint in front of the Kopokopo sandbox peer."""

    async def go(**extra: Any) -> Target:
        app = kopokopo.make_app(kopokopo.KopokopoConfig(clients={CLIENT_ID: SECRET}))
        server = await aiohttp_server(app)
        upstream = {
            "url": str(server.make_url("/")).rstrip("/"),
            "hosts": [HOST],
            "scheme": "oauth2_client_credentials",
            "credential": "kopokopo",
            "environment": "sandbox",
            "token_url": "/oauth/token",
            "token_path": "/oauth/token",
            **extra,
        }
        sc = await make_sidecar(make_config({"kopokopo": upstream}))
        fields = {"client_id": CLIENT_ID, "client_secret": SECRET}
        r = await sc.admin.put(
            "/v1/credentials/kopokopo", json={"upstream": "kopokopo", "fields": fields}
        )
        assert r.status == 201, await r.text()
        app[OAUTH2_STATE].seen.clear()
        return Target(sc, app[OAUTH2_STATE])

    return go


# -- token emulation: the token path and the spellings a provider reads as the same ------------

VARIANTS = [
    "/oauth/token",
    "/oauth/token/",
    "//oauth/token",
    "/oauth//token",
    "/oauth/token.json",
    "/OAUTH/token",
    "/oauth/TOKEN",
    "/oauth/token;x=1",
    "/oauth/token%3Bx=1",
    "/oauth/%74oken",
]


@pytest.mark.parametrize("variant", VARIANTS)
async def test_token_path_spellings_never_reach_the_provider(start: Any, variant: str) -> None:
    """Every spelling of the token path a provider may route to its token endpoint (Rails
    squeezes slashes and takes a ``.json`` format; servlet containers drop ``;params``) is
    answered or refused by the sidecar: with placeholders for the client credentials, a
    forwarded one would carry the real secret and hand the app a real provider token."""
    it = await start(placeholders=PLACEHOLDERS)
    answer = await it.raw(post("/kopokopo" + variant, FORM))
    assert it.app_requests() == [], variant
    assert SECRET.encode() not in answer
    assert not any(t.encode() in answer for t in it.peer.tokens)
    if status_of(answer) == 200:
        assert body_of(answer)["access_token"].startswith(tokens.PREFIX)
    else:
        assert body_of(answer)["code"] == "SC4044", answer
