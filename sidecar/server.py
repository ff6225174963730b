"""Run the listeners of one sidecar process until asked to stop.

SIGTERM/SIGINT: stop accepting, let in-flight requests finish within ``listen.shutdown_grace``,
close the upstream pools, exit 0. SIGHUP, or a change of the config file (including
Kubernetes' ConfigMap symlink swap), reloads the config; an invalid one is refused, logged and
counted, and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from sidecar import audit
from sidecar import config as config_mod
from sidecar.app import build_admin_app, build_health_app
from sidecar.config import Config, split_hostport
from sidecar.errors import ConfigError
from sidecar.logging import get_logger
from sidecar.proxy.listener import ProxyListener
from sidecar.runtime import Runtime

log = get_logger("sidecar.server")


@dataclass
class Server:
    """The admin listener (owns the runtime), the proxy listener, the optional health one."""

    config: Config
    runtime: Runtime = field(init=False)
    runners: list[web.AppRunner] = field(default_factory=list)
    proxy: ProxyListener | None = None

    def __post_init__(self) -> None:
        self.runtime = Runtime(self.config)

    async def start(self) -> None:
        listen = self.config.listen
        apps = [(build_admin_app(self.runtime), listen.admin)]
        if listen.health:
            apps.append((build_health_app(self.runtime), listen.health))
        for app, address in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            host, port = split_hostport(address)
            site = web.TCPSite(runner, host, port, shutdown_timeout=listen.shutdown_grace)
            await site.start()
            self.runners.append(runner)
        self.proxy = ProxyListener(self.runtime)
        await self.proxy.start(*split_hostport(listen.proxy))
        log.info("listening", admin=listen.admin, proxy=listen.proxy, health=listen.health)

    async def stop(self) -> None:
        """Proxy and health first (in-flight requests finish), then admin, which owns Vault."""
        if self.proxy is not None:
            await self.proxy.stop(self.config.listen.shutdown_grace)
            self.proxy = None
            audit.LINES.flush()  # the last requests' audit lines, before anything else stops
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()

    def reload(self, path: str | Path) -> bool:
        try:
            new = config_mod.load(path)
        except ConfigError as exc:
            self.runtime.metrics.config_reloads.labels("rejected").inc()
            log.error("config_reload_rejected", problems=exc.problems)
            return False
        self.runtime.reload(new)
        self.runtime.metrics.config_reloads.labels("applied").inc()
        return True


def _fingerprint(path: Path) -> tuple[int, int, str] | None:
    """Changes when the file is rewritten *or* when a ConfigMap swaps its ..data symlink."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, os.path.realpath(path)


async def watch(server: Server, path: Path, stop: asyncio.Event, interval: float = 2.0) -> None:
    seen = _fingerprint(path)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        current = _fingerprint(path)
        if current is not None and current != seen:
            seen = current
            log.info("config_file_changed", path=str(path))
            server.reload(path)


async def serve(config: Config, path: str | Path | None = None) -> None:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if path is not None:
        loop.add_signal_handler(signal.SIGHUP, server.reload, path)
        watcher = asyncio.create_task(watch(server, Path(path), stop), name="config-watch")
    await server.start()
    try:
        await stop.wait()
        log.info("shutting_down", grace=config.listen.shutdown_grace)
    finally:
        await server.stop()
        if watcher is not None:
            await watcher
        log.info("stopped")
