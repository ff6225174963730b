"""The sidecar's own proxy listener as an aiohttp test server, so ``aiohttp_client`` drives it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import BaseTestServer
from yarl import URL

from sidecar.proxy.listener import ProxyListener
from sidecar.runtime import Runtime


class ProxyTestServer(BaseTestServer):
    """The real listener on an ephemeral loopback port (not aiohttp's TestServer)."""

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listener = ProxyListener(rt)
        self._started = False

    async def _make_runner(self, **kwargs: Any) -> Any:
        raise NotImplementedError  # start_server does not use a runner

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kw: Any) -> None:
        if self._started:
            return
        await self.listener.start(self.host, self.port or 0)
        self._started = True
        self.port = self.listener.port
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")

    @property
    def started(self) -> bool:
        return self._started

    async def close(self) -> None:
        if self._started and not self._closed:
            await self.listener.stop(1.0)
            self._root = None
            self._closed = True


async def serve_proxy(rt: Runtime, host: str = "127.0.0.1") -> tuple[ProxyListener, str]:
    """Start a listener outside pytest-aiohttp; returns it and its base URL."""
    listener = ProxyListener(rt)
    await listener.start(host, 0)
    return listener, f"http://{host}:{listener.port}"
