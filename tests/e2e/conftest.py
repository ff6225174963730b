"""Run `sidecar run` as a real process: signals, reloads and its stderr are what we test.

The process runs ``--role all`` (proxy and admin in one process, as ``sidecar dev`` does) unless
a test asks for a role; the admin API then needs the static token written beside the config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao, free_port

ADMIN_TOKEN = "e2e-admin-token-5b1f"  # a test value in a file beside the config
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    config_path: Path
    stderr_path: Path
    admin: str
    proxy: str
    local: str
    role: str = "all"

    @property
    def auth(self) -> dict[str, str]:
        return AUTH

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_ready(self, timeout: float = 20.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited: {self.stderr()[-2000:]}")
            try:
                probe = self.admin if self.role == "admin" else self.local
                if requests.get(f"{probe}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(self.stderr()[-2000:])


def write_config(
    path: Path, openbao: OpenBao, prefix: str, upstreams: dict[str, Any], **extra: Any
) -> None:
    token_file = path.with_name("admin.token")
    token_file.write_text(ADMIN_TOKEN + "\n")
    data: dict[str, Any] = {
        "vault": {
            "address": openbao.addr,
            "auth": {"method": "token", "token": ROOT_TOKEN},
            "prefix": prefix,
            "timeout": 2,
        },
        "listen": {
            "proxy": f"127.0.0.1:{free_port()}",
            "admin": f"127.0.0.1:{free_port()}",
            "local": f"127.0.0.1:{free_port()}",
            "shutdown_grace": 10,
        },
        "admin": {"token_file": str(token_file)},
        "logging": {"format": "json"},
        "upstreams": upstreams,
        **extra,
    }
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Any]:
    procs: list[Process] = []

    def start(config_path: Path, role: str = "all") -> Process:
        cfg = yaml.safe_load(config_path.read_text())
        err = tmp_path / f"stderr-{len(procs)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with err.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sidecar.cli",
                    "run",
                    "--role",
                    role,
                    "--config",
                    str(config_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        p = Process(
            proc,
            config_path,
            err,
            f"http://{cfg['listen']['admin']}",
            f"http://{cfg['listen']['proxy']}",
            f"http://{cfg['listen']['local']}",
            role,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait()


@pytest.fixture
async def make_sidecar_inproc(aiohttp_client: Any) -> Any:
    """An in-process sidecar (admin + proxy test servers) from a config dict."""
    from sidecar import config
    from sidecar.app import build_admin_app
    from sidecar.runtime import Runtime
    from tests.integration.conftest import Sidecar
    from tests.proxyserver import ProxyTestServer

    async def make(data: dict[str, Any]) -> Sidecar:
        rt = Runtime(config.loads(yaml.safe_dump(data), {}))
        admin = await aiohttp_client(build_admin_app(rt))
        proxy = await aiohttp_client(ProxyTestServer(rt))
        await rt.wait_ready(15)
        return Sidecar(rt, admin, proxy)

    return make
