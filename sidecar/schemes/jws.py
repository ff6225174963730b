"""``jws``: a compact JWS (a signed JWT) made per request with the credential's private key.

PayNet's DuitNow Pay API wants an RS256 JWT in ``Authorization`` on every request, with
``exp``, ``iss`` (the client/acquirer id), ``sub`` (the merchant id), ``jti`` (a UUIDv4),
``key`` (the merchant key name) and the request payload under ``data``
(``preset: paynet_duitnow``). The private key stays in Vault and in this process: the app
never holds it.

``claims`` maps claim names to values. A string value is a template over ``{uuid4}``,
``{now}``, ``{now+N}`` (unix seconds), ``{body_json}`` (the request body parsed as JSON),
``{body_sha256}`` (hex) and the credential's public fields ``{issuer}``, ``{subject}``,
``{key_id}``; other values are literals. A string that is exactly one placeholder keeps its
type: ``"{now+300}"`` is a number and ``"{body_json}"`` the body's JSON value (omitted when the
request has no body). The encoding and signing are PyJWT's, over ``cryptography`` keys; the PEM
is parsed once per credential version, not per request (:class:`KeyCache`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
import jwt
from pydantic import Field, model_validator

from sidecar.errors import SidecarError
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    PresetOptions,
    SchemeBase,
    UpstreamContext,
    check_header_names,
    probed,
)
from sidecar.schemes.jwskeys import Algorithm, KeyProblem, PrivateKey, load_private_key
from sidecar.schemes.mtls import origin_path
from sidecar.schemes.probe import Probe, probe_with
from sidecar.schemes.template import CONTROL

FIELDS = ("issuer", "subject", "key_id")
FIXED = frozenset({"uuid4", "now", "body_json", "body_sha256", *FIELDS})
NOW_PLUS = re.compile(r"now\+([0-9]{1,9})")
NUMERIC_CLAIMS = frozenset({"exp", "iat", "nbf"})
STRING_CLAIMS = frozenset({"iss", "sub", "jti"})
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
_ABSENT = object()  # a fact with no value: the claim is left out (no body, no data)
_NOT_JSON = object()  # a body that {body_json} cannot take
PRESETS: dict[str, dict[str, Any]] = {
    "paynet_duitnow": {
        "algorithm": "RS256",
        "claims": {
            "exp": "{now+300}",
            "iss": "{issuer}",
            "sub": "{subject}",
            "jti": "{uuid4}",
            "key": "{key_id}",
            "data": "{body_json}",
        },
    }
}


def _placeholders(text: str) -> list[str]:
    """The placeholder names of a claim template, in order; unknown names are config errors."""
    names: list[str] = []
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
        if name not in FIXED and not NOW_PLUS.fullmatch(name):
            raise ValueError(f"unknown placeholder {{{name}}} in {text!r}")
        names.append(name)
    return names


class JwsOptions(PresetOptions):
    presets = PRESETS
    preset: Literal["paynet_duitnow"] | None = Field(
        None, description="named defaults (paynet_duitnow); options given explicitly win"
    )
    algorithm: Algorithm = Field("RS256", description="RS256, PS256 (RSA) or ES256 (P-256)")
    claims: dict[str, Any] = Field(
        default_factory=lambda: {"iat": "{now}", "exp": "{now+300}", "jti": "{uuid4}"},
        description="claim name -> literal or template string (see the scheme's docs)",
    )
    header: str = Field("Authorization", description="request header carrying the JWS")
    prefix: str = Field("Bearer ", description="text before the JWS in that header")
    kid: bool = Field(False, description="put the credential's key_id in the JWS header as kid")
    min_rsa_bits: int = Field(2048, ge=2048, description="smallest RSA key accepted")
    max_token_bytes: int = Field(
        16384, gt=0, le=1 << 20, description="largest JWS sent (body_json makes it grow)"
    )
    probe: Probe | None = Field(None, description="the cheapest signed call, for verify")

    @model_validator(mode="after")
    def _check(self) -> JwsOptions:
        if not TOKEN.fullmatch(self.header):
            raise ValueError("header must be an HTTP header name")
        check_header_names(self.header)
        if CONTROL.search(self.prefix):
            raise ValueError("prefix must not hold control characters")
        try:
            json.dumps(self.claims, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError("claims must be JSON values (quote dates and times)") from None
        for name, value in self.claims.items():
            _check_claim(name, value)
        if self.probe is not None:
            origin_path(self.probe.path, "probe.path")
        return self


def _check_claim(name: str, value: Any) -> None:
    """Types RFC 7519 fixes are checked here, not found out by the first request."""
    names = _placeholders(value) if isinstance(value, str) else []
    whole = len(names) == 1 and value == "{" + names[0] + "}"
    if "body_json" in names and not whole:
        raise ValueError(f"claims.{name}: {{body_json}} must be the whole value")
    numeric = whole and (names[0] == "now" or NOW_PLUS.fullmatch(names[0]) is not None)
    if name in NUMERIC_CLAIMS and not (numeric or _is_number(value)):
        raise ValueError(f"claims.{name}: must be a number, {{now}} or {{now+N}}")
    if name in STRING_CLAIMS and (numeric or names == ["body_json"] or not isinstance(value, str)):
        raise ValueError(f"claims.{name}: must be a string")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Claims:
    """The claims template compiled once: literals, whole placeholders and text templates."""

    def __init__(self, claims: Mapping[str, Any]) -> None:
        self.literal: dict[str, Any] = {}
        self.whole: list[tuple[str, str]] = []
        self.text: list[tuple[str, str, tuple[str, ...]]] = []
        for name, value in claims.items():
            names = _placeholders(value) if isinstance(value, str) else []
            if not isinstance(value, str):
                self.literal[name] = value
            elif not names:
                self.literal[name] = value.format_map({})  # "{{" and "}}" become braces
            elif value == "{" + names[0] + "}":
                self.whole.append((name, names[0]))
            else:
                self.text.append((name, value, tuple(names)))
        used = [p for _, _, names in self.text for p in names]
        self.names = frozenset(used + [p for _, p in self.whole])

    def render(self, facts: Callable[[str], Any]) -> dict[str, Any]:
        """The claims for one request; ``facts`` computes a placeholder's value by name."""
        out = dict(self.literal)
        for claim, name in self.whole:
            value = facts(name)
            if value is not _ABSENT:
                out[claim] = value
        for claim, text, names in self.text:
            out[claim] = text.format_map({n: _text(facts(n)) for n in names})
        return out


