"""The sidecar's own certificate authority, used only for HTTPS interception.

Why it lives in memory: whoever holds this key can mint certificates that the app trusts, so
the key is generated at start (EC P-256), kept in this process only, and never written, logged
or returned. A restart makes a new CA; clients re-read the CA file (docs/interception.md).

Why NameConstraints: the CA permits only the configured provider hosts and excludes every IP
address, so even a leaked key cannot impersonate another site to an app that trusts it. The
extension is critical, as RFC 5280 requires: a verifier that does not understand it must
refuse the chain rather than silently ignore the limit (OpenSSL, hence Python, curl and Node,
Go's crypto/x509 and Java all enforce it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.hostnames import is_dns_name

# Clients and the sidecar may disagree on the time by a few minutes.
_SKEW = timedelta(minutes=5)
# Nothing is permitted when no host is configured: ".invalid" never resolves (RFC 6761).
_NOTHING = "sidecar.invalid"


@dataclass(frozen=True, slots=True)
class Leaf:
    """A host certificate and its key; the key is only ever handed to an in-memory SSLContext."""

    host: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc


class Authority:
    """A self-signed CA limited to ``hosts``; ``issue`` makes short-lived leaves for them."""

    __slots__ = ("_key", "cert", "hosts")

    def __init__(
        self,
        hosts: Iterable[str],
        ttl: timedelta,
        now: datetime | None = None,
        purpose: str = "sidecar interception CA",
    ) -> None:
        self.hosts = frozenset(h.lower() for h in hosts if is_dns_name(h.lower()))
        self._key = ec.generate_private_key(ec.SECP256R1())
        start = (now or datetime.now(UTC)) - _SKEW
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "credential sidecar"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{purpose} {secrets.token_hex(4)}"),
            ]
        )
        public = self._key.public_key()
        builder = (
            _base(name, name, public, start, start + _SKEW + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(_constraints(self.hosts), critical=True)
        )
        self.cert = builder.sign(self._key, hashes.SHA256())

    def __repr__(self) -> str:
        return f"Authority(hosts={sorted(self.hosts)}, not_after={self.not_after.isoformat()})"

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def permits(self, host: str) -> bool:
        return host.lower() in self.hosts

    def issue(
        self, host: str, ttl: timedelta, now: datetime | None = None, also: Iterable[str] = ()
    ) -> Leaf:
        """A leaf for permitted hosts (``host`` plus ``also`` as SANs), never outliving the CA."""
        names = [h.lower() for h in (host, *also)]
        outside = [h for h in names if not self.permits(h)]
        if outside:
            raise ValueError(f"{outside[0]!r} is outside this CA's name constraints")
        return self._sign_leaf(names, ttl, now or datetime.now(UTC))

    def _sign_leaf(self, names: list[str], ttl: timedelta, now: datetime) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        host = names[0]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
        end = min(now + ttl, self.not_after)
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            _base(subject, self.cert.subject, key.public_key(), now - _SKEW, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
            .sign(self._key, hashes.SHA256())
        )
        return Leaf(host, cert, key)


def _base(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _constraints(hosts: frozenset[str]) -> x509.NameConstraints:
    permitted: list[x509.GeneralName] = [x509.DNSName(h) for h in sorted(hosts or {_NOTHING})]
    excluded: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    ]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)


def server_context(leaf: Leaf) -> ssl.SSLContext:
    """A TLS server context holding the leaf, loaded without the key ever touching a disk.

    ``ssl`` only loads keys from a path, so the key goes through an anonymous in-memory file,
    and even there it is encrypted under a random password that exists only in this frame.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    password = secrets.token_bytes(32)
    key_pem = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with _memory_file(leaf.cert.public_bytes(serialization.Encoding.PEM) + key_pem) as path:
        ctx.load_cert_chain(path, password=password)
    return ctx


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A readable path for ``data``: memfd where the OS has it, else a private temp file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("sidecar-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="sidecar-leaf-") as tmp:  # pragma: no cover
        tmp.write(data)
        tmp.flush()
        yield tmp.name
