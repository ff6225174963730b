"""Run the listeners of one sidecar process until asked to stop."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

from aiohttp import web

from sidecar.app import build_admin_app, build_health_app
from sidecar.config import Config, split_hostport
from sidecar.handlers.proxy import build_proxy_app
from sidecar.logging import get_logger
from sidecar.runtime import Runtime

log = get_logger("sidecar.server")


@dataclass
class Server:
    """The admin listener (owns the runtime), the proxy listener, the optional health one."""

    config: Config
    runtime: Runtime = field(init=False)
    runners: list[web.AppRunner] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runtime = Runtime(self.config)

    async def start(self) -> None:
        listen = self.config.listen
        apps = [(build_admin_app(self.runtime), listen.admin)]
        apps.append((build_proxy_app(self.runtime), listen.proxy))
        if listen.health:
            apps.append((build_health_app(self.runtime), listen.health))
        for app, address in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            host, port = split_hostport(address)
            await web.TCPSite(runner, host, port, shutdown_timeout=10.0).start()
            self.runners.append(runner)
        log.info("listening", admin=listen.admin, proxy=listen.proxy, health=listen.health)

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


async def serve(config: Config) -> None:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
        log.info("shutting_down")
    finally:
        await server.stop()
