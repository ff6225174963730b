"""``oauth2_client_credentials``: a cached Bearer token from the client-credentials grant.

PayNet (seed 004), Kopokopo and Pismo issue tokens this way. The token is fetched under a
per-credential ``asyncio.Lock``; after taking the lock the cache is read again, and a 401
refreshes only if the cached token is still the one that failed (authlib's pattern), so a
thousand concurrent requests or 401s make one token request.

Refresh happens in the background once ``refresh_at`` (default half) of the lifetime has passed,
while requests keep using the current token: an IdP outage is tolerated for the rest of the
token's life (Envoy's injector sent expired tokens instead, envoyproxy/envoy#44674). A token is
sent until ``expiry_margin`` (at most a tenth of its life) before it expires, and while
refreshes fail, to its very end: there is no better token to send. Only with no usable token
does a request wait for a fetch.

A failing token endpoint is SC4008 without its body (a body may echo the secret) and starts an
exponential backoff per credential with jitter (50-100 % of the step, so replicas spread out):
until it ends, no fetch is made, so an outage is not turned into a request storm. One success
resets it. The token request has its own timeout (``token_timeout``), so a hanging endpoint
holds a request for seconds, not the upstream's timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote_plus

import aiohttp
from pydantic import Field, field_validator, model_validator
from yarl import URL

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    SchemeOptions,
    UpstreamContext,
)

_RESERVED = frozenset({"grant_type", "client_id", "client_secret"})
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_TOKEN_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*[A-Za-z0-9._~-]/?")
_REJECTED_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
Failure = Literal["rejected", "unreachable", "failed"]


class OAuth2Options(SchemeOptions):
    token_url: str = Field(
        description="token endpoint: an absolute http(s) URL or a path relative to the upstream"
    )
    client_auth: Literal["body", "basic"] = Field(
        "body", description="client_id/client_secret in the form body, or HTTP Basic"
    )
    scopes: list[str] = Field(default_factory=list, description="sent space-joined as `scope`")
    token_params: dict[str, str] = Field(
        default_factory=dict, description="extra form parameters, e.g. audience"
    )
    expiry_margin: float = Field(
        5, ge=0, description="stop sending a token this long before it expires (<= 1/10 of life)"
    )
    refresh_at: float = Field(
        0.5, gt=0, lt=1, description="share of a token's lifetime after which it is refreshed"
    )
    token_timeout: float = Field(5.0, gt=0, description="seconds a token request may take")
    default_expires_in: float = Field(
        300, gt=0, description="token lifetime in seconds when the server omits expires_in"
    )
    backoff_initial: float = Field(1.0, gt=0, description="first backoff after a failure (s)")
    backoff_max: float = Field(
        2.0,
        gt=0,
        description="longest backoff after failures (s); short, so a token follows the IdP's "
        "return within ~2 s: single flight already makes it one request per credential",
    )

    token_path: str | None = Field(
        None,
        description="emulate the token endpoint at this path below the upstream for SDKs doing "
        "their own OAuth2: the app gets an opaque sidecar token, never the provider's "
        "(docs/sdk-oauth2.md)",
    )
    token_lifetime: int = Field(
        3600, gt=0, le=86400, description="seconds an opaque sidecar token lives (expires_in)"
    )
    token_extras: list[Literal["created_at", "scope"]] = Field(
        default_factory=list,
        description="provider fields added to the emulated answer: created_at (unix seconds, "
        "Kopokopo), scope (the configured scopes)",
    )
    token_max_live: int = Field(
        10000, gt=0, le=1_000_000, description="opaque tokens kept per upstream; oldest evicted"
    )
    token_max_per_key: int = Field(
        8,
        gt=0,
        le=1000,
        description="with require_proxy_key: opaque tokens one proxy key may hold; its oldest is "
        "evicted beyond, so a flooding key churns only its own (<= token_max_live; the default "
        "is clamped to it)",
    )
    token_max_body: int = Field(
        4096, gt=0, le=65536, description="largest token request body from the app, bytes"
    )

    @field_validator("token_path")
    @classmethod
    def _token_path(cls, v: str | None) -> str | None:
        if v is None:
            return v
        segments = v.split("/")
        if (
            not _TOKEN_PATH.fullmatch(v)
            or any(seg in (".", "..") for seg in segments)
            or "%" in v
            or "//" in v
        ):
            raise ValueError("must be a path such as /oauth/token: no query, dots or escapes")
        return v.rstrip("/")

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, v: str) -> str:
        if v.startswith(("http://", "https://")):
            if not URL(v).host:
                raise ValueError("must be an absolute https URL or a path")
        elif not v.strip("/") or "://" in v or v.startswith("//"):
            raise ValueError("must be an absolute https URL or a path")
        return v

    @field_validator("token_params")
    @classmethod
    def _token_params(cls, v: dict[str, str]) -> dict[str, str]:
        clash = sorted(_RESERVED & set(v))
        if clash:
            raise ValueError(f"{clash[0]} is set by the scheme and cannot be overridden")
        return v

    @model_validator(mode="after")
    def _per_key_fits(self) -> OAuth2Options:
        """An explicit per-key cap over the table's bound is a mistake; the default is clamped."""
        explicit = "token_max_per_key" in self.model_fields_set
        if explicit and self.token_max_per_key > self.token_max_live:
            raise ValueError("token_max_per_key must not exceed token_max_live")
        return self


