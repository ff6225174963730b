"""A bank-style TLS peer that requires a client certificate from its own test CA.

It answers every path with the serial number of the client certificate it saw (in the body,
and appended to the app's ``SEEN`` list), so a test can tell which certificate each request
carried, before and after a rotation. A handshake without a certificate, or with one its CA did
not sign, is refused by OpenSSL (``CERT_REQUIRED``) before any HTTP is read.

The CA, the server certificate and client certificates are made here with ``cryptography``
(:class:`TestCa`), in memory: the tests make their own, ``make run``'s demo makes one at start.
EC P-256 keys, since an RSA key takes tens of milliseconds to generate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.tlskeys import load_chain

SEEN = web.AppKey("seen", list[int])
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key, as PEM text (what a credential's fields hold)."""

    cert_pem: str
    key_pem: str
    serial: int


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class TestCa:
    """A throwaway CA that signs a server certificate and client certificates."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, name: str = "sandbox bank CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def _issue(
        self, cn: str, usage: x509.ObjectIdentifier, start: datetime, end: datetime
    ) -> tuple[x509.CertificateBuilder, ec.EllipticCurvePrivateKey, int]:
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        return builder, key, serial

    def server(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Issued:
        now = datetime.now(UTC)
        builder, key, serial = self._issue(
            hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, now - _DAY, now + 365 * _DAY
        )
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt(hosts)), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem(key), serial)

    def client(self, cn: str = "sidecar", days: float = 365, start_days: float = -1) -> Issued:
        """A client certificate valid from ``start_days`` to ``days`` from now (may be past)."""
        now = datetime.now(UTC)
        builder, key, serial = self._issue(
            cn, ExtendedKeyUsageOID.CLIENT_AUTH, now + start_days * _DAY, now + days * _DAY
        )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem(key), serial)


def _alt(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def server_context(ca: TestCa, server: Issued) -> ssl.SSLContext:
    """TLS for the peer: its own certificate, and a client certificate from ``ca`` required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca.cert_pem)
    load_chain(ctx, server.cert_pem, server.key_pem)
    return ctx


def _serial(request: web.Request) -> int | None:
    tls = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    return x509.load_der_x509_certificate(der).serial_number if der else None


async def _answer(request: web.Request) -> web.Response:
    """``?delay=S`` (at most 2 s) holds the answer, so tests can keep requests in flight."""
    serial = _serial(request)
    if serial is None:  # unreachable with CERT_REQUIRED; kept so a plain run cannot pass
        return web.json_response({"error": "no client certificate"}, status=401)
    request.app[SEEN].append(serial)
    try:
        delay = float(request.query.get("delay", "0"))
    except ValueError:
        delay = math.nan
    if not math.isfinite(delay):
        return web.json_response({"error": "delay must be a number"}, status=400)
    delay = min(max(delay, 0.0), 2.0)
    if delay:
        await asyncio.sleep(delay)
    headers = sorted(name.lower() for name in request.headers)
    return web.json_response({"serial": str(serial), "path": request.path, "headers": headers})


def make_app() -> web.Application:
    """The peer's app; serve it with :func:`server_context` as its TLS."""
    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app


@dataclass(frozen=True, slots=True)
class DemoPki:
    """``make run``'s bank: a CA, the peer's server certificate and the sidecar's client one."""

    ca: TestCa
    server: Issued
    client: Issued


@cache
def demo_pki() -> DemoPki:
    """Made in memory once per process, at first use, so the peer and the demo credential
    agree; a new CA every run, so nothing from a demo can be trusted anywhere else."""
    ca = TestCa("sandbox bank-mtls demo CA")
    return DemoPki(ca, ca.server(), ca.client("sidecar-demo", days=90))
