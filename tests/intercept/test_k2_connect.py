"""Kopokopo's official SDK (``k2-connect`` 2.0.0 from PyPI), unmodified, doing its own OAuth2
through HTTPS_PROXY and the sidecar's CA against the Kopokopo sandbox peer.

The SDK pins ``requests~=2.32.3``, so it gets a venv of its own, built once from PyPI under
``.cache/venvs/`` (gitignored) and reused. If PyPI cannot be reached the build fails and so
does the test: CI has PyPI, and a skipped proof is no proof.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.proxy import tokens
from sidecar.sandbox import kopokopo
from sidecar.sandbox.oauth2 import OAUTH2_STATE, OAuth2State
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.intercept.conftest import clean_env, run
from tests.kopokopo import CLIENT_ID, HOST, k2_upstream

SECRET = "k2-real-client-secret-7f3a"
REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".cache" / "venvs" / "k2connect-2.0.0"

# Runs in the SDK's venv. It wraps requests' transport only to print what the SDK received
# (status, headers, body) so the test can scan it; the SDK itself is used as published.
SDK = """
import json, os, sys
import requests.adapters
import k2connect
from k2connect.exceptions import K2Error

_send = requests.adapters.HTTPAdapter.send
def send(self, request, **kw):
    resp = _send(self, request, **kw)
    print(json.dumps({"status": resp.status_code, "headers": dict(resp.headers),
                      "body": resp.text}), file=sys.stderr)
    return resp
requests.adapters.HTTPAdapter.send = send

k2connect.initialize(os.environ["K2_ID"], os.environ["K2_SECRET"], "https://HOST/")
out = {}
try:
    token = os.environ.get("K2_TOKEN")
    if not token:
        out["token"] = k2connect.Tokens.request_access_token()
        token = out["token"]["access_token"]
    out["location"] = k2connect.IncomingPayments(token).create_incoming_payment({
        "payment_channel": "M-PESA STK Push", "till_number": "K000000",
        "subscriber": {"first_name": "Jane", "last_name": "Doe",
                       "phone_number": "+254700000000", "email": "jane@example.com"},
        "amount": {"currency": "KES", "value": 100},
        "callback_url": "https://example.com/k2/callback", "metadata": {"order": "1"},
    })
except K2Error as exc:
    out["error"] = exc.args[0]
print(json.dumps(out))
""".replace("HOST", HOST)


def build_venv() -> Path:
    """The SDK's venv, built from PyPI on first use; a half-built one is never reused."""
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    tmp = VENV.with_name(f"{VENV.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=120)
    pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "k2-connect==2.0.0"], check=True, timeout=600)
    # venv scripts hard-code their directory; only ``bin/python -c`` is used, which does not
    tmp.rename(VENV)
    return python


@pytest.fixture(scope="module")
def k2python() -> Path:
    return build_venv()


@dataclass
class K2:
    sidecar: Sidecar
    peer: OAuth2State
    ca_file: Path
    python: Path

    async def sdk(self, client_id: str, secret: str, token: str = "") -> tuple[dict[str, Any], str]:
        """Run the SDK once; its printed result, and everything it received (stderr)."""
        env = clean_env(
            HTTPS_PROXY=f"http://127.0.0.1:{self.sidecar.proxy.port}",
            REQUESTS_CA_BUNDLE=str(self.ca_file),
            K2_ID=client_id,
            K2_SECRET=secret,
            K2_TOKEN=token,
        )
        code, out, err = await run(str(self.python), "-c", SDK, env=env)
        assert code == 0, err
        return json.loads(out.splitlines()[-1]), out + err

    def real_tokens(self) -> list[str]:
        return list(self.peer.tokens)


@pytest.fixture
async def start(
    make_config: MakeConfig,
    make_sidecar: MakeSidecar,
    aiohttp_server: Any,
    tmp_path: Path,
    k2python: Path,
) -> Any:
    """A sidecar intercepting Kopokopo's host, emulating its token endpoint, credential stored."""

    async def go(**extra: Any) -> K2:
        app = kopokopo.make_app(kopokopo.KopokopoConfig(clients={CLIENT_ID: SECRET}))
        server = await aiohttp_server(app)
        ca_file = tmp_path / "ca.pem"
        upstream = k2_upstream(str(server.make_url("/")).rstrip("/"), **extra)
        intercept = {"enabled": True, "ca_cert_path": str(ca_file)}
        sc = await make_sidecar(make_config({"kopokopo": upstream}, intercept=intercept))
        body = {"upstream": "kopokopo", "fields": {"client_id": CLIENT_ID, "client_secret": SECRET}}
        assert (await sc.admin.put("/v1/credentials/kopokopo", json=body)).status == 201
        app[OAUTH2_STATE].seen.clear()  # the verification's token request
        return K2(sc, app[OAUTH2_STATE], ca_file, k2python)

    return go


