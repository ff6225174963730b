"""Token-endpoint emulation for SDKs that do their own OAuth2 (``token_path``).

An SDK such as Kopokopo's ``k2-connect`` POSTs its client id and secret to ``/oauth/token`` and
sends ``Authorization: Bearer <token>`` on every later call. On an ``oauth2_client_credentials``
upstream with ``token_path`` the sidecar answers that request itself, in the provider's shape,
with an *opaque sidecar token*: random, in memory only, never the provider's. A later call
carrying it is checked here and the header removed; the scheme then injects the real Bearer it
holds. So the app holds neither the real secret nor the real token.

With ``require_proxy_key`` the token request *is* the app's authentication: ``client_id`` is a
proxy key id and ``client_secret`` the key, checked by the key index like any key. The opaque
token is bound to that key (and the key's KV version), so every call made with it is checked
against the key's permissions, and any change to the key (disable, delete, expiry) kills it at
the next use. Without ``require_proxy_key`` the client credentials are placeholders: anything is
accepted and nothing of them is logged. docs/sdk-oauth2.md is the user's side of this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus
from weakref import WeakKeyDictionary

from multidict import CIMultiDict
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar import audit
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.proxykeys import guard
from sidecar.proxykeys.index import key_id_of
from sidecar.proxykeys.permissions import decoded_path
from sidecar.proxykeys.signing import SIGNATURE, TIMESTAMP
from sidecar.runtime import Runtime
from sidecar.schemes.oauth2 import OAuth2Options
from sidecar.upstreams import Upstream

if TYPE_CHECKING:
    from sidecar.proxy.message import Incoming

log = get_logger("sidecar.proxy.tokens")

PREFIX = "sctok_"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_FIELDS = 16
INVALID_TOKEN = 'Bearer error="invalid_token"'
BASIC_CHALLENGE = 'Basic realm="sidecar"'
REASONS = ("expired", "per_key", "table_full")  # eviction metric label: a closed set


class LocalAnswer(Exception):
    """A 200 the sidecar gives itself (the emulated token answer); the listener frames it."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("local answer")
        self.status = 200
        self.body = json.dumps(body).encode()
        self.headers = [
            (b"Content-Type", b"application/json"),
            (b"Cache-Control", b"no-store"),
            (b"Pragma", b"no-cache"),
        ]


class OAuthError(SidecarError):
    """A sidecar error whose body is also an RFC 6749/6750 error, so SDKs read it as one."""

    def __init__(
        self, code: str, error: str, message: str | None = None, challenge: str = ""
    ) -> None:
        super().__init__(code, message)
        self.error = error
        if challenge:
            self.headers["WWW-Authenticate"] = challenge
        if code in ("SC4040", "SC4041", "SC5007"):
            self.headers["Cache-Control"] = "no-store"

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.message, **super().body()}


@dataclass(frozen=True, slots=True)
class Issued:
    """What an opaque token stands for: its expiry and the proxy key it is bound to, if any."""

    expires_at: float
    key_id: str | None = None
    key_version: int = 0


