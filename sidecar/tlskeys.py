"""Client TLS contexts per credential version; the private key goes from memory to OpenSSL.

Why a context per credential, not one per CA (``upstreams.tls_context``): the client
certificate is part of the context, and a replaced certificate must apply to new connections at
once while connections made with the old one finish their request (the pool's ``use_tls``).

Why a memfd: ``SSLContext.load_cert_chain`` reads only from a path. An anonymous memory file
(``memfd_create``), opened through ``/proc/self/fd/N`` and closed right after the load, is a
path with no directory entry and no disk block behind it; a temp file would leave the key on
a filesystem (and in its journal) however quickly it is unlinked. Once loaded, the key lives in
OpenSSL's memory, held by the context only, which is dropped when the credential changes.
"""

from __future__ import annotations

import ctypes
import os
import resource
import ssl
import sys
import time
from dataclasses import dataclass

from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.schemes.base import Credential
from sidecar.schemes.mtls import CERT_FIELD, KEY_FIELD, ClientCert, cert_info

log = get_logger("sidecar.tlskeys")
PR_SET_DUMPABLE = 4  # <linux/prctl.h>
WARN_DAYS = 14  # a warning log line once per version when fewer days than this remain


def protect_memory() -> None:
    """No core file, and no same-user ptrace or /proc/PID/mem reads (PR_SET_DUMPABLE 0).

    Private keys (jws signing keys, client TLS keys) live in this process's memory: a crash
    must not write them to a core file, and the app beside us (same user, shared PID
    namespace) must not read them out. Linux only; elsewhere only the core limit is set.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("prctl_dumpable_failed", errno=ctypes.get_errno())


def has_client_cert(cred: Credential) -> bool:
    return CERT_FIELD in cred.fields and KEY_FIELD in cred.secrets


def load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a certificate chain and its key into ``ctx`` from memory: never a file on disk."""
    fd = os.memfd_create("sidecar-client-key", os.MFD_CLOEXEC)
    try:
        data = memoryview((cert_pem.rstrip("\n") + "\n" + key_pem).encode())
        while data:
            data = data[os.write(fd, data) :]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.ftruncate(fd, 0)  # free the pages now, not when the last reference goes
        os.close(fd)


def client_context(
    cred: Credential, cafile: str | None, dated: bool = True
) -> tuple[ssl.SSLContext, ClientCert]:
    """A verifying context presenting the credential's certificate; checked first (SC20xx)."""
    info = cert_info(cred, dated=dated)
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        load_chain(ctx, cred.value(CERT_FIELD), cred.value(KEY_FIELD))
    except (ssl.SSLError, OSError):  # its text may name PEM internals: not passed on
        raise SidecarError("SC2017", "the certificate and key could not be loaded") from None
    return ctx, info


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The context of one credential version, and when its certificate expires."""

    version: int
    context: ssl.SSLContext | None  # None: this version could not be loaded
    info: ClientCert | None
    not_after: float  # epoch seconds; the hot path compares a float, not a datetime
    not_before: float = 0.0


class TlsKeys:
    """One upstream's client TLS: the context of the credential version in use."""

    def __init__(self, upstream: str, cafile: str | None) -> None:
        self.upstream = upstream
        self.cafile = cafile
        self.current: ClientTls | None = None
        self.credential = ""
        self.source: Credential | None = None  # the credential object ``current`` was made for
        self._pair: tuple[str | None, str | None] = (None, None)

    @property
    def version(self) -> int:
        return -1 if self.current is None else self.current.version

    def ensure(self, cred: Credential) -> ssl.SSLContext | None:
        """The new context when ``cred`` is a version or a pair not seen yet, else None.

        The pair is compared, not only the version: a credential deleted and created again
        starts over at KV version 1, and must not keep presenting the deleted certificate.
        The old context is dropped here (the pool drops its own reference in ``use_tls``, and
        its connections after their request), so the old key leaves OpenSSL's memory with it.
        """
        pair = (cred.fields.get(CERT_FIELD), cred.secrets.get(KEY_FIELD))
        same = self.current is not None and self.current.version == cred.version
        self.source = cred
        if same and pair == self._pair:
            return None
        self.current, self._pair = None, pair
        self.current = self._build(cred)
        return self.current.context

    def drop(self) -> bool:
        """Forget the context (the credential was deleted); True if there was one."""
        had = self.current is not None
        self.current, self.source, self._pair = None, None, (None, None)
        return had

    def _build(self, cred: Credential) -> ClientTls:
        self.credential = cred.name
        if not has_client_cert(cred):
            log.error("client_certificate_missing", credential=cred.name, version=cred.version)
            return ClientTls(cred.version, None, None, 0.0)
        try:
            ctx, info = client_context(cred, self.cafile, dated=False)
        except SidecarError as exc:
            log.error("client_certificate_unusable", credential=cred.name, code=exc.code)
            return ClientTls(cred.version, None, None, 0.0)
        self._warn(cred, info)
        after, before = info.not_after.timestamp(), info.not_before.timestamp()
        return ClientTls(cred.version, ctx, info, after, before)

    def _warn(self, cred: Credential, info: ClientCert) -> None:
        days = info.seconds_left() / 86400
        if days < WARN_DAYS:
            log.warning(
                "client_certificate_expiring",
                credential=cred.name,
                upstream=self.upstream,
                days_left=round(days, 1),
                version=cred.version,
            )

    def check(self) -> None:
        """Per request: refuse before anything is sent if the pair is unusable or expired."""
        cur = self.current
        if cur is None or cur.context is None:
            raise SidecarError("SC4060", f"Credential {self.credential!r}: see the sidecar log")
        now = time.time()
        if now >= cur.not_after:
            raise SidecarError("SC4061", f"Credential {self.credential!r}: certificate expired")
        if now < cur.not_before:
            raise SidecarError("SC4061", f"Credential {self.credential!r}: not valid yet")

    def seconds_left(self) -> float | None:
        cur = self.current
        return None if cur is None or cur.info is None else cur.not_after - time.time()
