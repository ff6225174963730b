"""Run several sandbox peers on loopback ports, for `sidecar dev` and integration tests.

Peers bind loopback only: they accept fake credentials and echo what they are sent, so they
must never be reachable from another machine. Port 0 asks the OS for a free port; the socket
is bound here (not by aiohttp) so the real port is known without reaching into aiohttp's
private state.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    app: web.Application
    port: int = 0
    tls: ssl.SSLContext | None = None  # served over https (the mTLS peer)


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    name: str
    app: web.Application
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:9101``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class Sandboxes:
    """The running peers by name; ``close()`` (or ``async with``) stops them all."""

    def __init__(self, running: dict[str, RunningSandbox], runners: list[web.AppRunner]) -> None:
        self.running = running
        self._runners = runners

    def __getitem__(self, name: str) -> RunningSandbox:
        return self.running[name]

    def url(self, name: str) -> str:
        return self.running[name].url

    def app(self, name: str) -> web.Application:
        return self.running[name].app

    def add(self, running: RunningSandbox, runner: web.AppRunner) -> None:
        self.running[running.name] = running
        self._runners.append(runner)

    def describe(self) -> dict[str, dict[str, object]]:
        return {n: {"url": r.url, "port": r.port} for n, r in self.running.items()}

    async def close(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    async def __aenter__(self) -> Sandboxes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def require_loopback(host: str) -> None:
    """Refuse any address but loopback: these peers accept fake credentials."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"sandbox peers bind loopback only, not {host!r}")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


async def start_one(
    name: str, spec: SandboxSpec, host: str
) -> tuple[RunningSandbox, web.AppRunner]:
    runner = web.AppRunner(spec.app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        sock = bind(host, spec.port)
    except OSError:
        await runner.cleanup()
        raise
    await web.SockSite(runner, sock, ssl_context=spec.tls).start()
    port = int(sock.getsockname()[1])
    return RunningSandbox(name, spec.app, host, port, spec.tls is not None), runner


async def start_sandboxes(
    specs: Mapping[str, SandboxSpec | web.Application], host: str = "127.0.0.1"
) -> Sandboxes:
    """Start each app on ``host``; a bare app gets a free port. All or nothing."""
    require_loopback(host)
    sandboxes = Sandboxes({}, [])
    try:
        for name, given in specs.items():
            spec = given if isinstance(given, SandboxSpec) else SandboxSpec(given)
            sandboxes.add(*await start_one(name, spec, host))
    except BaseException:
        await sandboxes.close()
        raise
    return sandboxes
