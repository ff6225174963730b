"""The CA private key stays in memory: no file, log line or response ever holds it.

A whole session is run (curl, the IntaSend SDK, a refused CONNECT, the admin CA route) with
every log sink captured, then everything written is scanned for the key in each encoding an
accident could produce: PEM (PKCS#8 and SEC1), DER, base64 of DER, and the raw scalar.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sidecar.logging import configure
from sidecar.proxy.intercept import interceptor_for
from tests.intercept.conftest import PYTHON, Intercepting, clean_env, run
from tests.intercept.test_intasend_sdk import SDK

START = time.time()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The sidecar's real log pipeline at debug level, rendered as JSON into a buffer."""
    out = io.StringIO()
    configure("debug", "json", stream=out)
    yield out
    structlog.reset_defaults()


def encodings(key: ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    """Every form in which the key could plausibly leak.

    Each needle holds bytes of the private scalar: the first bytes of any P-256 key's DER are
    the same for every key, so a needle made of them would match any key at all.
    """
    none = serialization.NoEncryption()
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    forms: dict[str, bytes] = {}
    for name, fmt in (
        ("pkcs8", serialization.PrivateFormat.PKCS8),
        ("sec1", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, none)
        der = key.private_bytes(serialization.Encoding.DER, fmt, none)
        assert scalar in der
        forms[f"{name} pem line 1"] = pem.splitlines()[1]  # 48 bytes: the scalar starts in it
        forms[f"{name} b64"] = base64.b64encode(der)
        forms[f"{name} b64url"] = base64.urlsafe_b64encode(der)
    forms["scalar"] = scalar
    forms["scalar hex"] = scalar.hex().encode()
    forms["scalar b64"] = base64.b64encode(scalar)
    forms["scalar decimal"] = str(key.private_numbers().private_value).encode()
    return forms


def written_files(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    """Files under the roots changed since this module was imported (the CA file included)."""
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                try:
                    st = path.stat()
                    if path.is_file() and st.st_mtime >= START - 1 and st.st_size < 16 * 2**20:
                        yield path, path.read_bytes()
                except OSError:  # another process's file, gone or unreadable meanwhile
                    continue


async def session(it: Intercepting) -> list[bytes]:
    """Everything a client or operator can receive during a normal session."""
    answers: list[bytes] = []
    resp = await it.sidecar.admin.get("/v1/ca.pem")
    answers.append(await resp.read())
    env = clean_env(HTTPS_PROXY=it.proxy_url, REQUESTS_CA_BUNDLE=str(it.ca_file))
    answers += [s.encode() for s in (await run(PYTHON, "-c", SDK, env=env))[1:]]
    if shutil.which("curl"):
        for target in ("https://sandbox.intasend.com/api/v1/wallets/", "https://example.com/"):
            argv = ("curl", "-sv", "--proxy", it.proxy_url, "--cacert", str(it.ca_file), target)
            answers += [s.encode() for s in (await run(*argv, env=clean_env()))[1:]]
    return answers


async def test_ca_private_key_appears_in_no_file_log_or_response(
    json_logs: io.StringIO,
    intercepting: Intercepting,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a full session, no encoding of the CA key is found in any file, log or answer."""
    caplog.set_level(logging.DEBUG)
    interceptor = interceptor_for(intercepting.sidecar.runtime)
    assert interceptor is not None
    answers = await session(intercepting)
    assert intercepting.peer.seen, "the session did reach the provider"
    logs = json_logs.getvalue().encode() + caplog.text.encode()
    assert b"intercept_leaf_issued" in logs
    places = {"logs": logs, **{f"answer {i}": a for i, a in enumerate(answers)}}
    for path, data in written_files(tmp_path, Path(tempfile.gettempdir())):
        places[str(path)] = data
    assert str(intercepting.ca_file) in places
    key = interceptor.authority._key  # read only to know what to look for
    for form, needle in encodings(key).items():
        leaks = [where for where, data in places.items() if needle in data]
        assert not leaks, f"CA key ({form}) found in {leaks}"


def test_the_scan_would_find_a_dumped_key() -> None:
    """The needles match a key dumped as PEM or hex, so a clean scan means something."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    forms = encodings(key)
    assert forms["pkcs8 pem line 1"] in pem
    assert forms["pkcs8 b64"] in pem.replace(b"\n", b"")
    assert forms["scalar hex"] in f"d={forms['scalar hex'].decode()}".encode()
    other = encodings(ec.generate_private_key(ec.SECP256R1()))
    assert not any(needle in pem for needle in other.values())