def _text(value: Any) -> str:
    return "" if value is _ABSENT else str(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice is ambiguous (parsers differ on which wins): refuse it."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """``1e400`` parses to infinity, which the claims would carry as ``Infinity``: not JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def body_json(body: bytes | None) -> Any:
    """The body as one JSON value (``_ABSENT`` for no body); strict: UTF-8 without a BOM
    (RFC 8259; bytes would let Python sniff UTF-16), no NaN or infinite number, no duplicate
    keys."""
    if not body:
        return _ABSENT
    try:
        text = body.decode("utf-8")  # a BOM stays "\ufeff", which json.loads refuses
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite
        )
    except (ValueError, RecursionError):
        return _NOT_JSON


class KeyCache:
    """Parsed private keys by (credential, version): a PEM is parsed once, not per request.

    Bounded (LRU, ``size`` entries), and a newer version of a credential evicts the older
    ones, so a rotated key does not linger here. The PEM text is compared on each hit, so a
    re-created credential that reuses a version number cannot sign with the old key.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._keys: OrderedDict[tuple[str, int], tuple[str, PrivateKey]] = OrderedDict()
        self.parses = 0

    def get(self, cred: Credential, pem: str, parse: Callable[[str], PrivateKey]) -> PrivateKey:
        slot = (cred.name, cred.version)
        hit = self._keys.get(slot)
        if hit is not None and hit[0] == pem:
            self._keys.move_to_end(slot)
            return hit[1]
        key = parse(pem)
        self.parses += 1
        for old in [s for s in self._keys if s[0] == cred.name and s[1] != cred.version]:
            del self._keys[old]
        self._keys[slot] = (pem, key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return key

    def __len__(self) -> int:
        return len(self._keys)


class Jws(SchemeBase):
    name = "jws"
    Options = JwsOptions

    def __init__(self, options: JwsOptions, upstream: UpstreamContext) -> None:
        self.options = options
        self.upstream = upstream
        self.probe = options.probe
        self.verification = probed(options.probe)
        self.claims = Claims(options.claims)
        self.requires_request_body = bool({"body_json", "body_sha256"} & self.claims.names)
        self.replays_request = False
        self.public_fields = FIELDS
        self.secret_fields = ("private_key",)
        needed = {n for n in FIELDS if n in self.claims.names or (n == "key_id" and options.kid)}
        self.optional_fields = tuple(n for n in FIELDS if n not in needed)
        self.clock: Callable[[], float] = time.time
        self.keys = KeyCache()

    def _parse(self, pem: str) -> PrivateKey:
        return load_private_key(pem, self.options.algorithm, self.options.min_rsa_bits)

    def private_key(self, cred: Credential) -> PrivateKey:
        """The cached key object; a stored key that cannot sign is refused before sending."""
        try:
            return self.keys.get(cred, cred.value("private_key"), self._parse)
        except KeyProblem:
            raise SidecarError(
                "SC4057", f"{self.upstream.name}: the stored JWS private key cannot sign"
            ) from None

    def facts(self, request: OutboundRequest, cred: Credential) -> Callable[[str], Any]:
        """Placeholder values for one request, computed only when a claim asks for them."""
        now = int(self.clock())

        def fact(name: str) -> Any:
            if name == "uuid4":
                return str(uuid.uuid4())
            if name == "now":
                return now
            if name == "body_sha256":
                return hashlib.sha256(request.body or b"").hexdigest()
            if name == "body_json":
                return self._body(request.body)
            if name in FIELDS:
                return cred.fields.get(name, _ABSENT)
            match = NOW_PLUS.fullmatch(name)
            assert match is not None  # checked at config load
            return now + int(match.group(1))

        return fact

    def _body(self, body: bytes | None) -> Any:
        value = body_json(body)
        if value is _NOT_JSON:
            raise SidecarError(
                "SC4055", f"{self.upstream.name}: the request body must be JSON to be signed"
            )
        return value

    def token(self, request: OutboundRequest, cred: Credential) -> str:
        """The compact JWS for ``request``; refused (413) when larger than max_token_bytes."""
        key = self.private_key(cred)
        claims = self.claims.render(self.facts(request, cred))
        kid = cred.fields.get("key_id") if self.options.kid else None
        headers = {"kid": kid} if kid else None
        token = jwt.encode(claims, key, algorithm=self.options.algorithm, headers=headers)
        if len(token) > self.options.max_token_bytes:
            raise SidecarError(
                "SC4056",
                f"{self.upstream.name}: the JWS would be {len(token)} bytes, over "
                f"max_token_bytes ({self.options.max_token_bytes})",
            )
        return token

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        request.headers[self.options.header] = self.options.prefix + self.token(request, cred)
        yield request

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """The key parses and fits the algorithm (422 with the reason); then the probe, if any."""
        try:
            self._parse(cred.value("private_key"))
        except KeyProblem as problem:
            raise SidecarError(problem.code, f"{self.upstream.name}: {problem.reason}") from None
        if self.probe is not None:
            await probe_with(self, cred, http, self.probe, self.upstream)
