"""A peer that verifies HMAC request signatures built from a configurable template.

An independent implementation of the canonical string (nothing from ``sidecar.schemes``), so a
sidecar that signs the decoded path, the parsed query or the wrong body is caught here. The
template uses ``str.format`` syntax with these placeholders:

``{timestamp}`` the timestamp header exactly as sent (unix seconds, decimal digits);
``{method}`` upper case; ``{path}`` the raw, still percent-encoded path; ``{query}`` the raw
query string without ``?``; ``{body_sha256}`` lower-case hex SHA-256 of the body bytes (of
``b""`` when there is none); ``{nonce}`` the ``nonce_header`` value.

Checks, in order, each a 401 with ``{"error": ...}``: ``invalid_api_key`` (a
``require_api_key`` header differs; this is how one peer emulates an Azupay HMAC-enabled key,
which needs the API key *and* a signature), ``unknown_key`` (``key_id_header`` missing or
unknown), ``stale_timestamp`` (missing, not digits, or more than ``tolerance_seconds`` away
in either direction), ``missing_nonce``, ``invalid_signature`` (absent, not in
``signature_format``, or wrong; compared in constant time, hex must be lower case),
``replayed_nonce`` (checked after the signature, so nobody can burn a nonce they cannot sign).
Without ``key_id_header`` every configured key is tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidecar.sandbox.recording import PeerState, Refused, recorder, refusal, split_target

PLACEHOLDERS = frozenset({"timestamp", "method", "path", "query", "body_sha256", "nonce"})
DIGITS = re.compile(r"[0-9]{1,12}")


def template_fields(template: str) -> set[str]:
    """Placeholder names in ``template``; format specs and conversions are refused."""
    names = set()
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or name not in PLACEHOLDERS:
            raise ValueError(f"template: unsupported placeholder {{{name}}}")
        names.add(name)
    return names


class HmacPeerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: dict[str, str] = Field(default_factory=dict)
    secret: str | None = None
    template: str = "{timestamp}"
    algorithm: Literal["sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    signature_header: str = "X-Signature"
    signature_format: str = "{signature}"
    timestamp_header: str = "X-Timestamp"
    nonce_header: str | None = None
    key_id_header: str | None = None
    tolerance_seconds: float = Field(default=300, gt=0)
    require_api_key: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> HmacPeerConfig:
        if not self.keys and self.secret is None:
            raise ValueError("give keys or secret")
        if self.key_id_header and not self.keys:
            raise ValueError("key_id_header needs keys")
        if "nonce" in template_fields(self.template) and not self.nonce_header:
            raise ValueError("template uses {nonce} but nonce_header is not set")
        if self.signature_format.count("{signature}") != 1:
            raise ValueError("signature_format must contain {signature} exactly once")
        return self


def paynet_reports(client_secret: str, **overrides: Any) -> HmacPeerConfig:
    """PayNet reports API: X-Timestamp unix seconds, X-Signature hex HMAC-SHA256 of it."""
    settings: dict[str, Any] = {
        "secret": client_secret,
        "template": "{timestamp}",
        "algorithm": "sha256",
        "encoding": "hex",
        "signature_header": "X-Signature",
        "timestamp_header": "X-Timestamp",
    }
    return HmacPeerConfig(**{**settings, **overrides})


PRESETS = {"paynet_reports": paynet_reports}


def expected_signature(secret: str, message: str, algorithm: str, encoding: str) -> str:
    """HMAC of ``message`` keyed by ``secret``, as lower-case hex or standard Base64."""
    digest = hmac.new(secret.encode(), message.encode(), algorithm).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")


@dataclass(kw_only=True)
class HmacState(PeerState):
    """Inspectable state: ``errors`` counts refusals by their ``error`` string."""

    config: HmacPeerConfig
    errors: Counter[str] = field(default_factory=Counter)
    nonces: dict[tuple[str, str], float] = field(default_factory=dict)


HMAC_STATE = web.AppKey("hmac_state", HmacState)


def check_api_keys(request: web.Request, cfg: HmacPeerConfig) -> None:
    for name, expected in cfg.require_api_key.items():
        sent = request.headers.get(name, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Refused("invalid_api_key")


def candidate_keys(request: web.Request, cfg: HmacPeerConfig) -> dict[str, str]:
    """key id -> secret for the keys the signature may be made with ("" for ``secret``)."""
    if cfg.key_id_header:
        key_id = request.headers.get(cfg.key_id_header, "")
        if key_id not in cfg.keys:
            raise Refused("unknown_key")
        return {key_id: cfg.keys[key_id]}
    keys = dict(cfg.keys)
    if cfg.secret is not None:
        keys[""] = cfg.secret
    return keys


def check_timestamp(request: web.Request, cfg: HmacPeerConfig) -> str:
    raw = request.headers.get(cfg.timestamp_header, "")
    if not DIGITS.fullmatch(raw) or abs(time.time() - int(raw)) > cfg.tolerance_seconds:
        raise Refused("stale_timestamp")
    return raw


def signed_value(request: web.Request, cfg: HmacPeerConfig) -> str:
    """The signature from its header, with ``signature_format``'s fixed text stripped."""
    prefix, suffix = cfg.signature_format.split("{signature}")
    sent = request.headers.get(cfg.signature_header, "")
    if not (sent.startswith(prefix) and sent.endswith(suffix)):
        raise Refused("invalid_signature")
    value = sent[len(prefix) : len(sent) - len(suffix)]
    if not value:
        raise Refused("invalid_signature")
    return value


