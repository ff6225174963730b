"""Drive the engine's protocol objects in memory: the listener's and the client's.

The request side feeds app bytes to a real :class:`sidecar.proxy.listener.ProxyProtocol` over an
in-memory transport; the pipeline's forward boundary (``pipeline.forward``) is replaced by a
recorder that reads the body as the real pipeline streams it and keeps what it would send:
method, target, the headers ``pipeline.forward_headers`` passes on, the body and whether it
ended cleanly. The response side feeds provider bytes to a real
:class:`sidecar.proxy.client._Conn` (llhttp) after a real ``send`` wrote the request head, and
the listener relays that answer to the app. Nothing here parses HTTP: h11 (reference.py) reads
both ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from yarl import URL

from sidecar import config
from sidecar.errors import SidecarError
from sidecar.proxy import client as http1
from sidecar.proxy import listener as engine
from sidecar.proxy import pipeline
from sidecar.runtime import Runtime
from tests.integration.conftest import config_dict

SETTLE_TURNS = 20_000  # loop turns at most per settle; a body of 140 KiB needs a few hundred
UPSTREAM_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UPSTREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


class Transport(asyncio.Transport):
    """An in-memory socket: records writes; close() reports connection_lost on the next turn."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.out = bytearray()
        self.closing = False
        self.closed_by_peer = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.out += data

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def get_write_buffer_size(self) -> int:
        return 0


@dataclass
class Forwarded:
    """What the pipeline would have sent upstream for one request."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False  # the body iterator ended cleanly: the upstream got a whole message
    head_bytes: bytes = b""  # the request head the real client built (client.Pool._head)


@dataclass
class Run:
    """One case through the listener: what went upstream, what the app read, how it ended."""

    forwarded: list[Forwarded] = field(default_factory=list)
    app: bytes = b""
    closed: bool = False  # the sidecar closed the app's connection before the app did
    open_with_error: bool = False  # filled by the checker
    upstream_head: bytes = b""  # response cases: the head the client wrote upstream


def settle_ready(loop: asyncio.AbstractEventLoop) -> Callable[[], bool]:
    """Whether callbacks are ready to run (asyncio's own loop); else a fixed number of turns."""
    ready = getattr(loop, "_ready", None)
    if ready is None:
        return lambda: True
    return lambda: bool(ready)


async def settle(busy: Callable[[], bool]) -> None:
    """Run the loop until no callback is ready (everything waits on input or a timer)."""
    await asyncio.sleep(0)
    for _ in range(SETTLE_TURNS):
        if not busy():
            return
        await asyncio.sleep(0)


def _upstream_head(fwd: Forwarded, length: int | None, streamed: bool) -> bytes:
    """The head the real client would write for this request (its own framing and checks)."""
    pool = http1.Pool(URL("http://up.test"), None)
    body: Any = _empty() if streamed else None
    framing, _, _ = http1._framing(fwd.method, body, length)
    headers = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in fwd.headers]
    return pool._head(fwd.method, fwd.target, headers, framing)


async def _empty() -> Any:  # pragma: no cover - an async generator object, never iterated
    yield b""


def _make_conn(loop: asyncio.AbstractEventLoop) -> tuple[http1._Conn, Transport]:
    pool = http1.Pool(URL("http://up.test"), None, timeout=3600)
    conn = http1._Conn(pool, loop)
    transport = Transport(conn)
    conn.connection_made(transport)
    return conn, transport


