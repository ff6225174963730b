"""The interception CA: what it may sign, and proof that verifiers enforce its limits."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sidecar.ca import Authority, Leaf, is_dns_name, server_context

HOST = "sandbox.intasend.com"
DAY = timedelta(days=1)


def handshake(ca: Authority, leaf: Leaf, server_name: str) -> None:
    """A full TLS handshake in memory: Python's ssl (OpenSSL) verifying ``leaf`` against ``ca``."""
    client = ssl.create_default_context(cadata=ca.cert_pem().decode())
    server = server_context(leaf)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side in (cli, srv):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_ca_is_p256_limited_to_the_configured_hosts() -> None:
    """The CA is EC P-256, may sign leaves only, and carries critical NameConstraints."""
    ca = Authority([HOST, "127.0.0.1", "API.Example.com"], timedelta(days=30))
    cert = ca.cert
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    permitted = {n.value for n in nc.value.permitted_subtrees or []}
    assert permitted == {HOST, "api.example.com"}
    excluded = {n.value for n in nc.value.excluded_subtrees or []}
    assert excluded == {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}


def test_ip_literals_are_not_interceptable() -> None:
    """Only DNS names get leaves: IP literals and malformed names are refused."""
    assert [is_dns_name(h) for h in (HOST, "127.0.0.1", "::1", "a..b", "-x.com")] == [
        True,
        False,
        False,
        False,
        False,
    ]
    with pytest.raises(ValueError):
        Authority([HOST, "127.0.0.1"], DAY).issue("127.0.0.1", DAY)


def test_leaf_is_short_lived_and_never_outlives_the_ca() -> None:
    """A leaf lasts its TTL, for one host, serverAuth only, and stops when the CA stops."""
    ca = Authority([HOST], timedelta(days=2))
    leaf = ca.issue(HOST, DAY)
    now = datetime.now(UTC)
    assert timedelta(hours=23) < leaf.not_after - now <= DAY
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [HOST]
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.issue(HOST, timedelta(days=90)).not_after == ca.not_after


def test_issue_refuses_hosts_outside_the_constraints() -> None:
    """The sidecar itself never mints a certificate for a host nobody configured."""
    with pytest.raises(ValueError, match="outside"):
        Authority([HOST], DAY).issue("evil.example", DAY)


def test_python_ssl_accepts_a_permitted_leaf() -> None:
    """Python's ssl verifies a leaf for a configured host against the CA."""
    ca = Authority([HOST], DAY)
    handshake(ca, ca.issue(HOST, DAY), HOST)


def test_python_ssl_enforces_the_name_constraints() -> None:
    """Even a leaf signed by the CA's own key is refused for a host outside the constraints."""
    ca = Authority([HOST], DAY)
    rogue = ca._sign_leaf(["evil.example"], DAY, datetime.now(UTC))  # what a stolen key could do
    with pytest.raises(ssl.SSLCertVerificationError, match="permitted subtree violation"):
        handshake(ca, rogue, "evil.example")


def test_repr_holds_no_key() -> None:
    """Neither the CA nor a leaf shows key material when printed or logged by accident."""
    ca = Authority([HOST], DAY)
    leaf = ca.issue(HOST, DAY)
    assert "key" not in repr(ca).lower() and "key=" not in repr(leaf)


async def _serve_leaf(leaf: Leaf) -> asyncio.Server:
    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await w.drain()
        w.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context(leaf))


async def _curl(ca_file: Path, host: str, leaf: Leaf) -> tuple[int, str, str]:
    server = await _serve_leaf(leaf)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "10", "--cacert", str(ca_file),
            "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    finally:
        server.close()
        await server.wait_closed()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_enforces_the_name_constraints(tmp_path: Path) -> None:
    """curl trusts a permitted leaf from the CA and refuses a rogue one the same CA signed."""
    ca = Authority([HOST], DAY)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    assert await _curl(ca_file, HOST, ca.issue(HOST, DAY)) == (0, "ok", "")
    rogue = ca._sign_leaf(["evil.example"], DAY, datetime.now(UTC))
    code, _, err = await _curl(ca_file, "evil.example", rogue)
    assert code == 60 and "permitted subtree violation" in err
