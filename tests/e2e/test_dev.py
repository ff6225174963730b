"""`make run`'s job (`sidecar dev`): every scheme's demo call is accepted by its sandbox provider."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTS = (18200, 8080, 8081, 8099, 9101, 9102, 9103, 9104, 9105, 9106, 9107, 9108, 9109)


def busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sidecar_dev_once_runs_the_demo() -> None:
    """`sidecar dev --once` stores the demo credentials and each proxied call succeeds."""
    if any(busy(p) for p in PORTS):
        pytest.skip("a port config/dev.yaml uses is taken on this machine")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecar.cli",
            "dev",
            "--config",
            str(ROOT / "config/dev.yaml"),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("-> 201") == 9  # 8 credentials stored, 1 Kopokopo STK push
    assert out.stdout.count("  -> 200 ") == 8
    assert "BEGIN PRIVATE KEY" not in out.stdout + out.stderr
    for secret in (
        "demo-ptp-secretkey-0001",
        "demo-paynet-secret-0002",
        "SECR_DEMO_sandbox_0003",
        "demo-kopokopo-secret-0006",
    ):
        assert secret not in out.stdout + out.stderr
