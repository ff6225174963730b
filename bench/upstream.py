"""The local upstream: answers 200 at once and accepts any auth without checking it.

It must be the cheapest party in the run, so that what the benchmark sees is the proxy's cost:
the low-level aiohttp server (no router, no middlewares), fixed response bodies, uvloop. The
token path answers like an OAuth2 token endpoint so the ``oauth2_client_credentials`` scheme
can fetch (and cache) a token; everything else answers a small JSON ``OK``.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

TOKEN_PATH = "/oauth/token"
TOKEN = b'{"access_token":"bench-token","token_type":"Bearer","expires_in":86400}'
OK = b'{"status":{"status":"OK","reason":"00","message":"ok"},"requestId":1}'


async def handle(request: web.BaseRequest) -> web.Response:
    if request.body_exists:
        await request.read()
    body = TOKEN if request.path == TOKEN_PATH else OK
    return web.Response(body=body, content_type="application/json")


async def serve(port: int) -> None:
    server = web.Server(handle, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