class Engine:
    """One runtime (never started: no Vault is needed to drive the protocol objects)."""

    def __init__(self) -> None:
        data = config_dict(
            "http://127.0.0.1:9",
            "fuzz",
            {
                "peer": {
                    "url": "http://up.test",
                    "scheme": "api_key",
                    "credential": "peer",
                    "environment": "sandbox",
                }
            },
        )
        self.rt = Runtime(config.loads(yaml.safe_dump(data), {}))
        self.listener = engine.ProxyListener(self.rt)
        self.reply: list[bytes] = []  # provider bytes for the next forward; [] = a plain 200
        self.run = Run()
        self._feeding: asyncio.Task[None] | None = None

    @contextmanager
    def patched(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
        monkeypatch.setattr(pipeline, "forward", self._forward)
        yield self

    async def _forward(
        self, rt: Runtime, req: Any, router: Any
    ) -> tuple[Any, Any, float, tuple[bytes, ...]]:
        """The recorder at the forward boundary: read the body as it streams, then answer.

        No credential here, so nothing to scrub (``()``): the relay is compared byte for byte.
        """
        headers = [
            (k.encode("latin-1"), v.encode("utf-8", "surrogateescape"))
            for k, v in pipeline.forward_headers(req).items()
        ]
        fwd = Forwarded(req.method, req.raw_path, headers)
        self.run.forwarded.append(fwd)
        try:
            fwd.head_bytes = _upstream_head(fwd, req.content_length, req.content is not None)
        except ValueError:
            raise SidecarError("SC4010", "refused by the client's head check") from None
        if req.content is not None:
            async for chunk in req.content.iter_chunked(65536):
                fwd.body += chunk
        fwd.complete = True
        return rt.upstreams["peer"], await self._answer(req.method == "HEAD"), 0.0, ()

    async def _answer(self, head_only: bool) -> http1.Response:
        """A real client connection reads the provider's bytes; its answer goes to the listener."""
        loop = asyncio.get_running_loop()
        conn, transport = _make_conn(loop)
        sending = loop.create_task(
            conn.send(
                b"GET / HTTP/1.1\r\nHost: up.test\r\n\r\n",
                None,
                None,
                None,
                head_only,
                loop.time() + 3600,
            )
        )
        await asyncio.sleep(0)
        self.run.upstream_head = bytes(transport.out)
        reads = list(self.reply) if self.reply else [UPSTREAM_HEAD if head_only else UPSTREAM_OK]
        while reads and not sending.done():
            conn.data_received(reads.pop(0))
            await asyncio.sleep(0)
        if not sending.done():
            conn.connection_lost(None)  # the provider closes after its bytes
        try:
            resp = await sending
        except http1.UpstreamConnectionError as exc:
            raise SidecarError(
                "SC4007", f"Upstream up.test connection failed ({exc.kind})"
            ) from None
        except http1.UpstreamTimeout:
            raise SidecarError("SC4006", "Upstream up.test timed out") from None
        self._feeding = loop.create_task(self._rest(conn, reads))  # the body after the head
        return resp

    @staticmethod
    async def _rest(conn: http1._Conn, reads: list[bytes]) -> None:
        for data in reads:
            if conn.dead:
                return
            conn.data_received(data)
            await asyncio.sleep(0)
        if not conn.dead:
            conn.connection_lost(None)

    async def drive(self, reads: list[bytes], reply: list[bytes]) -> Run:
        """Feed the app's reads to a fresh connection; settle; then the app closes."""
        loop = asyncio.get_running_loop()
        busy = settle_ready(loop)
        self.run = run = Run()
        self.reply = reply
        proto = engine.ProxyProtocol(self.listener)
        transport = Transport(proto)
        proto.connection_made(transport)
        for data in reads:
            if not transport.reading:  # paused: the kernel would hold the rest
                await settle(busy)
            if transport.closing or not transport.reading:
                break
            proto.data_received(data)
            await settle(busy)
        await settle(busy)
        run.closed = transport.closing
        run.app = bytes(transport.out)
        if not transport.closing:
            transport.closing = True
            proto.connection_lost(None)
            await settle(busy)
        return run


@dataclass
class Tally:
    """The whole run: cases by kind, findings by kind (all counted, a few kept as examples)."""

    cases: int = 0
    requests: int = 0
    responses: int = 0
    mutated: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, findings: list[Any]) -> None:
        for finding in findings:
            self.counts[finding.kind] = self.counts.get(finding.kind, 0) + 1
            kept = self.examples.setdefault(finding.kind, [])
            if len(kept) < 5 and all(k.mutation != finding.mutation for k in kept):
                kept.append(finding)

    def of(self, *kinds: str) -> list[str]:
        return [f.line() for kind in kinds for f in self.examples.get(kind, [])]

    def total(self, *kinds: str) -> int:
        return sum(self.counts.get(kind, 0) for kind in kinds)
