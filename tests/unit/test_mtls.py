"""The mtls scheme: declared fields, an unchanged request, and the checks made before a save."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from yarl import URL

from sidecar.errors import SidecarError
from sidecar.sandbox.mtls_peer import Issued, TestCa
from sidecar.schemes.api_key import ApiKeyOptions
from sidecar.schemes.base import UpstreamContext
from sidecar.schemes.mtls import MAX_KEY_BYTES, ClientCert, Mtls, MtlsOptions, check_pair
from sidecar.schemes.registry import build_scheme
from tests.unit.conftest import credential, outbound

CA = TestCa()
CTX = UpstreamContext(name="bank", url=URL("https://bank.test"))


def code_of(cert_pem: str, key_pem: str, now: datetime | None = None) -> str:
    with pytest.raises(SidecarError) as caught:
        check_pair(cert_pem, key_pem, now)
    assert "PRIVATE" not in caught.value.message and key_pem[40:80] not in caught.value.message
    return caught.value.code


async def test_auth_flow_leaves_the_request_unchanged() -> None:
    """The certificate rides in the handshake: method, URL, headers and body are untouched."""
    pair = CA.client()
    cred = credential({"client_certificate": pair.cert_pem}, {"client_private_key": pair.key_pem})
    request = outbound("POST", body=b"{}", headers={"X-A": "1"})
    flow = Mtls(MtlsOptions(), CTX).auth_flow(request.copy(), cred)
    sent = await flow.__anext__()
    await flow.aclose()
    assert (sent.method, sent.url, dict(sent.headers), sent.body) == (
        request.method,
        request.url,
        dict(request.headers),
        request.body,
    )


def test_fields_and_composition() -> None:
    """mtls declares the certificate public and the key secret; composed, fields are unioned."""
    scheme = build_scheme([("mtls", MtlsOptions()), ("api_key", ApiKeyOptions())], CTX)
    assert scheme.public_fields == ("client_certificate", "public_key", "key_id")
    assert scheme.secret_fields == ("client_private_key", "api_key")


def test_plain_http_upstream_is_a_config_error() -> None:
    """Client certificates need TLS: an http:// upstream is refused at load."""
    with pytest.raises(ValueError, match="https"):
        Mtls(MtlsOptions(), UpstreamContext(name="bank", url=URL("http://bank.test")))


def test_a_good_pair_reports_serial_and_validity() -> None:
    """check_pair returns the leaf's serial and its notAfter, with the chain after the leaf."""
    pair = CA.client(days=30)
    info = check_pair(pair.cert_pem + CA.cert_pem, pair.key_pem)
    assert info.serial == pair.serial
    assert 29 * 86400 < info.seconds_left() <= 30 * 86400


def test_seconds_left_is_exact_for_a_given_moment() -> None:
    """seconds_left counts from the moment given to notAfter, negative once past."""
    end = datetime(2030, 1, 10, tzinfo=UTC)
    info = ClientCert(1, datetime(2029, 1, 1, tzinfo=UTC), end)
    assert info.seconds_left(end - timedelta(days=13, seconds=5)) == 13 * 86400 + 5
    assert info.seconds_left(end + timedelta(seconds=1)) == -1


def test_mismatched_key_is_sc2018() -> None:
    """A key of another certificate is refused, and the message quotes no key."""
    assert code_of(CA.client().cert_pem, CA.client().key_pem) == "SC2018"


def test_validity_window_is_sc2019_unless_undated() -> None:
    """Expired and not-yet-valid certificates are refused; ``dated=False`` (a stored pair,
    loaded so that requests get SC4061) skips only that check."""
    expired, future = CA.client(days=-1, start_days=-10), CA.client(days=20, start_days=1)
    assert code_of(expired.cert_pem, expired.key_pem) == "SC2019"
    assert code_of(future.cert_pem, future.key_pem) == "SC2019"
    assert check_pair(expired.cert_pem, expired.key_pem, dated=False).seconds_left() < 0
    later = datetime.now(UTC) + timedelta(days=2)
    assert check_pair(future.cert_pem, future.key_pem, later).serial == future.serial


def _encrypted(pem: str) -> str:
    key = serialization.load_pem_private_key(pem.encode(), None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()


@pytest.mark.parametrize(
    "case", ["garbage", "empty_chain", "nine_certs", "huge_chain", "bad_key", "encrypted", "huge"]
)
def test_unusable_pem_is_sc2017(case: str) -> None:
    """What an attacker or a typo sends: garbage, too many or too large, encrypted keys."""
    pair = CA.client()
    cert, key = {
        "garbage": ("\x00\xff not pem", pair.key_pem),
        "empty_chain": ("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", pair.key_pem),
        "nine_certs": (pair.cert_pem * 9, pair.key_pem),
        "huge_chain": (pair.cert_pem + " " * 70_000, pair.key_pem),
        "bad_key": (pair.cert_pem, pair.key_pem.replace("M", "A", 3)[:120]),
        "encrypted": (pair.cert_pem, _encrypted(pair.key_pem)),
        "huge": (pair.cert_pem, pair.key_pem + " " * MAX_KEY_BYTES),
    }[case]
    assert code_of(cert, key) == "SC2017"


def _server_only(ca: TestCa) -> Issued:
    """A certificate whose extended key usage allows serverAuth only."""
    pair = ca.client()
    cert = x509.load_pem_x509_certificate(pair.cert_pem.encode())
    key = serialization.load_pem_private_key(pair.key_pem.encode(), None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    signed = builder.sign(ca.key, hashes.SHA256())
    return Issued(signed.public_bytes(serialization.Encoding.PEM).decode(), pair.key_pem, 0)


def test_not_for_client_auth_is_sc2021() -> None:
    """A CA certificate, or one whose extended key usage lacks clientAuth, is refused."""
    ca_key = CA.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert code_of(CA.cert_pem, ca_key) == "SC2021"
    server_only = _server_only(CA)
    assert code_of(server_only.cert_pem, server_only.key_pem) == "SC2021"
