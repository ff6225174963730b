"""Provider webhook signatures, checked with a credential's secret that never leaves the pod.

Why here and not in the app: a provider such as Kopokopo signs the webhooks it sends with a key of
the app's own credential (``X-KopoKopo-Signature`` is the hex HMAC-SHA256 of the raw body keyed
with the OAuth application's API key). If the app checked them itself it would need that key; the
sidecar already holds it, so the app forwards the webhook and asks for a verdict.

An upstream declares how its provider signs (``webhook_signature`` in its config): the header,
the credential field holding the key, the HMAC hash, the signature's encoding and a template of
what is signed (``{body}``, literal text, ``{header:Name}`` for a signed timestamp header). The
field becomes a secret field of the upstream's credentials. Pure functions: no I/O, no HTTP.
Replay protection (timestamps, event ids) stays the app's part: a valid signature says who made
the bytes, not that they are new.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

TOKEN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"  # an HTTP header name (RFC 9110 token)
_PART = re.compile(r"\{([^{}]*)\}")
_HEX = re.compile(r"[0-9A-Fa-f]+\Z")
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
MAX_BODY_CAP = 16 * 1024 * 1024

# Named shapes, so a config can say ``webhook_signature: kopokopo``. Sources: Kopokopo's SDKs,
# k2-connect-php ``Webhooks::webhookHandler`` + ``Helpers\\Auth`` (hash_hmac sha256 of the raw
# payload with the API key) and k2-connect-node ``lib/helpers/auth.js`` (hex digest).
PRESETS: dict[str, dict[str, Any]] = {
    "kopokopo": {
        "header": "X-KopoKopo-Signature",
        "field": "api_key",
        "algorithm": "sha256",
        "encoding": "hex",
        "template": "{body}",
    },
}


class WebhookSignature(BaseModel):
    """How one upstream's provider signs its webhooks (``upstreams.<name>.webhook_signature``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str = Field(pattern=TOKEN, description="the header carrying the signature")
    field: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="credential field holding the signing key; becomes a secret field",
    )
    algorithm: Literal["sha256", "sha512"] = Field("sha256", description="HMAC hash")
    encoding: Literal["hex", "base64"] = Field("hex", description="how the signature is written")
    prefix: str = Field("", max_length=32, description="text before the signature, e.g. sha256=")
    template: str = Field(
        "{body}", description="what is signed: {body}, literal text, {header:Name}"
    )
    required: bool = Field(
        False, description="credentials must hold the key (else it is an optional field)"
    )
    max_body: int = Field(
        256 * 1024, gt=0, le=MAX_BODY_CAP, description="largest webhook body, bytes (413 beyond)"
    )

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        names = _PART.findall(v)
        if names.count("body") != 1:
            raise ValueError("must contain {body} exactly once")
        for name in names:
            if name != "body" and not _header_part(name):
                raise ValueError(f"{{{name}}}: only {{body}} and {{header:Name}} are known")
        return v


def _header_part(name: str) -> str | None:
    """``header:X-Ts`` -> ``X-Ts``; None when it is not a header reference."""
    kind, _, header = name.partition(":")
    if kind == "header" and re.match(TOKEN, header):
        return header
    return None


def preset(value: Any) -> Any:
    """``kopokopo`` or ``{preset: kopokopo, max_body: 4096}`` -> options; others as given."""
    if isinstance(value, str):
        value = {"preset": value}
    if not isinstance(value, dict) or "preset" not in value:
        return value
    name = value["preset"]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return {**PRESETS[name], **{k: v for k, v in value.items() if k != "preset"}}


class Headers(Protocol):
    def getall(self, key: str, default: list[str], /) -> list[str]: ...


def _one(headers: Headers, name: str) -> str | None:
    """The header's single value; None if missing or repeated (a repeat is ambiguous)."""
    values = headers.getall(name, [])
    return values[0] if len(values) == 1 else None


def signed_message(spec: WebhookSignature, body: bytes, headers: Headers) -> bytes | None:
    """The bytes the provider signed, or None when a header the template names is not usable.

    A header value is taken as the bytes that arrived (aiohttp decodes them as UTF-8 with
    ``surrogateescape``, so this is lossless): folding what is not Latin-1 to ``?`` made many
    values one message, so a header the provider signed could be swapped for another.
    """
    out: list[bytes] = []
    pos = 0
    for match in _PART.finditer(spec.template):
        out.append(spec.template[pos : match.start()].encode())
        pos = match.end()
        header = _header_part(match.group(1))
        if header is None:
            out.append(body)
            continue
        value = _one(headers, header)
        if value is None:
            return None
        out.append(value.encode("utf-8", "surrogateescape"))  # the bytes on the wire, exactly
    out.append(spec.template[pos:].encode())
    return b"".join(out)


def digest(spec: WebhookSignature, key: str, message: bytes) -> bytes:
    return hmac.new(key.encode(), message, _HASHES[spec.algorithm]).digest()


def encode(spec: WebhookSignature, raw: bytes) -> str:
    """A digest as the provider writes it (what a sender puts in the header)."""
    text = raw.hex() if spec.encoding == "hex" else base64.b64encode(raw).decode()
    return spec.prefix + text


def decode(spec: WebhookSignature, given: str) -> bytes | None:
    """The signature's bytes; None when it is not in the declared form (never an exception)."""
    if not given.startswith(spec.prefix):
        return None
    text = given[len(spec.prefix) :].strip()
    if spec.encoding == "hex":
        return bytes.fromhex(text) if _HEX.match(text) and len(text) % 2 == 0 else None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def sign(spec: WebhookSignature, key: str, body: bytes, headers: Headers) -> str | None:
    message = signed_message(spec, body, headers)
    return None if message is None else encode(spec, digest(spec, key, message))


def verify(spec: WebhookSignature, key: str, body: bytes, headers: Headers) -> bool:
    """True only for exactly one signature header that matches; compared in constant time."""
    given = _one(headers, spec.header)
    message = signed_message(spec, body, headers)
    if given is None or message is None:
        return False
    raw = decode(spec, given)
    expected = digest(spec, key, message)
    return raw is not None and hmac.compare_digest(expected, raw)
