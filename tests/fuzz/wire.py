"""A sample of the generated cases over real sockets: app -> real sidecar -> recording provider.

The provider is a raw TCP server (no HTTP library: it must answer with exactly the generated
bytes, malformed ones included). It keeps every byte it receives; h11 reads them afterwards, as
the reference does in memory. One case at a time, so the provider knows which answer to give.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tests.fuzz import reference
from tests.fuzz.harness import UPSTREAM_HEAD, UPSTREAM_OK, Forwarded, Run

READ_WAIT = 0.3  # seconds without bytes after which the app stops reading (the sidecar waits)
KEY = "SECR_fuzz_wire_key_1"


@dataclass
class Recorder:
    """The provider: each connection's bytes, answered with ``reply`` (None: a plain 200; an
    empty reply, a generated case truncated to nothing, is the provider closing unanswered)."""

    reply: bytes | None = None
    received: list[bytearray] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        self.received.append(got)
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), READ_WAIT * 4)
                if not data:
                    return
                got += data
                reading = reference.requests(bytes(got))
                if reading.error or (reading.messages and reading.messages[0].complete):
                    break
            head = reading.messages[0].method == b"HEAD" if reading.messages else False
            if self.reply is None:
                writer.write(UPSTREAM_HEAD if head else UPSTREAM_OK)
            else:
                writer.write(self.reply)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def forwarded(self) -> list[Forwarded]:
        """What the provider received, as h11 reads it; the injected credential checked, dropped."""
        out: list[Forwarded] = []
        for raw in self.received:
            for msg in reference.requests(bytes(raw)).messages:
                auth = [v for n, v in msg.headers if n == b"authorization"]
                headers = [(n, v) for n, v in msg.headers if n != b"authorization"]
                target = msg.target.decode("utf-8", "surrogateescape")
                fwd = Forwarded(msg.method.decode(), "/peer" + target, headers, msg.body)
                fwd.complete = msg.complete and auth == [KEY.encode()]
                out.append(fwd)
        return out


def _answered(methods: list[str], data: bytes) -> bool:
    got = reference.received(methods, data, closed=False)
    return len(got.answers) == len(methods) and all(a.complete for a in got.answers)


async def exchange(port: int, data: bytes, methods: list[str] | None) -> Run:
    """Send the app's bytes; read until the sidecar closes, goes quiet, or has answered
    ``methods`` (None: an error is expected, so the sidecar itself must end the connection)."""
    run = Run()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = bytearray()
    try:
        writer.write(data)
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), READ_WAIT)
            if not chunk:
                run.closed = True
                break
            out += chunk
            if methods is not None and _answered(methods, bytes(out)):
                break
    except TimeoutError:
        pass
    except ConnectionError:
        run.closed = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    run.app = bytes(out)
    return run
