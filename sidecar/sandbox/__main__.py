"""``python -m sidecar.sandbox``: run the demo sandbox peers until Ctrl-C.

Prints one JSON document (base URLs, ports and the demo credentials, all sandbox-only fakes)
so a user or a script can wire an app or a sidecar to them without reading code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Sequence

from sidecar.sandbox.demo import demo_credentials, demo_specs
from sidecar.sandbox.server import start_sandboxes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sidecar.sandbox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    p.add_argument(
        "--port-base",
        type=int,
        default=9101,
        help="first port, as in config/dev.yaml (default 9101); 0 picks free ports",
    )
    return p.parse_args(argv)


async def serve(host: str, port_base: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await start_sandboxes(demo_specs(port_base), host) as sandboxes:
        summary = {"sandboxes": sandboxes.describe(), "credentials": demo_credentials()}
        print(json.dumps(summary, indent=2), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    asyncio.run(serve(args.host, args.port_base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
