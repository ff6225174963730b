"""The sidecar as the image ships it: a venv built the way the Dockerfile builds one.

The dev venv (``.venv``) also holds the test tools, and some of them change what the sidecar
loads: structlog imports ``rich`` (and ``pygments``) whenever it can, about 3 MiB of RSS the
image does not have. So the sidecar under test runs from ``.venv-image``: the wheels pinned in
``constraints.txt`` (binary only, as in the Dockerfile), then this package without
dependencies. The package is installed editable, so the checkout's current code is what runs.
Rebuilt when ``constraints.txt`` or ``pyproject.toml`` change. ``--dev-venv`` skips it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-image"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("constraints.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def bin_dir(say: Callable[[str], None]) -> Path:
    """The image venv's bin directory, built first if it is missing or out of date."""
    stamp = VENV / ".built"
    want = _fingerprint()
    if stamp.exists() and stamp.read_text() == want:
        return VENV / "bin"
    say(f"building {VENV.name} like the Dockerfile (constraints.txt wheels, no dev extra) ...")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    pip += ["--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--only-binary=:all:", "--requirement", str(ROOT / "constraints.txt")], check=True
    )
    subprocess.run([*pip, "--no-deps", "--editable", str(ROOT)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "check"], check=True)
    stamp.write_text(want)
    return VENV / "bin"
