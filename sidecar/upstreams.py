"""An upstream at run time: its config, its scheme instance, its pools.

Two pools per upstream: the lean :class:`sidecar.proxy.client.Pool` carries proxied requests (the
hot path); an aiohttp ``ClientSession`` serves the scheme itself (token requests, verify probes).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from sidecar import tlskeys
from sidecar.config import Config, UpstreamConfig
from sidecar.errors import SidecarError
from sidecar.proxy import client as http1
from sidecar.schemes.base import Credential, Scheme, SchemeOptions, UpstreamContext
from sidecar.schemes.mtls import CERT_FIELD
from sidecar.schemes.registry import build_scheme
from sidecar.store import FieldSpec
from sidecar.webhooksig import WebhookSignature


@dataclass(slots=True)
class Upstream:
    name: str
    cfg: UpstreamConfig
    url: URL
    scheme: Scheme
    spec: FieldSpec
    hosts: frozenset[str]
    specs: list[tuple[str, SchemeOptions]]
    session: aiohttp.ClientSession | None = field(default=None)
    pool: http1.Pool | None = field(default=None)
    prefix: str = field(init=False)  # origin and base path, what a relative path is appended to
    keys: tlskeys.TlsKeys | None = field(init=False)  # client TLS, when the scheme has mtls
    _retired: aiohttp.ClientSession | None = field(default=None, init=False)
    _closing: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    @classmethod
    def build(
        cls, name: str, cfg: UpstreamConfig, specs: list[tuple[str, SchemeOptions]]
    ) -> Upstream:
        url = URL(cfg.url)
        scheme = build_scheme(specs, UpstreamContext(name=name, url=url, timeout=cfg.timeout))
        spec = field_spec(scheme, "+".join(n for n, _ in specs), cfg.webhook_signature)
        hosts = frozenset(h.lower() for h in cfg.hosts) | {str(url.host).lower()}
        return cls(name=name, cfg=cfg, url=url, scheme=scheme, spec=spec, hosts=hosts, specs=specs)

    def __post_init__(self) -> None:
        self.prefix = str(self.url.origin()) + self.url.raw_path.rstrip("/")
        mtls = CERT_FIELD in self.spec.public
        self.keys = tlskeys.TlsKeys(self.name, self.cafile) if mtls else None

    @property
    def cafile(self) -> str | None:
        return str(self.cfg.ca_bundle) if self.cfg.ca_bundle else None

    def accepts(self, host: str, port: int | None) -> bool:
        """Forward-proxy match: a declared name on a default port, or exactly the url's origin."""
        if port in (None, 80, 443) and host in self.hosts:
            return True
        return host == (self.url.host or "").lower() and port == self.url.port

    def open(self) -> aiohttp.ClientSession:
        """Pools for the upstream; TLS always verified, optionally with a CA bundle."""
        ctx = tls_context(self.cafile)
        self.pool = http1.Pool(
            self.url,
            ctx if self.url.scheme == "https" else None,
            limit=self.cfg.max_connections,
            connect_timeout=self.cfg.connect_timeout,
            timeout=self.cfg.timeout,
            pool_timeout=self.cfg.pool_timeout,
        )
        self.session = self._session(ctx)
        self.scheme.bind(self.session)
        return self.session

    def _session(self, ctx: ssl.SSLContext) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=256, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=self.cfg.timeout, sock_connect=self.cfg.connect_timeout
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    def pool_for(self, cred: Credential) -> http1.Pool:
        """The pool, its TLS switched to ``cred``'s client certificate when that is new.

        An identity comparison and a clock read per request when nothing changed (the clock:
        an expired certificate is refused here, SC4061, before anything is sent). The first
        request that sees a new credential object (or the sync, ``refresh_tls``) switches the
        pool if its pair changed: new connections present the new certificate, pooled ones
        close after their request.
        """
        pool = self.pool
        if pool is None:
            raise SidecarError("SC1000", "sidecar is not started")
        keys = self.keys
        if keys is not None:
            if keys.source is not cred:  # a new version, or the same number re-created
                self.refresh_tls(cred)
            keys.check()
        return pool

    def refresh_tls(self, cred: Credential | None) -> None:
        """Build the client TLS of a new credential version (at sync and at first use); drop
        it when the credential is gone (at sync)."""
        if self.keys is None:
            return
        if cred is None or cred.upstream != self.name:  # deleted: the key leaves memory too
            if self.keys.drop():
                self._use(tls_context(self.cafile))
            return
        ctx = self.keys.ensure(cred)
        if ctx is not None:
            self._use(ctx)

    def _use(self, ctx: ssl.SSLContext) -> None:
        if self.pool is not None:
            self.pool.use_tls(ctx)
        if self.session is not None:
            self._swap_session(ctx)

    def _swap_session(self, ctx: ssl.SSLContext) -> None:
        """The scheme's own requests (a token endpoint behind the same mTLS) present the new
        certificate too. The old session may have a token request in flight: it is closed at
        the next swap, or with the upstream."""
        if self._retired is not None:
            self._closing.add(task := asyncio.create_task(self._retired.close()))
            task.add_done_callback(self._closing.discard)
        self._retired = self.session
        self.session = self._session(ctx)
        self.scheme.bind(self.session)

    @asynccontextmanager
    async def verify_session(
        self, cred: Credential, pooled: aiohttp.ClientSession
    ) -> AsyncIterator[aiohttp.ClientSession]:
        """The session a verify uses: one presenting the candidate's client certificate (a
        throwaway, closed after) when the scheme has mtls, else the upstream's own."""
        if self.keys is None:
            yield pooled
            return
        ctx, _ = tlskeys.client_context(cred, self.cafile)
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=True, limit=4)
        async with aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        ) as http:
            yield http

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._retired is not None:
            await self._retired.close()
        if self.pool is not None:
            await self.pool.close()
        if self.session is not None:
            await self.session.close()


def field_spec(scheme: Scheme, name: str, webhook: WebhookSignature | None) -> FieldSpec:
    """The scheme's fields, plus the webhook signing key as one more secret field."""
    secret, optional = tuple(scheme.secret_fields), tuple(scheme.optional_fields)
    if webhook is not None and webhook.field not in secret:
        secret += (webhook.field,)
        optional += () if webhook.required else (webhook.field,)
    return FieldSpec(name, tuple(scheme.public_fields), secret, optional)


_CONTEXTS: dict[str | None, tuple[int, ssl.SSLContext]] = {}


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """One verifying context per CA source, shared by every upstream that uses it.

    Loading a trust store costs ~60 ms and ~0.8 MiB per context, paid once per upstream at
    start-up before this. The file's mtime is part of the key, so a reload sees a new bundle.
    """
    stamp = os.stat(cafile).st_mtime_ns if cafile else 0
    cached = _CONTEXTS.get(cafile)
    if cached is None or cached[0] != stamp:
        cached = _CONTEXTS[cafile] = (stamp, ssl.create_default_context(cafile=cafile))
    return cached[1]


def build_upstreams(config: Config) -> dict[str, Upstream]:
    return {
        name: Upstream.build(name, cfg, config.schemes[name])
        for name, cfg in config.upstreams.items()
    }
