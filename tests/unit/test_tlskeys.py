"""Client TLS from memory: the memfd loader, contexts per credential version, expiry."""

from __future__ import annotations

import contextlib
import os
import ssl

import pytest
from cryptography import x509
from structlog.testing import capture_logs

from sidecar.errors import SidecarError
from sidecar.sandbox.mtls_peer import Issued, TestCa, server_context
from sidecar.schemes.base import Credential
from sidecar.tlskeys import TlsKeys, client_context, load_chain
from tests.unit.conftest import credential

CA = TestCa()
SERVER = CA.server(("bank.test",))


def cred(pair: Issued, version: int = 1, key: str | None = None) -> Credential:
    return credential(
        {"client_certificate": pair.cert_pem},
        {"client_private_key": key or pair.key_pem},
        name="bank",
        version=version,
    )


def memfds() -> int:
    """memfd files this process holds open (the loader's must be closed after each load)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        except OSError:
            continue
    return count


def handshake(client: ssl.SSLContext) -> int:
    """A TLS handshake in memory (two BIOs, no socket) with a peer requiring a client
    certificate; returns the serial the peer saw."""
    server = server_context(CA, SERVER)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="bank.test")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_memfd_loader_presents_the_certificate_and_closes_its_fd() -> None:
    """The chain loaded from a memfd is the one a peer sees; no memfd is left open."""
    pair = CA.client()
    ctx = ssl.create_default_context(cadata=CA.cert_pem)
    before = memfds()
    load_chain(ctx, pair.cert_pem, pair.key_pem)
    assert memfds() == before == 0
    assert handshake(ctx) == pair.serial


def test_memfd_loader_closes_its_fd_on_a_mismatched_key() -> None:
    """OpenSSL refusing the pair still leaves no memfd open."""
    ctx = ssl.create_default_context(cadata=CA.cert_pem)
    with pytest.raises(ssl.SSLError):
        load_chain(ctx, CA.client().cert_pem, CA.client().key_pem)
    assert memfds() == 0


def test_client_context_checks_before_loading() -> None:
    """A mismatched pair is SC2018 from the checks, not an OpenSSL message."""
    with pytest.raises(SidecarError) as caught:
        client_context(cred(CA.client(), key=CA.client().key_pem), None)
    assert caught.value.code == "SC2018"


def test_one_context_per_version_and_one_warning_per_version() -> None:
    """A new version builds a new context; the same version does not; a certificate with
    fewer than 14 days left logs one warning for its version, however often it is used."""
    keys = TlsKeys("bank", None)
    short, longer = CA.client(days=5), CA.client(days=90)
    with capture_logs() as logs:
        first = keys.ensure(cred(short, 1))
        assert first is not None and keys.ensure(cred(short, 1)) is None
        keys.check()
        second = keys.ensure(cred(longer, 2))
        assert second is not None and second is not first
    warned = [e for e in logs if e["event"] == "client_certificate_expiring"]
    assert [(e["credential"], e["version"]) for e in warned] == [("bank", 1)]
    assert 4.9 < warned[0]["days_left"] <= 5
    left = keys.seconds_left()
    assert left is not None and 89 * 86400 < left <= 90 * 86400


def test_unloadable_or_expired_stored_pairs_refuse_requests() -> None:
    """Nothing loaded yet or a stored pair that cannot load: SC4060 (and a log line naming
    only the code); a stored pair past notAfter: loaded, gauge negative, requests SC4061."""
    keys = TlsKeys("bank", None)
    with pytest.raises(SidecarError, match="SC4060"):
        keys.check()
    pair = CA.client()
    with capture_logs() as logs:
        assert keys.ensure(cred(pair, 1, key=CA.client().key_pem)) is None
    assert [(e["event"], e["code"]) for e in logs] == [("client_certificate_unusable", "SC2018")]
    with pytest.raises(SidecarError, match="SC4060"):
        keys.check()
    expired = CA.client(days=-2, start_days=-20)
    assert keys.ensure(cred(expired, 2)) is not None
    with pytest.raises(SidecarError, match="SC4061"):
        keys.check()
    left = keys.seconds_left()
    assert left is not None and left < -86400
