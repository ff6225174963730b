"""The baseline: the smallest forwarder that computes the same auth as the sidecar.

What a team would write in an afternoon with aiohttp's defaults: ``web.run_app`` (so the
stock asyncio loop unless ``--uvloop``), one pooled ``ClientSession``, the whole body read,
auth computed from secrets held in memory, the whole answer read and sent back. No Vault, no
config validation, no metrics, no refusals, no streaming. Path mode only: ``/<name>/<path>``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.serialization import load_pem_private_key

HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
Signer = Callable[[str, str, dict[str, str], bytes], Awaitable[bytes]]
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


def placetopay(spec: dict[str, Any]) -> Signer:
    """auth {login, tranKey, nonce, seed} into the JSON body; tranKey = b64(sha256(n+seed+key))."""
    login, key = spec["fields"]["login"], spec["fields"]["secret_key"].encode()

    async def sign(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        raw_nonce = secrets.token_bytes(16)
        seed = datetime.now().astimezone().isoformat(timespec="seconds")
        tran_key = base64.b64encode(hashlib.sha256(raw_nonce + seed.encode() + key).digest())
        data = json.loads(body or b"{}")
        data["auth"] = {
            "login": login,
            "tranKey": tran_key.decode(),
            "nonce": base64.b64encode(raw_nonce).decode(),
            "seed": seed,
        }
        return json.dumps(data).encode()

    return sign


def oauth2(spec: dict[str, Any], session: Callable[[], aiohttp.ClientSession]) -> Signer:
    """Bearer token fetched once from the token URL and reused (no expiry handling needed)."""
    token: list[str] = []

    async def sign(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if not token:
            form = {k: spec["fields"][k] for k in ("client_id", "client_secret")}
            form["grant_type"] = "client_credentials"
            async with session().post(spec["url"] + spec["token_path"], data=form) as resp:
                token.append((await resp.json())["access_token"])
        headers["Authorization"] = f"Bearer {token[0]}"
        return body

    return sign


def hmac_sha256(spec: dict[str, Any]) -> Signer:
    """hex(HMAC-SHA256(key, "{timestamp}\\n{method}\\n{path}\\n{body_sha256}"))."""
    key = spec["fields"]["hmac_key"].encode()

    async def sign(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        stamp = str(int(time.time()))
        canonical = f"{stamp}\n{method}\n{path}\n{hashlib.sha256(body).hexdigest()}"
        headers["X-Timestamp"] = stamp
        headers["X-Signature"] = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
        return body

    return sign


def api_key(spec: dict[str, Any]) -> Signer:
    value = spec["fields"]["api_key"]

    async def sign(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        headers["Authorization"] = value
        return body

    return sign


def jws(spec: dict[str, Any]) -> Signer:
    """PayNet DuitNow-style RS256 JWT: exp, iss, sub, jti, key and the JSON body under data."""
    fields = spec["fields"]
    key = load_pem_private_key(fields["private_key"].encode(), password=None)

    async def sign(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        claims: dict[str, Any] = {
            "exp": int(time.time()) + 300,
            "iss": fields["issuer"],
            "sub": fields["subject"],
            "jti": str(uuid.uuid4()),
            "key": fields["key_id"],
        }
        if body:
            claims["data"] = json.loads(body)
        headers["Authorization"] = "Bearer " + jwt.encode(claims, key, algorithm="RS256")
        return body

    return sign


def build(specs: dict[str, dict[str, Any]]) -> web.Application:
    app = web.Application()
    signers: dict[str, tuple[str, Signer]] = {}
    for name, spec in specs.items():
        scheme = spec["scheme"]
        if scheme == "oauth2_client_credentials":
            signer = oauth2(spec, lambda: app[SESSION])
        else:
            signers_by_name = {
                "placetopay": placetopay,
                "hmac": hmac_sha256,
                "api_key": api_key,
                "jws": jws,
            }
            signer = signers_by_name[scheme](spec)
        signers[name] = (spec["url"], signer)

    async def handle(request: web.Request) -> web.Response:
        name, _, rest = request.raw_path[1:].partition("/")
        base, sign = signers[name]
        path = "/" + rest.partition("?")[0]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await sign(request.method, path, headers, await request.read())
        async with app[SESSION].request(
            request.method, base + "/" + rest, headers=headers, data=body
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
            return web.Response(status=resp.status, body=payload, headers=out)

    async def session_ctx(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="same loop as the sidecar")
    args = parser.parse_args()
    specs = json.loads(os.environ["BENCH_FORWARDER_SPECS"])  # bench values, not on argv
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    app = build(specs)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