async def canonical(request: web.Request, timestamp: str, nonce: str) -> dict[str, str]:
    path, query = split_target(request.raw_path)
    return {
        "timestamp": timestamp,
        "method": request.method.upper(),
        "path": path,
        "query": query,
        "body_sha256": hashlib.sha256(await request.read()).hexdigest(),
        "nonce": nonce,
    }


def matching_key(keys: dict[str, str], message: str, sent: str, cfg: HmacPeerConfig) -> str:
    """The id of the key that made ``sent``; every key is tried, none short-circuits."""
    found = None
    for key_id, secret in keys.items():
        expected = expected_signature(secret, message, cfg.algorithm, cfg.encoding)
        if hmac.compare_digest(expected.encode(), sent.encode()):
            found = key_id
    if found is None:
        raise Refused("invalid_signature")
    return found


def remember_nonce(state: HmacState, key: tuple[str, str]) -> None:
    now = time.time()
    for old in [k for k, until in state.nonces.items() if until < now]:
        del state.nonces[old]
    if key in state.nonces:
        raise Refused("replayed_nonce")
    state.nonces[key] = now + 2 * state.config.tolerance_seconds


async def verify(request: web.Request, state: HmacState) -> str:
    """Run every check; returns the id of the key that signed ("" for ``secret``)."""
    cfg = state.config
    check_api_keys(request, cfg)
    keys = candidate_keys(request, cfg)
    timestamp = check_timestamp(request, cfg)
    nonce = request.headers.get(cfg.nonce_header, "") if cfg.nonce_header else ""
    if cfg.nonce_header and not nonce:
        raise Refused("missing_nonce")
    sent = signed_value(request, cfg)
    message = cfg.template.format_map(await canonical(request, timestamp, nonce))
    key_id = matching_key(keys, message, sent, cfg)
    if cfg.nonce_header:
        remember_nonce(state, (key_id, nonce))
    return key_id


async def handle(request: web.Request) -> web.Response:
    state = request.app[HMAC_STATE]
    try:
        key_id = await verify(request, state)
    except Refused as exc:
        return refusal(state, state.errors, exc)
    state.accepted += 1
    path, query = split_target(request.raw_path)
    echo = {"ok": True, "method": request.method, "path": path, "query": query, "key_id": key_id}
    return web.json_response(echo)


def make_app(cfg: HmacPeerConfig) -> web.Application:
    """Every path and method is a protected resource that echoes a verified request."""
    app = web.Application(middlewares=[recorder(lambda a: a[HMAC_STATE])])
    app[HMAC_STATE] = HmacState(config=cfg)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
