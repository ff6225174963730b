"""A whole sidecar (admin, proxy) plus a recording provider peer on real loopback ports.

Why a thread: schemathesis (``requests``), raw sockets and hypothesis are synchronous, and a
blocking call made inside pytest-aiohttp's event loop would stall the very server it talks to.
So the sidecar runs on a private event loop in a thread of its own, and tests block freely.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import yaml
from aiohttp import web

from sidecar import config
from sidecar.app import build_admin_app
from sidecar.proxy.listener import ProxyListener
from sidecar.runtime import Runtime
from tests.integration.conftest import config_dict
from tests.proxyserver import serve_proxy

T = TypeVar("T")
GOOD_KEY = "SECR_good_key_1"
# Summary lines ("N cases, 0 server errors") shown at the end of the run, with or without -s.
SUMMARY = pytest.StashKey[list[str]]()


@dataclass
class Peer:
    """Accepts ``GOOD_KEY`` on ``GET /v1/balance`` (the verify probe); records everything else."""

    seen: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def balance(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != GOOD_KEY:
                return web.json_response({"message": "Unauthorized"}, status=401)
            return web.json_response({"balance": 100})

        async def record(request: web.Request) -> web.Response:
            self.seen.append((request.method, request.raw_path, list(request.headers.items())))
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/v1/balance", balance)
        app.router.add_route("*", "/{tail:.*}", record)
        return app


class LiveSidecar:
    """Start with :meth:`start`, stop with :meth:`stop`; URLs are ``http://127.0.0.1:<port>``."""

    def __init__(self, vault_addr: str, prefix: str) -> None:
        self.vault_addr = vault_addr
        self.prefix = prefix
        self.peer = Peer()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self.admin_url = self.proxy_url = self.peer_url = ""
        self.runtime: Runtime | None = None
        self._proxy: ProxyListener | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> LiveSidecar:
        self._thread.start()
        self.run(self._start())
        return self

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self) -> None:
        self.peer_url = await self._serve(self.peer.app())
        upstream = {
            "url": self.peer_url,
            "scheme": "api_key",
            "credential": "azupay",
            "environment": "sandbox",
            "probe": {"method": "GET", "path": "/v1/balance"},
        }
        # verify's rate limit is raised: the fuzzers verify far more than 10 times a minute.
        admin = {"max_body": 4096, "verify_per_minute": 100_000}
        data = config_dict(self.vault_addr, self.prefix, {"azupay": upstream}, admin=admin)
        self.runtime = rt = Runtime(config.loads(yaml.safe_dump(data), {}))
        self.admin_url = await self._serve(build_admin_app(rt))
        self._proxy, self.proxy_url = await serve_proxy(rt)
        await rt.wait_ready(15)

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._proxy is not None:
                await self._proxy.stop(1.0)
            for runner in reversed(self._runners):
                await runner.cleanup()
            await self.loop.shutdown_asyncgens()

        try:
            self.run(cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
