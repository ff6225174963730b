"""Everything the listeners share, with one owner for its lifecycle.

Start-up never blocks on Vault: if Vault is down the sidecar still starts, answers
``/readyz`` with 503, and one background task (single flight: proxied requests never read Vault
themselves, they get 503 SC4035 until it is done) keeps trying, full-jitter back-off capped at
``vault.backoff_max``, until the session has a token and the cache is filled. Every background
loop survives any exception: it is logged once per distinct error, counted
(``loop_errors``, exported as a metric) and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import aiohttp

from sidecar import tlskeys
from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.metrics import Metrics
from sidecar.proxykeys.store import KeyStore
from sidecar.store import CredentialStore, FieldSpec
from sidecar.upstreams import Upstream, build_upstreams
from sidecar.vault import Vault
from sidecar.vault.session import full_jitter

log = get_logger("sidecar.runtime")


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.vault = Vault(config.vault)
        self.upstreams: dict[str, Upstream] = build_upstreams(config)
        self.store = CredentialStore(self.vault, self.field_spec)
        self.keys = KeyStore(self.vault)
        self.bootstrapped = False
        self.started_at = time.monotonic()
        self.loop_errors: Counter[tuple[str, str]] = Counter()
        self.last_errors: dict[str, str] = {}  # loop -> its last error kind
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = Metrics()
        self.metrics.watch(self)

    @property
    def stale_after(self) -> float:
        """Past this age the cache has missed a sync: serving from it is a stale serve."""
        return 2 * self.config.cache.refresh_interval + 2 * self.config.vault.timeout

    def cache_age(self) -> float | None:
        last = self.store.last_sync
        return None if last is None else time.monotonic() - last

    def readiness(self) -> dict[str, bool]:
        """ "Can serve": config loaded, cache warm and within max_stale, Vault session valid."""
        age = self.cache_age()
        return {
            "config_loaded": True,
            "cache_loaded": self.bootstrapped,
            "cache_fresh": age is not None and age <= self.config.cache.max_stale,
            "vault_authenticated": self.vault.authenticated,
        }

    @property
    def ready(self) -> bool:
        return all(self.readiness().values())

    def report(self, loop: str, exc: BaseException) -> None:
        """A background loop's failure: counted always, logged once per distinct error."""
        kind = exc.code if isinstance(exc, SidecarError) else type(exc).__name__
        self.loop_errors[(loop, kind)] += 1
        if self.last_errors.get(loop) != kind:
            message = exc.message if isinstance(exc, SidecarError) else None
            log.warning("background_error", loop=loop, error=kind, detail=message)
        self.last_errors[loop] = kind

    def recovered(self, loop: str) -> None:
        if self.last_errors.pop(loop, None) is not None:
            log.info("background_recovered", loop=loop)

    def status(self) -> dict[str, Any]:
        """What /v1/status shows: why the sidecar is (not) ready, without any secret."""
        age = self.cache_age()
        return {
            "ready": self.ready,
            "checks": self.readiness(),
            "vault": self.vault.session.status(),
            "cache": {
                "age": None if age is None else round(age, 1),
                "max_stale": self.config.cache.max_stale,
                "credentials": self.store.cached_count,
            },
            "last_errors": dict(self.last_errors),
            "errors": {f"{loop}:{kind}": n for (loop, kind), n in self.loop_errors.items()},
        }

    def upstream(self, name: str) -> Upstream:
        if name not in self.upstreams:
            raise SidecarError("SC2004", f"Unknown upstream {name!r}")
        return self.upstreams[name]

    def field_spec(self, upstream: str) -> FieldSpec:
        return self.upstream(upstream).spec

    def reload(self, config: Config) -> list[str]:
        """Swap in a new, already validated config; returns what needs a restart to apply.

        Unchanged upstreams keep their object (pool, token cache); changed ones get a new one,
        and the old pool is closed after in-flight requests had time to finish.
        """
        needs_restart = [
            section
            for section in ("vault", "listen", "admin", "intercept")
            if getattr(config, section) != getattr(self.config, section)
        ]
        fresh = build_upstreams(config)
        kept: dict[str, Upstream] = {}
        retired: list[Upstream] = []
        for name, upstream in fresh.items():
            old = self.upstreams.get(name)
            if old is not None and old.cfg == upstream.cfg and old.specs == upstream.specs:
                kept[name] = old
            else:
                upstream.open()
                kept[name] = upstream
                if old is not None:
                    retired.append(old)
        retired += [u for n, u in self.upstreams.items() if n not in fresh]
        self.upstreams = kept
        self.config = config.model_copy(update={s: getattr(self.config, s) for s in needs_restart})
        self._tasks = [t for t in self._tasks if not t.done()]  # reloads must not pile up tasks
        if retired:
            self._tasks.append(asyncio.create_task(self._retire(retired), name="retire-pools"))
        log.info(
            "config_reloaded",
            upstreams=len(kept),
            replaced=len(retired),
            restart_needed=needs_restart,
        )
        return needs_restart

    async def _retire(self, upstreams: list[Upstream]) -> None:
        await asyncio.sleep(self.config.upstream_grace)
        for upstream in upstreams:
            await upstream.close()

    def session_for(self, name: str) -> aiohttp.ClientSession:
        session = self.upstream(name).session
        if session is None:
            raise SidecarError("SC1000", "sidecar is not started")
        return session

    async def start(self) -> None:
        tlskeys.protect_memory()  # decrypted keys live here from now on: no core file
        for upstream in self.upstreams.values():
            upstream.open()
        self._tasks.append(asyncio.create_task(self._bootstrap(), name="vault-bootstrap"))
        self._tasks.append(
            asyncio.create_task(self.vault.maintain(self._stop, self.report), name="vault-session")
        )

    async def _bootstrap(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                loaded = await self._load()
            except Exception as exc:  # any bug or outage: report it and try again, never die
                self.report("bootstrap", exc)
                attempt += 1
                wait = full_jitter(attempt, self.config.vault.backoff_max)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(wait, 0.05))
                continue
            self.bootstrapped = True
            self.recovered("bootstrap")
            log.info("sidecar_ready", credentials=loaded, upstreams=len(self.upstreams))
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="cache-sync"))
            return

    async def _load(self) -> int:
        """Log in (through the session's back-off), check the transit key, fill the cache."""
        await self.vault.session.ensure()
        await self.vault.ensure_transit_key()
        loaded = await self.store.sync()
        await self.keys.sync()
        self.refresh_tls()
        return loaded

    def refresh_tls(self) -> None:
        """At load and after each sync: client TLS for new credential versions (mtls), so the
        expiry metric and warning follow the store without waiting for a request."""
        for upstream in self.upstreams.values():
            if upstream.keys is not None:
                upstream.refresh_tls(self.store.peek(upstream.cfg.credential))

    async def _sync_loop(self) -> None:
        interval = self.config.cache.refresh_interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                return
            try:
                changed = await self.store.sync() + await self.keys.sync()
                self.refresh_tls()
            except Exception as exc:  # serve the cache (up to max_stale), report, try again
                self.report("cache-sync", exc)
                continue
            self.recovered("cache-sync")
            if changed:
                log.info("cache_synced", changed=changed)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() > deadline:
                raise TimeoutError("sidecar did not become ready")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for upstream in self.upstreams.values():
            await upstream.close()
        self.vault.close()
