"""Run the listeners of one sidecar role until asked to stop.

Which listeners a role serves is ``shared/DESIGN.md``'s listener map: ``proxy`` binds
``listen.proxy``, ``listen.local`` (read-only) and ``listen.health``; ``admin`` binds
``listen.admin`` (TCP or ``unix:/path``, mode 0600) and ``listen.health``; ``all`` binds the four.

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
from sidecar.app import build_admin_app, build_health_app, build_local_app
from sidecar.config import Config, split_hostport, unix_path
from sidecar.errors import ConfigError, SidecarError
from sidecar.handlers.auth import AdminAuth
from sidecar.logging import get_logger
from sidecar.proxy.listener import ProxyListener
from sidecar.roles import Role, runtime_for
from sidecar.runtime import Runtime

log = get_logger("sidecar.server")


@dataclass
class Server:
    """The listeners of one role; the first app started owns the runtime and stops last."""

    config: Config
    role: Role = "proxy"
    runtime: Runtime = field(init=False)
    runners: list[web.AppRunner] = field(default_factory=list)
    proxy: ProxyListener | None = None

    def __post_init__(self) -> None:
        self.runtime = runtime_for(self.config, self.role)

    def admin_auth(self) -> AdminAuth:
        """Always required; refused at start when a TCP admin listener would have no way in."""
        socket = unix_path(self.config.listen.admin) is not None
        auth = AdminAuth.from_config(self.config, socket=socket, required=True)
        if not auth.configured:
            raise SidecarError(
                "SC6002", "set admin.token_file (or admin.token), or admin.vault_tokens: true"
            )
        return auth

    def _apps(self) -> list[tuple[web.Application, str]]:
        listen, rt = self.config.listen, self.runtime
        apps: list[tuple[web.Application, str]] = []
        if self.role in ("admin", "all"):
            admin = build_admin_app(rt, auth=self.admin_auth(), local_routes=self.role == "all")
            apps.append((admin, listen.admin))
        if self.role in ("proxy", "all"):
            apps.append((build_local_app(rt, own_runtime=self.role == "proxy"), listen.local))
        if listen.health:
            apps.append((build_health_app(rt), listen.health))
        return apps

    async def start(self) -> None:
        listen = self.config.listen
        for app, address in self._apps():
            runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=listen.shutdown_grace
            )
            await runner.setup()
            self.runners.append(runner)
            await self._site(runner, address).start()
            path = unix_path(address)
            if path:
                os.chmod(path, 0o600)  # already 0600 from the umask; said again, explicitly
        if self.role in ("proxy", "all"):
            self.proxy = ProxyListener(self.runtime)
            await self.proxy.start(*split_hostport(listen.proxy))
        log.info(
            "listening",
            role=self.role,
            proxy=listen.proxy if self.proxy else None,
            local=listen.local if self.role != "admin" else None,
            admin=listen.admin if self.role != "proxy" else None,
            health=listen.health,
        )

    def _site(self, runner: web.AppRunner, address: str) -> web.BaseSite:
        path = unix_path(address)
        if path:
            return _PrivateUnixSite(runner, path)
        host, port = split_hostport(address)
        return web.TCPSite(runner, host, port)

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


class _PrivateUnixSite(web.UnixSite):
    """A Unix socket created with mode 0600: no moment when another user could connect."""

    async def start(self) -> None:
        old = os.umask(0o177)
        try:
            await super().start()
        finally:
            os.umask(old)


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


async def serve(config: Config, path: str | Path | None = None, role: Role = "proxy") -> None:
    server = Server(config, role)
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
