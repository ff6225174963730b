"""The roles as real processes: `sidecar run` is the proxy role, `sidecar admin` needs auth."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml

from sidecar.sandbox.openbao import OpenBao
from tests.e2e.conftest import AUTH, write_config


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_sidecar_run_is_the_proxy_role_without_admin_routes(
    openbao: OpenBao, prefix: str, tmp_path: Path, start_sidecar: Any
) -> None:
    """`sidecar run` (default role) binds no admin listener, answers 404 to every write route
    on its local API even with the admin token; its RSS is printed beside the one-process
    (`--role all`) sidecar's."""
    cfg = tmp_path / "proxy.yaml"
    write_config(cfg, openbao, prefix, {})
    proxy = start_sidecar(cfg, role="proxy")
    both_cfg = tmp_path / "all.yaml"
    write_config(both_cfg, openbao, prefix, {})
    both = start_sidecar(both_cfg, role="all")
    await asyncio.to_thread(proxy.wait_ready)
    await asyncio.to_thread(both.wait_ready)
    print(
        f"RSS after ready: proxy role {rss_kib(proxy.proc.pid)} KiB, "
        f"both roles in one process {rss_kib(both.proc.pid)} KiB"
    )
    writes = [
        ("PUT", "/v1/credentials/x", {"upstream": "x", "fields": {}}),
        ("POST", "/v1/credentials", {"key": "k", "provider": "x", "type": "t"}),
        ("PATCH", "/v1/credentials/x", {"enabled": False}),
        ("DELETE", "/v1/credentials/x", None),
        ("POST", "/v1/credentials/x/keys", {"permissions": ["* /*"]}),
    ]
    for method, path, body in writes:
        r = requests.request(method, proxy.local + path, json=body, headers=AUTH, timeout=5)
        assert (r.status_code, r.json()["code"]) == (404, "SC1005"), path
    try:
        requests.get(f"{proxy.admin}/healthz", timeout=2)
        admin_bound = True
    except requests.ConnectionError:
        admin_bound = False
    assert not admin_bound
    assert requests.get(f"{proxy.local}/metrics", timeout=5).status_code == 200


def test_sidecar_admin_refuses_to_start_without_authentication(
    openbao: OpenBao, prefix: str, tmp_path: Path
) -> None:
    """`sidecar admin` on TCP with Vault tokens off and no static token exits 1 with SC6002."""
    cfg = tmp_path / "admin.yaml"
    write_config(cfg, openbao, prefix, {})
    data = yaml.safe_load(cfg.read_text())
    data["admin"] = {"vault_tokens": False}
    cfg.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "admin", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "SC6002" in done.stderr


def test_proxy_role_does_not_load_the_admin_handlers() -> None:
    """Importing the server and building the proxy role's local app loads no admin handler."""
    code = (
        "import sys; from sidecar import config; from sidecar.server import Server; "
        "Server(config.loads('{}', {}), 'proxy')._apps(); "
        "print(sorted(m for m in sys.modules if m.startswith('sidecar.handlers.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.strip()
    assert "credentials" not in loaded and "keys" not in loaded and "openapi" not in loaded
    assert "sidecar.handlers.health" in loaded
