"""HTTPS interception: ``CONNECT host:443`` to a configured provider host ends here.

Why: SDKs hard-code ``https://`` base URLs. A blind tunnel would let the secret-less app talk to
the provider with no auth at all, so the sidecar answers the CONNECT itself, terminates TLS with
a leaf certificate from its own CA (``sidecar.ca``) and hands the decrypted requests to the
ordinary proxy pipeline, which signs them and re-originates verified TLS to the upstream's url.

How, without an extra port: after the CONNECT passes, the handler writes the 200 line itself,
moves the client's TCP transport under ``loop.start_tls()`` and gives the TLS transport to a
fresh ``RequestHandler`` of an inner proxy application that routes by the CONNECT host only
(the Host header must agree). The CONNECT handler then waits for that connection to end, so
graceful shutdown of the proxy listener also covers intercepted connections.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.errors import SidecarError
from sidecar.hostnames import is_dns_name
from sidecar.logging import get_logger

if TYPE_CHECKING:
    from sidecar.ca import Authority
    from sidecar.runtime import Runtime
    from sidecar.upstreams import Upstream

log = get_logger("sidecar.intercept")

ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
Router = Callable[["Runtime", Any], "tuple[Upstream, str, str]"]


class Interceptor:
    """Owns the CA, the per-host TLS contexts and the inner application's connections."""

    def __init__(self, rt: Runtime) -> None:
        from sidecar.ca import Authority  # cryptography is loaded only when interception is on

        self.rt = rt
        self.cfg = rt.config.intercept
        self.authority = Authority(self.hosts(), timedelta(days=self.cfg.ca_ttl_days))
        self.previous: Authority | None = None
        self._contexts: dict[str, tuple[ssl.SSLContext, datetime]] = {}
        self._connections: dict[asyncio.BaseProtocol, str] = {}
        self._runner: web.AppRunner | None = None

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

    def authorize(self, request: web.Request) -> str:
        """The CONNECT target's host, if an upstream declares it and the port is 443; else 403."""
        host, sep, port = request.raw_path.rpartition(":")
        host = host.lower()
        if not sep or port != "443":
            raise SidecarError("SC4001", "CONNECT is only intercepted to port 443")
        if not is_dns_name(host) or host not in self.hosts():
            raise SidecarError("SC4001", f"CONNECT to {host!r}: not a configured upstream host")
        return host

    async def connect(self, request: web.Request) -> web.StreamResponse:
        """Authorize, answer 200, serve the TLS connection; returns once the client is gone."""
        host = self.authorize(request)
        ctx = self.context(host)
        outer, transport = request.protocol, request.transport
        if self._runner is None or self._runner.server is None or transport is None:
            raise SidecarError("SC1000", "interception is not started")
        tunnel = _Tunnel(self._runner.server())
        self._connections[tunnel.inner] = host
        try:
            await self._serve(transport, tunnel, ctx, host)
        finally:
            self._connections.pop(tunnel.inner, None)
            # The loop never tells the outer protocol: the transport was moved under TLS.
            outer.connection_lost(None)
        return web.Response(status=200)

    async def _serve(
        self, transport: asyncio.Transport, tunnel: _Tunnel, ctx: ssl.SSLContext, host: str
    ) -> None:
        loop = asyncio.get_running_loop()
        transport.write(ESTABLISHED)
        try:
            tls = await loop.start_tls(
                transport, tunnel, ctx, server_side=True, ssl_handshake_timeout=10.0
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("intercept_handshake_failed", host=host, error=type(exc).__name__)
            transport.close()
            return
        if tls is None:
            return
        tunnel.connection_made(tls)
        log.debug("intercept_established", host=host)
        await tunnel.closed

    def route(self, rt: Runtime, request: web.Request) -> tuple[Upstream, str, str]:
        """Intercepted requests go to the CONNECT host's upstream; nothing else is routable."""
        host = self._connections.get(request.protocol)
        if host is None:
            raise SidecarError("SC4001", "Not an intercepted connection")
        target = request.raw_path
        if not target.startswith("/"):
            raise SidecarError("SC4011", "Intercepted requests must use origin-form targets")
        name, _, port = request.headers.get("Host", "").lower().partition(":")
        if name != host or not (port == "" or port.isdigit()):
            raise SidecarError("SC4001", f"Host header does not match the tunnel to {host!r}")
        upstream = self.upstream_for(host)
        if upstream is None:
            raise SidecarError("SC4001", f"Host {host!r} is no longer a configured upstream")
        path, _, query = target.partition("?")
        return upstream, path, query

    async def start(self, inner: web.Application) -> None:
        """Write the CA file and set up the inner application (it has no listening socket)."""
        self.write_bundle()
        self._runner = web.AppRunner(inner, access_log=None, handle_signals=False)
        await self._runner.setup()
        log.info(
            "intercept_ready", hosts=sorted(self.authority.hosts), ca_file=self.cfg.ca_cert_path
        )

    async def drain(self) -> None:
        """Graceful stop: in-flight intercepted requests finish, idle tunnels close now.

        Runs on the proxy app's shutdown, before its own connections are waited for: each open
        tunnel keeps a CONNECT request busy, so an idle one would otherwise hold the whole grace.
        """
        server = self._runner.server if self._runner is not None else None
        if server is not None:
            server.pre_shutdown()
            await server.shutdown(self.rt.config.listen.shutdown_grace)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class _Tunnel(asyncio.Protocol):
    """Forwards to the inner HTTP protocol and tells the CONNECT handler when the tunnel ends."""

    def __init__(self, inner: Any) -> None:
        self.inner: asyncio.Protocol = inner
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            if not self.closed.done():
                self.closed.set_result(None)


def _sni_check(host: str) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """A client that names another host in SNI than it asked to CONNECT to is refused."""

    def check(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if name is not None and name.lower() != host:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    return check


INTERCEPTOR = web.AppKey("interceptor", Interceptor)
_BY_RUNTIME: weakref.WeakKeyDictionary[Runtime, Interceptor] = weakref.WeakKeyDictionary()


def install(
    app: web.Application, rt: Runtime, inner: Callable[[Router], web.Application]
) -> Interceptor:
    """Enable interception on a proxy app; ``inner`` builds the app for decrypted requests."""
    interceptor = Interceptor(rt)
    app[INTERCEPTOR] = interceptor
    _BY_RUNTIME[rt] = interceptor
    inner_app = inner(interceptor.route)

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        await interceptor.start(inner_app)
        yield
        await interceptor.stop()

    app.cleanup_ctx.append(ctx)
    app.on_shutdown.append(lambda _app: interceptor.drain())
    return interceptor


def interceptor_for(rt: Runtime) -> Interceptor | None:
    """The interceptor serving ``rt``'s proxy listener, if interception is enabled."""
    return _BY_RUNTIME.get(rt)
