"""HTTPS interception: ``CONNECT host:443`` to a configured provider host ends here.

Why: SDKs hard-code ``https://`` base URLs. A blind tunnel would let the secret-less app talk to
the provider with no auth at all, so the sidecar answers the CONNECT itself, terminates TLS with
a leaf certificate from its own CA (``sidecar.ca``) and hands the decrypted requests to the
ordinary proxy pipeline, which signs them and re-originates verified TLS to the upstream's url.

How, without an extra port or a second HTTP engine: the listener (``proxy/listener.py``) asks
:meth:`Interceptor.authorize` about the CONNECT target, writes the 200 line, moves the client's
transport under ``loop.start_tls()`` with :meth:`Interceptor.context` and serves the TLS
transport with the same protocol class as plain connections, given a :class:`TunnelRouter`:
requests in the tunnel go to the CONNECT host's upstream only, and their Host must agree.
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.errors import SidecarError
from sidecar.hostnames import is_dns_name
from sidecar.logging import get_logger

if TYPE_CHECKING:
    from sidecar.ca import Authority
    from sidecar.proxy.message import Incoming
    from sidecar.runtime import Runtime
    from sidecar.upstreams import Upstream

log = get_logger("sidecar.intercept")

ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
HANDSHAKE_TIMEOUT = 10.0  # a client that CONNECTs and never says hello is closed


class Interceptor:
    """Owns the CA and the per-host TLS contexts; decides which CONNECT targets it terminates."""

    def __init__(self, rt: Runtime) -> None:
        from sidecar.ca import Authority  # cryptography is loaded only when interception is on

        self.rt = rt
        self.cfg = rt.config.intercept
        self.authority = Authority(self.hosts(), timedelta(days=self.cfg.ca_ttl_days))
        self.previous: Authority | None = None
        self._contexts: dict[str, tuple[ssl.SSLContext, datetime]] = {}

    def hosts(self) -> set[str]:
        """DNS names the current upstreams declare (url hosts included), all lower-case."""
        return {h for u in self.rt.upstreams.values() for h in u.hosts if is_dns_name(h)}

    def upstream_for(self, host: str) -> Upstream | None:
        return next((u for u in self.rt.upstreams.values() if host in u.hosts), None)

    def bundle_pem(self) -> bytes:
        """The current CA, plus the previous one while leaves it signed may still be in use."""
        pem = self.authority.cert_pem()
        if self.previous is not None and self.previous.not_after > datetime.now(UTC):
            pem += self.previous.cert_pem()
        return pem

    def write_bundle(self) -> None:
        """Atomically replace the CA file, so a reader never sees half a certificate."""
        path = self.cfg.ca_cert_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_bytes(self.bundle_pem())
        tmp.chmod(0o644)
        tmp.replace(path)

    def rotate(self, reason: str) -> None:
        """A new CA (the old one stays in the bundle); every cached leaf is dropped."""
        from sidecar.ca import Authority

        self.previous = self.authority
        self.authority = Authority(self.hosts(), timedelta(days=self.cfg.ca_ttl_days))
        self._contexts.clear()
        self.write_bundle()
        log.warning("intercept_ca_rotated", reason=reason, not_after=str(self.authority.not_after))

    def context(self, host: str, now: datetime | None = None) -> ssl.SSLContext:
        """The cached TLS context for ``host``; re-issued after two thirds of the leaf's life."""
        now = now or datetime.now(UTC)
        ttl = timedelta(hours=self.cfg.leaf_ttl_hours)
        if not self.authority.permits(host):
            self.rotate("host added by a config reload")
        elif self.authority.not_after - now < ttl:
            self.rotate("CA expires within one leaf lifetime")
        cached = self._contexts.get(host)
        if cached is not None and cached[1] > now:
            return cached[0]
        from sidecar.ca import server_context

        leaf = self.authority.issue(host, ttl, now)
        ctx = server_context(leaf)
        ctx.sni_callback = _sni_check(host)
        self._contexts[host] = (ctx, now + (leaf.not_after - now) * 2 / 3)
        log.info("intercept_leaf_issued", host=host, not_after=str(leaf.not_after))
        return ctx

    def authorize(self, target: str) -> str:
        """The CONNECT target's host, if an upstream declares it and the port is 443; else 403."""
        host, sep, port = target.rpartition(":")
        host = host.lower()
        if not sep or port != "443":
            raise SidecarError("SC4001", "CONNECT is only intercepted to port 443")
        if not is_dns_name(host) or host not in self.hosts():
            raise SidecarError("SC4001", f"CONNECT to {host!r}: not a configured upstream host")
        return host

    def router(self, host: str) -> TunnelRouter:
        """The router of a tunnel to ``host`` (authorized by :meth:`authorize`)."""
        return TunnelRouter(self, host)

    def start(self) -> None:
        """Write the CA file, for apps and injectors that read it rather than /v1/ca.pem."""
        self.write_bundle()
        log.info(
            "intercept_ready", hosts=sorted(self.authority.hosts), ca_file=self.cfg.ca_cert_path
        )


@dataclass(frozen=True, slots=True)
class TunnelRouter:
    """Routes the requests of one intercepted tunnel: to the CONNECT host's upstream only.

    Same signature as ``pipeline.route``, so the pipeline does not know which mode it serves.
    """

    interceptor: Interceptor
    host: str

    def __call__(self, rt: Runtime, request: Incoming) -> tuple[Upstream, str, str]:
        target = request.raw_path
        if not target.startswith("/"):
            raise SidecarError("SC4011", "Intercepted requests must use origin-form targets")
        name, _, port = request.headers.get("Host", "").lower().partition(":")
        if name != self.host or not (port == "" or port.isdigit()):
            raise SidecarError("SC4001", f"Host header does not match the tunnel to {self.host!r}")
        upstream = self.interceptor.upstream_for(self.host)
        if upstream is None:
            raise SidecarError("SC4001", f"Host {self.host!r} is no longer a configured upstream")
        path, _, query = target.partition("?")
        return upstream, path, query


def _sni_check(host: str) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """A client that names another host in SNI than it asked to CONNECT to is refused."""

    def check(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if name is not None and name.lower() != host:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    return check


_BY_RUNTIME: weakref.WeakKeyDictionary[Runtime, Interceptor] = weakref.WeakKeyDictionary()


def install(rt: Runtime) -> Interceptor:
    """The interceptor of ``rt``'s proxy listener, registered for ``/v1/ca.pem``."""
    interceptor = Interceptor(rt)
    _BY_RUNTIME[rt] = interceptor
    return interceptor


def interceptor_for(rt: Runtime) -> Interceptor | None:
    """The interceptor serving ``rt``'s proxy listener, if interception is enabled."""
    return _BY_RUNTIME.get(rt)