class TokenTable:
    """One upstream's live opaque tokens, keyed by their SHA-256 (the token itself is not kept).

    Every token of an upstream has the same lifetime, so issue order is expiry order: expired
    tokens are dropped from the front, and when ``limit`` live tokens exist the oldest is
    evicted (its SDK gets SC4043 and asks again). A token bound to a proxy key also counts
    against that key's ``per_key`` cap, enforced first: a key flooding token requests evicts
    its own oldest tokens, never another key's, and the table stays bounded either way.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tokens: OrderedDict[bytes, Issued] = OrderedDict()
        self.by_key: dict[str, OrderedDict[bytes, None]] = {}  # key id -> its digests, oldest first
        self.issued = 0
        self.evictions = dict.fromkeys(REASONS, 0)

    @property
    def evicted(self) -> int:
        """Live tokens evicted to make room (expired ones are dropped, not evicted)."""
        return self.evictions["per_key"] + self.evictions["table_full"]

    def issue(
        self, lifetime: float, limit: int, key: tuple[str, int] | None, per_key: int = 0
    ) -> str:
        if key:
            self._cap(key[0], min(per_key or limit, limit) - 1)
        self._prune(limit - 1)
        token = PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        expires = self.clock() + lifetime
        self.tokens[digest] = Issued(expires, *key) if key else Issued(expires)
        if key:
            self.by_key.setdefault(key[0], OrderedDict())[digest] = None
        self.issued += 1
        return token

    def lookup(self, token: str) -> Issued | None:
        digest = _digest(token)
        issued = self.tokens.get(digest)
        if issued is not None and self.clock() >= issued.expires_at:
            self._drop(digest, "expired")
            return None
        return issued

    def forget(self, token: str) -> None:
        digest = _digest(token)
        if digest in self.tokens:
            self._drop(digest, None)  # refused (its key changed): not an eviction

    def live(self) -> int:
        """Tokens not yet expired: the expired ones are at the front, in issue order."""
        now = self.clock()
        stale = 0
        for issued in self.tokens.values():
            if issued.expires_at > now:
                break
            stale += 1
        return len(self.tokens) - stale

    def held_by(self, key_id: str) -> int:
        return len(self.by_key.get(key_id, ()))

    def _cap(self, key_id: str, room: int) -> None:
        """Drop the key's oldest tokens until at most ``room`` remain; other keys keep theirs."""
        mine = self.by_key.get(key_id)
        now = self.clock()
        while mine and len(mine) > room:
            digest = next(iter(mine))
            self._drop(digest, "per_key" if self.tokens[digest].expires_at > now else "expired")

    def _prune(self, room: int) -> None:
        """Drop expired tokens, then the oldest live ones, until at most ``room`` remain."""
        now = self.clock()
        while self.tokens:
            digest, issued = next(iter(self.tokens.items()))
            if issued.expires_at > now and len(self.tokens) <= room:
                return
            self._drop(digest, "table_full" if issued.expires_at > now else "expired")

    def _drop(self, digest: bytes, reason: str | None) -> None:
        """Remove a token from the table and from its key's list, counting why."""
        issued = self.tokens.pop(digest)
        if reason is not None:
            self.evictions[reason] += 1
        if issued.key_id is None:
            return
        mine = self.by_key[issued.key_id]
        del mine[digest]
        if not mine:
            del self.by_key[issued.key_id]


_TABLES: WeakKeyDictionary[Runtime, dict[str, TokenTable]] = WeakKeyDictionary()


def table(rt: Runtime, upstream: str) -> TokenTable:
    """The runtime's table for ``upstream``: a new runtime (a restart) starts empty."""
    tables = _TABLES.get(rt)
    if tables is None:
        tables = _TABLES[rt] = {}
        rt.metrics.registry.register(_TableCollector(rt, tables))
    found = tables.get(upstream)
    if found is None:
        found = tables[upstream] = TokenTable()
    return found


class _TableCollector(Collector):
    """``/metrics`` for the runtime's token tables, read at scrape time like the runtime's own
    counters. Labels are the upstream name (from config) and a fixed reason: never a key id or
    a token."""

    def __init__(self, rt: Runtime, tables: dict[str, TokenTable]) -> None:
        self.rt = rt
        self.tables = tables

    def collect(self) -> Iterator[Metric]:
        live = GaugeMetricFamily(
            "sidecar_emulated_tokens",
            "Live opaque sidecar tokens, by upstream",
            labels=["upstream"],
        )
        evictions = CounterMetricFamily(
            "sidecar_emulated_token_evictions",
            "Opaque tokens dropped from the table, by upstream and reason",
            labels=["upstream", "reason"],
        )
        for name in sorted(self.rt.upstreams):
            found = self.tables.get(name)
            if found is None and emulation(self.rt.upstreams[name]) is None:
                continue
            found = found or TokenTable()
            live.add_metric([name], float(found.live()))
            for reason in REASONS:
                evictions.add_metric([name, reason], found.evictions[reason])
        yield live
        yield evictions


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def emulation(upstream: Upstream) -> OAuth2Options | None:
    """The oauth2 options of an upstream that emulates its token endpoint, else None."""
    for _, options in upstream.specs:
        if isinstance(options, OAuth2Options) and options.token_path:
            return options
    return None