def assert_peer_saw_only_the_real_credentials(k2: K2, *placeholders: str) -> None:
    """Token requests (the sidecar's own) carry the real secret; calls carry a real Bearer."""
    token_requests = [s for s in k2.peer.seen if s.path == "/oauth/token"]
    calls = [s for s in k2.peer.seen if s.path != "/oauth/token"]
    assert token_requests and calls
    for seen in token_requests:
        assert f"client_id={CLIENT_ID}&client_secret={SECRET}".encode() in seen.body
    for seen in calls:
        assert seen.headers["Authorization"].removeprefix("Bearer ") in k2.real_tokens()
    for placeholder in placeholders:
        assert not k2.peer.saw(placeholder)


async def test_k2_connect_token_and_stk_push_with_placeholders(start: Any) -> None:
    """request_access_token() then an STK push succeed with placeholder client credentials; the
    SDK receives an opaque token and nothing it receives holds the real secret or token."""
    k2 = await start()
    result, received = await k2.sdk("placeholder-client-id", "placeholder-client-secret")
    opaque = result["token"]["access_token"]
    assert opaque.startswith(tokens.PREFIX) and result["token"]["token_type"] == "Bearer"
    assert isinstance(result["token"]["created_at"], int)
    assert result["location"].startswith(f"https://{HOST}/api/v2/incoming_payments/")
    assert_peer_saw_only_the_real_credentials(k2, "placeholder", opaque)
    print("scanned", len(received), "bytes the SDK received")
    for real in (SECRET, *k2.real_tokens()):
        assert real not in received


async def test_k2_connect_with_a_proxy_key_as_client_credentials(start: Any) -> None:
    """With require_proxy_key the SDK's client id/secret are a proxy key id and key; disabling
    the key refuses its opaque token at once (401 SC5008), nothing reaching the provider."""
    k2 = await start(require_proxy_key=True)
    r = await k2.sidecar.admin.post(
        "/v1/credentials/kopokopo/keys", json={"permissions": ["POST /api/v2/incoming_payments"]}
    )
    key = await r.json()
    result, received = await k2.sdk(key["key_id"], key["key"])
    assert result["location"].startswith(f"https://{HOST}/api/v2/incoming_payments/")
    assert_peer_saw_only_the_real_credentials(k2, key["key"], result["token"]["access_token"])
    assert SECRET not in received and not any(t in received for t in k2.real_tokens())
    patch = {"enabled": False}
    url = f"/v1/credentials/kopokopo/keys/{key['key_id']}"
    assert (await k2.sidecar.admin.patch(url, json=patch)).status == 200
    k2.peer.seen.clear()
    result, _ = await k2.sdk(key["key_id"], key["key"], token=result["token"]["access_token"])
    assert result["error"]["error_code"] == 401
    assert json.loads(result["error"]["error_content"])["code"] == "SC5008"
    assert len(k2.peer.seen) == 0


async def test_k2_connect_key_without_the_payment_permission_is_403(start: Any) -> None:
    """A key that may not POST incoming payments gets its token, then 403 SC5003; the peer
    records nothing at all (not even a token request of the sidecar's)."""
    k2 = await start(require_proxy_key=True)
    r = await k2.sidecar.admin.post(
        "/v1/credentials/kopokopo/keys", json={"permissions": ["GET /api/v2/incoming_payments/*"]}
    )
    key = await r.json()
    result, _ = await k2.sdk(key["key_id"], key["key"])
    assert result["token"]["access_token"].startswith(tokens.PREFIX)
    assert result["error"]["error_code"] == 403
    assert json.loads(result["error"]["error_content"])["code"] == "SC5003"
    assert len(k2.peer.seen) == 0


async def test_k2_connect_wrong_key_is_invalid_client(start: Any) -> None:
    """A wrong key as client secret: the SDK's token request fails 401 invalid_client SC5007."""
    k2 = await start(require_proxy_key=True)
    result, _ = await k2.sdk("pk0123456789abcdef", "sck_pk0123456789abcdef_" + "A" * 43)
    assert result["error"]["error_code"] == 401
    error = json.loads(result["error"]["error_content"])
    assert (error["error"], error["code"]) == ("invalid_client", "SC5007")
    assert len(k2.peer.seen) == 0