def basic_authorization(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: id and secret are form-urlencoded *before* Base64, so ``:`` is safe.

    Built by hand because ``aiohttp.BasicAuth`` neither encodes them nor survives aiohttp 4.
    """
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


class TokenEndpointError(SidecarError):
    """SC4008 for the proxy; ``failure`` tells verify() whether the provider said no."""

    def __init__(self, upstream: str, detail: str, failure: Failure) -> None:
        super().__init__("SC4008", f"{upstream}: token endpoint failed ({detail})")
        self.detail = detail
        self.failure = failure


@dataclass(slots=True)
class _Slot:
    """Cache, lock and backoff of one credential version."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: str | None = None
    expires_at: float = 0.0  # stop sending here (the margin before the end) ...
    valid_until: float = 0.0  # ... unless refreshes are failing: then up to the very end
    refresh_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    background: asyncio.Task[None] | None = None


class OAuth2ClientCredentials(SchemeBase):
    name = "oauth2_client_credentials"
    Options = OAuth2Options
    verification = "token"  # verify() fetches a token: the token endpoint accepts the client

    def __init__(self, options: OAuth2Options, upstream: UpstreamContext) -> None:
        self.options = options
        self.upstream = upstream
        self.token_url = upstream.join(options.token_url)
        self.requires_request_body = False
        self.replays_request = True
        self.public_fields = ("client_id",)
        self.secret_fields = ("client_secret",)
        self.optional_fields = ()
        self.token_requests = 0
        self.token_failures = 0
        self.clock: Callable[[], float] = time.monotonic
        self.jitter: Callable[[float], float] = lambda step: random.uniform(step / 2, step)
        self._slots: dict[tuple[str, int], _Slot] = {}

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        token = await self.token(cred)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status != 401:
            return
        token = await self.token(cred, stale=token)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def counters(self) -> Mapping[str, int]:
        """Token fetches made and failed (``sidecar_token_fetches``)."""
        return {"token_requests": self.token_requests, "token_failures": self.token_failures}

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """A token request is the cheapest authenticated call; nothing is cached from it."""
        try:
            await self._fetch(cred, http)
        except TokenEndpointError as exc:
            if exc.failure == "rejected":
                raise VerificationFailed(f"{self.upstream.name} - API Invalid credential") from None
            raise SidecarError(
                "SC2006", f"{self.upstream.name}: token endpoint failed ({exc.detail})"
            ) from None

    async def token(self, cred: Credential, stale: str | None = None) -> str:
        """A live token other than ``stale``; at most one fetch per credential at a time."""
        slot = self._slot(cred)
        current = self._live(slot)
        if current is not None and current != stale:
            if self.clock() >= max(slot.refresh_at, slot.retry_at):
                self._refresh_in_background(slot, cred)
            return current
        async with slot.lock:
            current = self._live(slot)
            if current is not None and current != stale:
                return current
            return await self._refresh(slot, cred)

    def _slot(self, cred: Credential) -> _Slot:
        """This version's slot; older versions of the credential are forgotten."""
        key = (cred.name, cred.version)
        slot = self._slots.get(key)
        if slot is None:
            for old in [k for k in self._slots if k[0] == cred.name and k[1] < cred.version]:
                del self._slots[old]
            slot = self._slots[key] = _Slot()
        return slot

    def _refresh_in_background(self, slot: _Slot, cred: Credential) -> None:
        """One refresh task per slot; requests go on with the current token meanwhile."""
        if slot.background is None or slot.background.done():
            slot.background = asyncio.create_task(self._background(slot, cred))

    async def _background(self, slot: _Slot, cred: Credential) -> None:
        async with slot.lock:
            if self.clock() < max(slot.refresh_at, slot.retry_at):
                return  # a request refreshed it meanwhile
            with contextlib.suppress(SidecarError):  # backoff recorded; token still in use
                await self._refresh(slot, cred)

    def _live(self, slot: _Slot) -> str | None:
        """The token while usable; the margin is waived while the endpoint fails (no better one)."""
        end = slot.valid_until if slot.failures else slot.expires_at
        return slot.token if slot.token and self.clock() < end else None

    async def _refresh(self, slot: _Slot, cred: Credential) -> str:
        wait = slot.retry_at - self.clock()
        if wait > 0:
            raise SidecarError(
                "SC4008", f"{self.upstream.name}: token endpoint failed; next try in {wait:.1f}s"
            )
        try:
            token, lifetime = await self._fetch(cred, self.http)
        except TokenEndpointError:
            slot.failures += 1
            delay = self.options.backoff_initial * 2 ** (slot.failures - 1)
            slot.retry_at = self.clock() + self.jitter(min(delay, self.options.backoff_max))
            raise
        now = self.clock()
        slot.failures, slot.retry_at = 0, 0.0
        margin = min(self.options.expiry_margin, lifetime / 10)
        slot.token, slot.expires_at = token, now + lifetime - margin
        slot.valid_until = now + lifetime
        slot.refresh_at = now + lifetime * self.options.refresh_at
        return token

    def _form(self, cred: Credential) -> tuple[dict[str, str], dict[str, str]]:
        """The token request's form and headers, client authentication included."""
        opts = self.options
        form = {"grant_type": "client_credentials", **opts.token_params}
        if opts.scopes:
            form["scope"] = " ".join(opts.scopes)
        headers = {"Accept": "application/json"}
        client_id, secret = cred.value("client_id"), cred.value("client_secret")
        if opts.client_auth == "basic":
            headers["Authorization"] = basic_authorization(client_id, secret)
            return form, headers
        return {**form, "client_id": client_id, "client_secret": secret}, headers

    async def _fetch(self, cred: Credential, http: aiohttp.ClientSession) -> tuple[str, float]:
        """(access token, lifetime in seconds) or TokenEndpointError; never the body."""
        self.token_requests += 1
        form, headers = self._form(cred)
        name = self.upstream.name
        try:
            async with http.post(
                self.token_url,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.options.token_timeout),
            ) as resp:
                status, raw = resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.token_failures += 1
            raise TokenEndpointError(name, type(exc).__name__, "unreachable") from None
        try:
            return self._parse(status, raw)
        except TokenEndpointError:
            self.token_failures += 1
            raise

    def _parse(self, status: int, raw: bytes) -> tuple[str, float]:
        name = self.upstream.name
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        doc = payload if isinstance(payload, dict) else {}
        if status in (401, 403) or doc.get("error") in _REJECTED_ERRORS:
            raise TokenEndpointError(name, f"HTTP {status}, client rejected", "rejected")
        if not 200 <= status < 300:
            raise TokenEndpointError(name, f"HTTP {status}", "failed")
        token = doc.get("access_token")
        if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
            raise TokenEndpointError(name, f"HTTP {status}, no usable access_token", "failed")
        return token, self._lifetime(doc.get("expires_in"))

    def _lifetime(self, expires_in: object) -> float:
        """``expires_in`` as seconds; some servers send a string, some nothing at all."""
        try:
            seconds = float(expires_in) if isinstance(expires_in, int | float | str) else 0.0
        except ValueError:
            seconds = 0.0
        return seconds if 0 < seconds < float("inf") else self.options.default_expires_in