async def admit(
    rt: Runtime, upstream: Upstream, request: Incoming, headers: CIMultiDict[str], raw_path: str
) -> guard.Grant:
    """The proxy-key gate, preceded on emulating upstreams by the token endpoint and check.

    A token request raises :class:`LocalAnswer` (or an :class:`OAuthError`); a call with an
    opaque Bearer gets that token's grant; any other call goes to the proxy-key gate as before.
    """
    opts = emulation(upstream)
    if opts is None or opts.token_path is None:
        return await guard.admit(rt, upstream, request, headers, raw_path)
    path = decoded_path(raw_path)
    if path.rstrip("/") == opts.token_path:
        audit.routed(request, upstream.name, upstream.cfg.credential, raw_path)
        raise await token_answer(rt, upstream, opts, request)
    if loose(path) == loose(opts.token_path):
        audit.routed(request, upstream.name, upstream.cfg.credential, raw_path)
        raise OAuthError("SC4044", "invalid_request", f"Send token requests to {opts.token_path}")
    token = opaque_bearer(upstream, request)
    if token is None:
        return await guard.admit(rt, upstream, request, headers, raw_path)
    return bound_grant(rt, upstream, request, headers, raw_path, token)


def loose(path: str) -> str:
    """A path as the most lenient router reads it: case folded, slashes squeezed, ``;params``
    and a ``.format`` suffix dropped (Rails routes ``/oauth/token.json`` and ``//oauth/token``
    to the token endpoint; servlet containers drop ``;jsessionid=...``). A spelling of the token
    path that is not the token path is refused (SC4044), never forwarded: it would carry the
    app's client credentials (placeholders the sidecar may turn into the real ones) to the
    provider's real token endpoint, and relay a real token back."""
    segments = [seg.partition(";")[0] for seg in path.lower().split("/") if seg]
    if segments:
        segments[-1] = segments[-1].partition(".")[0]
    return "/".join(segments)


def opaque_bearer(upstream: Upstream, request: Incoming) -> str | None:
    """The Bearer token to check, or None for a call without one (left to the key gate).

    Any Bearer on an emulating upstream must be an opaque token of ours, except a proxy key
    sent in ``Authorization`` when that is the upstream's ``proxy_key_header``.
    """
    values = request.headers.getall("Authorization", [])
    if len(values) > 1:
        raise OAuthError("SC4043", "invalid_token", "Send one Authorization header", INVALID_TOKEN)
    kind, _, rest = values[0].strip().partition(" ") if values else ("", "", "")
    token = rest.strip()
    if kind.lower() != "bearer":
        return None
    cfg = upstream.cfg
    key_header = cfg.require_proxy_key and cfg.proxy_key_header.lower() == "authorization"
    return None if key_header and not token.startswith(PREFIX) else token


def bound_grant(
    rt: Runtime,
    upstream: Upstream,
    request: Incoming,
    headers: CIMultiDict[str],
    raw_path: str,
    token: str,
) -> guard.Grant:
    """SC4043 for an unknown or expired token, SC5008 when its key changed; else its grant."""
    cfg = upstream.cfg
    audit.routed(request, upstream.name, cfg.credential, raw_path)
    for name in ("Authorization", cfg.proxy_key_header, TIMESTAMP, SIGNATURE):
        headers.popall(name, None)  # the scheme sets the real Bearer; the rest is ours
    tokens = table(rt, upstream.name)
    issued = tokens.lookup(token)
    if issued is None or (cfg.require_proxy_key and issued.key_id is None):
        raise OAuthError("SC4043", "invalid_token", challenge=INVALID_TOKEN)
    if issued.key_id is None:
        return guard.OPEN
    entry = rt.keys.index(cfg.credential).live(issued.key_id, issued.key_version)
    if entry is None:
        tokens.forget(token)  # dead for good, even if the key is enabled again
        raise OAuthError("SC5008", "invalid_token", challenge=INVALID_TOKEN)
    return guard.grant_for(rt, request, entry, raw_path)


