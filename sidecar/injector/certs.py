"""The webhook's serving certificate: a generated dev CA, or mounted files reloaded on change.

The API server only calls webhooks over HTTPS, verifying the certificate against the
``caBundle`` of the MutatingWebhookConfiguration. In a cluster the key pair is a mounted Secret
(cert-manager or ``--write-certs``) that is rotated in place, so :class:`CertReloader` polls the
files and swaps in a new ``SSLContext`` for *new* connections (through ``sni_callback``) without
a restart; connections already open keep the certificate they negotiated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from sidecar.ca import Authority
from sidecar.logging import get_logger

log = get_logger("sidecar.injector.certs")


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM bytes of a CA certificate and of a serving certificate + key it signed."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name the API server may use for ``service`` in ``namespace``."""
    base = f"{service}.{namespace}"
    return [service, base, f"{base}.svc", f"{base}.svc.cluster.local"]


def generate(dns_names: Sequence[str], days: int = 365) -> Pki:
    """A fresh CA (limited to ``dns_names``) and a serverAuth leaf for them, valid ``days``.

    The same Authority as HTTPS interception, so there is one place that builds certificates.
    """
    if not dns_names:
        raise ValueError("at least one DNS name is needed")
    ttl = timedelta(days=days)
    authority = Authority(dns_names, ttl, purpose="credential-sidecar injector CA")
    leaf = authority.issue(dns_names[0], ttl, also=dns_names[1:])
    pem = serialization.Encoding.PEM
    key_pem = leaf.key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pki(authority.cert_pem(), leaf.cert.public_bytes(pem), key_pem)


def write_pki(pki: Pki, directory: Path) -> tuple[Path, Path, Path]:
    """Write ``ca.crt``, ``tls.crt`` and ``tls.key`` (mode 0600), the names a TLS Secret uses."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    ca.write_bytes(pki.ca_pem)
    cert.write_bytes(pki.cert_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pki.key_pem)
    return ca, cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context; the API server speaks TLS 1.2 and 1.3."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class CertReloader:
    """Serves ``cert``/``key``; a change seen by :meth:`reload_if_changed` applies to new TLS."""

    def __init__(self, cert: Path, key: Path, interval: float = 10.0) -> None:
        self.cert, self.key, self.interval = cert, key, interval
        self._stamp = self._read_stamp()
        self._current = server_context(cert, key)
        self.served = self._current
        self.served.sni_callback = self._pick

    @property
    def current(self) -> ssl.SSLContext:
        """The context new handshakes get: ``served`` until the first successful reload."""
        return self._current

    def _read_stamp(self) -> tuple[tuple[int, int, int], ...]:
        """mtime, inode and size of both files: a Secret update swaps a symlink (new inode)."""
        stats = (os.stat(self.cert), os.stat(self.key))
        return tuple((s.st_mtime_ns, s.st_ino, s.st_size) for s in stats)

    def _pick(self, sock: Any, _server_name: str | None, ctx: ssl.SSLContext) -> None:
        """Called on every ClientHello: hand the handshake the newest context."""
        if self._current is not ctx:
            sock.context = self._current

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; a broken pair keeps the old certificate."""
        try:
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return False
            fresh = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("injector_cert_reload_failed", error=str(exc))
            return False
        self._current, self._stamp = fresh, stamp
        log.info("injector_cert_reloaded", cert=str(self.cert))
        return True

    async def watch(self, _app: object) -> AsyncIterator[None]:
        """aiohttp ``cleanup_ctx``: poll while the app runs, stop with it."""
        task = asyncio.create_task(self._poll(), name="injector-cert-reload")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.reload_if_changed)
