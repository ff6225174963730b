"""Everything the listeners share, with one owner for its lifecycle.

Start-up never blocks on Vault: if Vault is down the sidecar still starts, answers
``/readyz`` with 503, and a background task keeps trying (backoff with jitter) until it can log
in, check the transit key and fill the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import aiohttp

from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.metrics import Metrics
from sidecar.proxykeys.store import KeyStore
from sidecar.store import CredentialStore, FieldSpec
from sidecar.upstreams import Upstream, build_upstreams
from sidecar.vault import Vault

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
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = Metrics()
        self.metrics.watch(self)

    @property
    def stale_after(self) -> float:
        """Past this age the cache has missed a sync: serving from it is a stale serve."""
        return 2 * self.config.cache.refresh_interval + 2 * self.config.vault.timeout

    @property
    def ready(self) -> bool:
        return self.bootstrapped and self.vault.authenticated

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
        for upstream in self.upstreams.values():
            upstream.open()
        self._tasks.append(asyncio.create_task(self._bootstrap(), name="vault-bootstrap"))

    async def _bootstrap(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                await self.vault.login()
                await self.vault.ensure_transit_key()
                loaded = await self.store.sync()
                await self.keys.sync()
            except SidecarError as exc:
                log.warning("vault_bootstrap_retry", code=exc.code, error=exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 30.0)
                continue
            self.bootstrapped = True
            log.info("sidecar_ready", credentials=loaded, upstreams=len(self.upstreams))
            self._tasks.append(asyncio.create_task(self.vault.maintain(self._stop), name="renew"))
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="cache-sync"))
            return

    async def _sync_loop(self) -> None:
        interval = self.config.cache.refresh_interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                return
            try:
                changed = await self.store.sync() + await self.keys.sync()
                if changed:
                    log.info("cache_synced", changed=changed)
            except SidecarError as exc:
                age = time.monotonic() - (self.store.last_sync or self.started_at)
                log.warning(
                    "cache_sync_failed_serving_stale",
                    code=exc.code,
                    age_seconds=round(age, 1),
                    max_stale=self.config.cache.max_stale,
                )

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