async def token_answer(
    rt: Runtime, upstream: Upstream, opts: OAuth2Options, request: Incoming
) -> LocalAnswer:
    """Read and check the token request, authenticate the client, issue an opaque token."""
    if request.method != "POST":
        err = OAuthError("SC4042", "invalid_request")
        err.headers["Allow"] = "POST"
        raise err
    body = await request.read_whole(opts.token_max_body, OAuthError("SC4041", "invalid_request"))
    form = parse_form(request.headers.get("Content-Type", ""), body)
    client_id, secret = client_credentials(request, form)
    key = await authenticate(rt, upstream, client_id, secret)
    limit, per_key = opts.token_max_live, opts.token_max_per_key
    token = table(rt, upstream.name).issue(opts.token_lifetime, limit, key, per_key)
    if key:
        audit.keyed(request, key[0])
    log.info("token_issued", upstream=upstream.name, key_id=key[0] if key else None)
    answer: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": opts.token_lifetime,
    }
    if "created_at" in opts.token_extras:
        answer["created_at"] = int(time.time())
    if "scope" in opts.token_extras:
        answer["scope"] = " ".join(opts.scopes)
    return LocalAnswer(answer)


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """A urlencoded form or a JSON object of strings, with ``grant_type=client_credentials``."""
    mime = content_type.partition(";")[0].strip().lower()
    if mime == FORM:
        form = _urlencoded(body)
    elif mime == JSON:
        form = _json(body)
    else:
        raise OAuthError("SC4040", "invalid_request", f"Content-Type must be {FORM} or {JSON}")
    grant = form.get("grant_type")
    if grant != "client_credentials":
        error = "invalid_request" if grant is None else "unsupported_grant_type"
        raise OAuthError("SC4040", error, "grant_type must be client_credentials")
    return form


def _urlencoded(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:  # UnicodeDecodeError included; too many fields
        raise OAuthError("SC4040", "invalid_request", "Malformed form body") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise OAuthError("SC4040", "invalid_request", "A form parameter is repeated")
    return form


def _json(body: bytes) -> dict[str, str]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise OAuthError("SC4040", "invalid_request", "Malformed JSON body") from None
    if (
        not isinstance(doc, dict)
        or len(doc) > MAX_FIELDS
        or not all(isinstance(v, str) for v in doc.values())
    ):
        raise OAuthError("SC4040", "invalid_request", "The JSON body must be an object of strings")
    return doc


def client_credentials(request: Incoming, form: dict[str, str]) -> tuple[str, str]:
    """(client_id, client_secret) from HTTP Basic or the body, one of the two."""
    values = request.headers.getall("Authorization", [])
    basic = bool(values) and values[0][:6].lower() == "basic "
    if len(values) > 1 or (basic and "client_secret" in form):
        raise OAuthError("SC4040", "invalid_request", "Send client credentials once")
    if not basic:
        return form.get("client_id", ""), form.get("client_secret", "")
    try:
        decoded = base64.b64decode(values[0][6:].strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        raise OAuthError("SC5007", "invalid_client", challenge=BASIC_CHALLENGE) from None
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate(
    rt: Runtime, upstream: Upstream, client_id: str, secret: str
) -> tuple[str, int] | None:
    """Without ``require_proxy_key``: None (placeholders). With it: the key's (id, version)."""
    if not upstream.cfg.require_proxy_key:
        return None
    refused = OAuthError("SC5007", "invalid_client", challenge=BASIC_CHALLENGE)
    if not client_id or key_id_of(secret) != client_id:
        raise refused
    try:
        entry = await rt.keys.authenticate(upstream.cfg.credential, secret)
    except SidecarError as err:
        if err.code != "SC5002":
            raise  # Vault unreachable on a first sight: not the client's fault
        raise refused from None
    return entry.key_id, entry.version
