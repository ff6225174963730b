"""Drive load at one target: wrk when installed, else a bundled asyncio generator.

Both run in a process of their own (wrk is one; the generator is ``python -m bench.load``) and
report the same shape: requests, errors, requests/s and latency percentiles in microseconds.
Every run is bounded twice, by its duration and by a request count, and stops by itself.

Intercepted HTTPS (a target with ``connect``) always uses the bundled generator, since wrk
cannot send CONNECT: each connection sends ``CONNECT <host>:443`` to the proxy, verifies the
sidecar's leaf against the CA file, then sends its requests in that tunnel, kept alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_REQUESTS = 5_000_000
_MARK = "BENCHJSON"


@dataclass(frozen=True)
class Target:
    """One request shape, sent again and again (the body is fixed: auth is the proxy's job)."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    connect: str = ""  # a host to CONNECT to through the proxy at ``url`` (intercepted HTTPS)
    ca_file: str = ""  # the CA that signs the sidecar's leaves, for ``connect``


def tool() -> str:
    """``BENCH_LOAD=python`` forces the bundled generator even where wrk is installed."""
    if os.environ.get("BENCH_LOAD") == "python":
        return "python"
    return "wrk" if shutil.which("wrk") else "python"


def warm(target: Target, concurrency: int, seconds: float, bundled: bool = False) -> None:
    """Open the connections and fill the pools (and token caches) before measuring."""
    if seconds >= 1 or (seconds > 0 and (tool() == "python" or bundled or target.connect)):
        measure(target, concurrency, seconds, bundled)
    elif seconds > 0:
        asyncio.run(_prime(target, concurrency))


def measure(
    target: Target, concurrency: int, seconds: float, bundled: bool = False
) -> dict[str, Any]:
    """Counts and latency percentiles (µs) of ``seconds`` of load at ``concurrency``.

    ``bundled`` forces the bundled generator (the one that can CONNECT) where wrk is installed.
    """
    if tool() == "wrk" and not (bundled or target.connect):
        return _wrk(target, concurrency, seconds)
    cmd = [sys.executable, "-m", "bench.load", json.dumps(asdict(target))]
    cmd += ["-c", str(concurrency), "-d", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    return _parse(out.stdout, out.stderr)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one target as one result: counts and time summed, percentiles and the
    generator's CPU share averaged weighted by requests and time (an approximation for the
    percentiles, which the rounds' samples are not kept for)."""
    if len(results) == 1:
        return results[0]
    n = sum(r["requests"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    merged: dict[str, Any] = {
        "requests": n,
        "seconds": seconds,
        "errors": sum(r["errors"] for r in results),
        "non2xx": sum(r["non2xx"] for r in results),
        "rps": n / seconds if seconds else 0.0,
    }
    for key in ("p50_us", "p99_us", "mean_us"):
        merged[key] = sum(r[key] * r["requests"] for r in results) / n if n else 0.0
    share = sum(r.get("load_cpu_share", 0.0) * r["seconds"] for r in results)
    merged["load_cpu_share"] = share / seconds if seconds else 0.0
    merged["rounds"] = len(results)
    return merged


def _lua(target: Target) -> str:
    """wrk's request shape and a done() that prints one machine-readable line."""
    lines = [f"wrk.method = [==[{target.method}]==]"]
    if target.body:
        lines.append(f"wrk.body = [==[{target.body}]==]")
    lines += [f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in target.headers.items()]
    lines.append(
        "done = function(s, lat, req)\n"
        "  local e = s.errors\n"
        f'  io.write(string.format("{_MARK} {{\\"requests\\": %d, \\"seconds\\": %f, '
        '\\"errors\\": %d, \\"non2xx\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, '
        '\\"mean_us\\": %f}\\n", s.requests, s.duration / 1e6, '
        "e.connect + e.read + e.write + e.timeout, e.status, lat:percentile(50), "
        "lat:percentile(99), lat.mean))\n"
        "end"
    )
    return "\n".join(lines) + "\n"


def _wrk(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(target))
    # wrk takes whole seconds only.
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(round(seconds), 1)}s", "--timeout", "5s"]
    cmd += ["-s", script.name, target.url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        Path(script.name).unlink(missing_ok=True)
    return _parse(out.stdout, out.stderr)


def _parse(stdout: str, stderr: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            result: dict[str, Any] = json.loads(line[len(_MARK) :])
            result["rps"] = result["requests"] / result["seconds"] if result["seconds"] else 0.0
            return result
    raise RuntimeError(f"load generator gave no result: {stderr.strip()[-400:]}")


# -- the bundled generator ---------------------------------------------------------------------


def _request_bytes(target: Target) -> tuple[str, int, bytes]:
    """(host, port, the whole HTTP/1.1 request), encoded once: the loop only writes it."""
    from yarl import URL

    url = URL(target.url)
    body = target.body.encode()
    host = target.connect or f"{url.raw_host}:{url.port}"
    head = [f"{target.method} {url.raw_path_qs} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in target.headers.items()]
    if body or target.method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    return url.raw_host or "127.0.0.1", url.port or 80, raw


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at >= 0:
        await reader.readexactly(int(lower[at + 15 : lower.index(b"\r\n", at)]))
    elif b"chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _open(
    host: str, port: int, tls: tuple[str, ssl.SSLContext] | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the target; with ``tls``, a verified tunnel through CONNECT."""
    reader, writer = await asyncio.open_connection(host, port)
    if tls is not None:
        name, ctx = tls
        writer.write(f"CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            writer.close()
            raise ConnectionError(head[:40].decode("latin-1"))
        await writer.start_tls(ctx, server_hostname=name)
    return reader, writer


async def _worker(
    where: tuple[str, int, bytes],
    until: float,
    lat: list[float],
    tls: tuple[str, ssl.SSLContext] | None = None,
) -> list[int]:
    """One keep-alive connection's loop; returns [errors, non-2xx]."""
    host, port, raw = where
    counts = [0, 0]
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < until and len(lat) < MAX_REQUESTS:
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await _open(host, port, tls)
            writer.write(raw)
            status = await asyncio.wait_for(_read_response(reader), 5)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, ssl.SSLError):
            counts[0] += 1
            if writer is not None:
                writer.close()
            writer = None
            continue
        counts[1] += not 200 <= status < 300
        lat.append(time.perf_counter() - started)
    if writer is not None:
        writer.close()
    return counts


async def _prime(target: Target, concurrency: int, rounds: int = 3) -> None:
    """A warm-up shorter than wrk's one second: open the connections, fetch tokens."""
    import aiohttp

    body = target.body.encode() or None
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            await asyncio.gather(
                *(_once(session, target, body) for _ in range(concurrency)),
                return_exceptions=True,
            )


async def _once(session: Any, target: Target, body: bytes | None) -> None:
    async with session.request(target.method, target.url, headers=target.headers, data=body) as r:
        await r.read()


async def _run(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    where = _request_bytes(target)
    tls = None
    if target.connect:
        tls = (target.connect, ssl.create_default_context(cafile=target.ca_file))
    lat: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    until = started + seconds
    counts = await asyncio.gather(*(_worker(where, until, lat, tls) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    lat.sort()
    n = len(lat)
    return {
        "requests": n,
        "seconds": elapsed,
        "errors": sum(c[0] for c in counts),
        "non2xx": sum(c[1] for c in counts),
        "p50_us": lat[n // 2] * 1e6 if n else 0.0,
        "p99_us": lat[min(n - 1, int(n * 0.99))] * 1e6 if n else 0.0,
        "mean_us": sum(lat) / n * 1e6 if n else 0.0,
        "load_cpu_share": cpu / elapsed if elapsed else 0.0,  # 1.0: the generator was the limit
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="bundled load generator (used without wrk)")
    parser.add_argument("target", help="JSON of a Target")
    parser.add_argument("-c", type=int, default=1)
    parser.add_argument("-d", type=float, default=5.0)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(_run(Target(**json.loads(args.target)), args.c, args.d))
    print(_MARK, json.dumps(result))


if __name__ == "__main__":
    main()
