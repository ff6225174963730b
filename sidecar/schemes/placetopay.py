"""``placetopay``: the ``auth`` object PlaceToPay wants inside every JSON body (seed 002).

``auth = {login, tranKey, nonce, seed}`` with ``tranKey = Base64(H(rawNonce + seed +
secretKey))`` over bytes, ``nonce = Base64(rawNonce)`` and ``seed`` the current time in ISO 8601
with its offset. ``H`` is SHA-256 in the current docs and SHA-1 in older SDKs, so it is an
option. The docs' PHP example takes ``rand()`` as the nonce; we take 16 bytes of
``os.urandom`` per request, because a guessable nonce is what WS-Security's nonce is there to
prevent. The raw bytes are hashed; only their Base64 travels.

PlaceToPay has no "who am I" call, so ``verify()`` queries a session id that cannot exist: a
401 carrying an auth code (100-107) is a "no", a 404 means the auth itself was accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from typing import Any, Literal

import aiohttp
from multidict import CIMultiDict
from pydantic import Field

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    SchemeOptions,
    UpstreamContext,
    now,
)
from sidecar.schemes.probe import send_flow

HashName = Literal["sha256", "sha1"]
_AUTH_CODE = re.compile(r"\b(10[0-7])\s*$")


class PlaceToPayOptions(SchemeOptions):
    hash: HashName = Field(
        "sha256", description="tranKey digest: sha256 (current docs) or sha1 (older SDKs)"
    )
    verify_path: str = Field(
        "api/session/0",
        description="POSTed by verify(): a session id that cannot exist, so a 404 means valid",
    )


def tran_key(raw_nonce: bytes, seed: str, secret_key: str, hash: str) -> str:
    """Base64(H(rawNonce + seed + secretKey)), hashed as bytes, as PlaceToPay documents it."""
    digest = hashlib.new(hash, raw_nonce + seed.encode() + secret_key.encode()).digest()
    return base64.b64encode(digest).decode("ascii")


def make_auth(
    login: str,
    secret_key: str,
    hash: str,
    raw_nonce: bytes | None = None,
    seed: str | None = None,
) -> dict[str, str]:
    """The ``auth`` object; nonce and seed are fresh unless given (tests pass the vectors)."""
    raw = os.urandom(16) if raw_nonce is None else raw_nonce
    stamp = current_seed() if seed is None else seed
    return {
        "login": login,
        "tranKey": tran_key(raw, stamp, secret_key, hash),
        "nonce": base64.b64encode(raw).decode("ascii"),
        "seed": stamp,
    }


_SEED: tuple[int, str] = (0, "")


def current_seed() -> str:
    """Now as ISO 8601 with offset, to the second (PlaceToPay's ``seed``).

    Formatted once per second: the text cannot change within a second, and rendering a
    time-zone-aware datetime costs more than the rest of the tranKey.
    """
    global _SEED
    second = int(time.time())
    if _SEED[0] != second:
        _SEED = (second, now().isoformat(timespec="seconds"))
    return _SEED[1]


def auth_code(body: bytes) -> int | None:
    """The code at the end of PlaceToPay's ``status.message`` ("Authentication failed 102")."""
    try:
        message = json.loads(body)["status"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    match = _AUTH_CODE.search(message) if isinstance(message, str) else None
    return int(match.group(1)) if match else None


class PlaceToPay(SchemeBase):
    name = "placetopay"
    Options = PlaceToPayOptions
    verification = "probe"  # verify() asks the provider with the credential (a signed call)

    def __init__(self, options: PlaceToPayOptions, upstream: UpstreamContext) -> None:
        self.options = options
        self.upstream = upstream
        self.requires_request_body = True
        self.replays_request = False
        self.public_fields = ("login",)
        self.secret_fields = ("secret_key",)
        self.optional_fields = ()

    def _json_object(self, body: bytes | None) -> dict[str, Any]:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise SidecarError(
                "SC4009", f"{self.upstream.name}: the request body must be a JSON object"
            )
        return parsed

    def sign_body(self, body: bytes | None, cred: Credential) -> bytes:
        """The body with a fresh ``auth`` first; an ``auth`` the app sent is replaced."""
        parsed = self._json_object(body)
        auth = make_auth(cred.value("login"), cred.value("secret_key"), self.options.hash)
        signed = {"auth": auth, **{k: v for k, v in parsed.items() if k != "auth"}}
        return json.dumps(signed, separators=(",", ":"), ensure_ascii=False).encode()

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        request.body = self.sign_body(request.body, cred)
        request.headers["Content-Type"] = "application/json"
        request.headers.popall("Content-Length", None)
        yield request

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Ask for a session that cannot exist; only an auth failure code is a "no"."""
        url = self.upstream.join(self.options.verify_path)
        request = OutboundRequest("POST", url, CIMultiDict(), b"{}")
        try:
            status, body = await send_flow(
                self.auth_flow(request, cred), http, self.upstream.timeout
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SidecarError(
                "SC2006", f"{self.upstream.name}: provider unreachable ({type(exc).__name__})"
            ) from None
        if status == 401 and auth_code(body) is not None:
            raise VerificationFailed(f"{self.upstream.name} - API Invalid credential")
        if status >= 500:
            raise SidecarError("SC2006", f"{self.upstream.name}: provider answered HTTP {status}")
