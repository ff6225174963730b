"""``hmac``: an HMAC signature over a canonical string built from a template, into headers.

PayNet's reports API signs the unix timestamp with the OAuth2 client secret
(``preset: paynet_reports``: ``X-Timestamp`` plus a hex HMAC-SHA256 ``X-Signature``, used after
``oauth2_client_credentials`` in a scheme list). Azupay's HMAC-enabled keys need the API key
*and* a signature, but Azupay does not publish its header names or canonical string, so there
is no Azupay preset; a plausible configuration with the generic options reads::

    scheme:
      - name: api_key                       # Authorization: <apiKey>
      - name: hmac
        key_field: hmac_key                 # "hmacKey" from the API key response
        template: "{timestamp}:{method}:{path}:{body_sha256}"
        signature_header: Authorization-Signature
        signature_format: "HMAC-SHA256 {signature}"

Placeholders are ``{timestamp}`` (unix seconds), ``{method}`` (upper case), ``{path}`` (the raw,
percent-encoded path), ``{query}`` (raw, without ``?``), ``{body_sha256}`` (lower-case hex
SHA-256 of the body, of ``b""`` when there is none) and ``{nonce}`` (uuid4 hex per request).
``signature_format`` may also use ``{timestamp}``, ``{nonce}`` and ``{key_id}``, for providers
that fold them into one header. The signing itself is the stdlib ``hmac`` module.

With no probe configured ``verify()`` can only check that the key is there: there is no
signature-checking endpoint to ask without knowing the provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
from pydantic import Field, model_validator

from sidecar.errors import SidecarError, VerificationFailed
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
from sidecar.schemes.probe import Probe, probe_with
from sidecar.schemes.template import CONTROL, Template

PLACEHOLDERS = frozenset({"timestamp", "method", "path", "query", "body_sha256", "nonce"})
FORMAT_PLACEHOLDERS = frozenset({"signature", "timestamp", "nonce", "key_id"})
PRESETS: dict[str, dict[str, Any]] = {
    "paynet_reports": {
        "template": "{timestamp}",
        "algorithm": "sha256",
        "encoding": "hex",
        "timestamp_header": "X-Timestamp",
        "signature_header": "X-Signature",
        "key_field": "client_secret",
    }
}


class HmacOptions(PresetOptions):
    presets = PRESETS
    preset: Literal["paynet_reports"] | None = Field(
        None, description="named defaults (paynet_reports); options given explicitly win"
    )
    template: str = Field("{timestamp}", description="canonical string that is signed")
    algorithm: Literal["sha256", "sha512"] = Field("sha256", description="HMAC digest")
    encoding: Literal["hex", "base64"] = Field("hex", description="signature text encoding")
    signature_header: str = Field("X-Signature", description="header carrying the signature")
    signature_format: str = Field(
        "{signature}", description="signature header value, e.g. 'HMAC {signature}'"
    )
    timestamp_header: str | None = Field("X-Timestamp", description="header for {timestamp}")
    nonce_header: str | None = Field(None, description="header for {nonce}")
    key_id_header: str | None = Field(None, description="header for the public field key_id")
    key_field: str = Field("hmac_key", description="credential field holding the HMAC key")
    probe: Probe | None = Field(None, description="the cheapest signed call, for verify")

    @model_validator(mode="after")
    def _check(self) -> HmacOptions:
        used = Template(self.template, PLACEHOLDERS).names
        fmt = Template(self.signature_format, FORMAT_PLACEHOLDERS)
        if fmt.names.count("signature") != 1:
            raise ValueError("signature_format must contain {signature} exactly once")
        sent = {"timestamp": self.timestamp_header, "nonce": self.nonce_header}
        check_header_names(self.signature_header, self.key_id_header, *sent.values())
        for name, header in sent.items():
            if name in used and header is None and name not in fmt.names:
                raise ValueError(f"template uses {{{name}}} but {name}_header is not set")
        return self


class Hmac(SchemeBase):
    name = "hmac"
    Options = HmacOptions

    def __init__(self, options: HmacOptions, upstream: UpstreamContext) -> None:
        self.options = options
        self.upstream = upstream
        self.probe = options.probe
        self.verification = probed(options.probe)
        self.template = Template(options.template, PLACEHOLDERS)
        self.signature_format = Template(options.signature_format, FORMAT_PLACEHOLDERS)
        self.requires_request_body = "body_sha256" in self.template.names
        self.replays_request = False
        self.secret_fields = (options.key_field,)
        self.public_fields = () if options.key_field == "key_id" else ("key_id",)
        self.optional_fields = () if self._needs_key_id else self.public_fields
        self.clock: Callable[[], float] = time.time

    @property
    def _needs_key_id(self) -> bool:
        return self.options.key_id_header is not None or "key_id" in self.signature_format.names

    def canonical(self, request: OutboundRequest, timestamp: str, nonce: str) -> str:
        """The string that is signed; only the placeholders the template uses are computed."""
        values: dict[str, str] = {}
        for name in self.template.names:
            if name == "timestamp":
                values[name] = timestamp
            elif name == "method":
                values[name] = request.method.upper()
            elif name == "path":
                values[name] = request.url.raw_path
            elif name == "query":
                values[name] = request.url.raw_query_string
            elif name == "body_sha256":
                values[name] = hashlib.sha256(request.body or b"").hexdigest()
            else:
                values[name] = nonce
        return self.template.render(values)

    def sign(self, key: str, message: str) -> str:
        digest = hmac.digest(key.encode(), message.encode(), self.options.algorithm)
        if self.options.encoding == "hex":
            return digest.hex()
        return base64.b64encode(digest).decode("ascii")

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        opts = self.options
        timestamp, nonce = str(int(self.clock())), os.urandom(16).hex()  # 128 random bits
        signature = self.sign(cred.value(opts.key_field), self.canonical(request, timestamp, nonce))
        values = {"signature": signature, "timestamp": timestamp, "nonce": nonce}
        if self._needs_key_id:
            values["key_id"] = cred.value("key_id")
        headers = {
            opts.signature_header: self.signature_format.render(values),
            opts.timestamp_header: timestamp,
            opts.nonce_header: nonce,
            opts.key_id_header: values.get("key_id"),
        }
        for header, value in headers.items():
            if header is not None and value is not None:
                request.headers[header] = self._checked(header, value)
        yield request

    def _checked(self, header: str, value: str) -> str:
        """A stored key_id with CR/LF must not split the request; the value is not echoed."""
        if CONTROL.search(value):
            raise SidecarError(
                "SC4010", f"{self.upstream.name}: {header} would carry a control character"
            )
        return value

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Structural checks always; a signed probe when one is configured."""
        needed = [self.options.key_field, *(["key_id"] if self._needs_key_id else [])]
        for name in needed:
            value = cred.secrets.get(name) or cred.fields.get(name)
            if not value or (name == "key_id" and CONTROL.search(value)):
                raise VerificationFailed(f"{self.upstream.name} - API Invalid credential")
        if self.probe is not None:
            await probe_with(self, cred, http, self.probe, self.upstream)
