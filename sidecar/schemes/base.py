"""The scheme extension point: how a provider's auth is computed and checked.

Modelled on httpx's ``Auth.auth_flow``. A scheme is a small class whose async generator
receives the outbound request, signs it, yields it, receives the upstream's response and may
yield once more (refresh a token on 401 and retry). The proxy drives the generator; tests drive
it by hand with no network.

A scheme never sees a ``web.Request`` or a socket: only :class:`OutboundRequest`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, model_validator
from yarl import URL


class SchemeOptions(BaseModel):
    """Base of every scheme's config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PresetOptions(SchemeOptions):
    """Options with named defaults (``preset: <name>``): a subclass sets ``presets``."""

    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """Preset values first, so that any option given explicitly overrides them."""
        preset = data.get("preset") if isinstance(data, Mapping) else None
        if isinstance(preset, str) and preset in cls.presets:
            return {**cls.presets[preset], **data}
        return data



# Headers the connection owns (framing, Host) or that mean something to one hop only. A scheme
# that set one would send a second Content-Length (request smuggling) or a wrong Host; the pool
# refuses them at the wire too, this check says so at load, naming the option.
WIRE_OWNED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer"}
    | {"upgrade", "expect", "proxy-connection"}
)


def check_header_names(*names: str | None) -> None:
    """Refuse an option naming a header the connection owns (ValueError for the config model)."""
    for name in names:
        if name is not None and (name.lower() in WIRE_OWNED or name.lower().startswith("proxy-")):
            raise ValueError(f"{name} is a framing or connection header: no scheme may set it")

@dataclass(frozen=True, slots=True)
class Credential:
    """One stored credential, decrypted, as the proxy uses it.

    ``secrets`` is excluded from ``repr`` so that a stray log of the object shows no secret.
    """

    name: str
    upstream: str
    scheme: str
    environment: str
    enabled: bool
    fields: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False)
    provider_data: Mapping[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    def value(self, name: str) -> str:
        """A field by name, public or secret (schemes may be told which one to use)."""
        if name in self.secrets:
            return self.secrets[name]
        if name in self.fields:
            return self.fields[name]
        raise KeyError(name)


@dataclass(slots=True)
class OutboundRequest:
    """The request the sidecar is about to send upstream.

    ``body`` is ``None`` when the body streams from the app untouched; schemes that declare
    ``requires_request_body`` always receive the whole body as bytes.
    """

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | None = None

    def copy(self) -> OutboundRequest:
        return OutboundRequest(self.method, self.url, CIMultiDict(self.headers), self.body)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """What a scheme may look at after the send: status and headers, never the body stream."""

    status: int
    headers: CIMultiDictProxy[str] | CIMultiDict[str]


class ResponseHead(Protocol):
    """What a flow is sent back: :class:`UpstreamResponse`, or the proxy's own response object
    (``sidecar.proxy.client.Response``, whose headers are decoded only if a scheme reads them)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str] | CIMultiDict[str]: ...


AuthFlow = AsyncGenerator[OutboundRequest, ResponseHead]


@runtime_checkable
class Scheme(Protocol):
    """What every auth scheme provides. Instances are built once per upstream at config load."""

    name: ClassVar[str]
    # Instance attributes (class defaults), because options such as ``key_field`` or the
    # template change them.
    requires_request_body: bool
    replays_request: bool
    public_fields: tuple[str, ...]
    secret_fields: tuple[str, ...]
    optional_fields: tuple[str, ...]

    def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow: ...

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Make the provider's cheapest authenticated call; raise VerificationFailed on a no."""
        ...

    def bind(self, http: aiohttp.ClientSession) -> None:
        """Receive the upstream's pooled session (token requests use it). Called once."""
        ...

    def counters(self) -> Mapping[str, int]:
        """Monotonic counters the metrics endpoint publishes, read at scrape time.

        Names are fixed per scheme; ``metrics.py`` knows ``token_requests`` and
        ``token_failures`` (``sidecar_token_fetches``). Never a secret, never a label value.
        """
        ...


Verification = Literal["presence-only", "token", "probe"]
"""What ``verify()`` really asks, weakest first: nothing (the fields are there and usable), the
token endpoint (OAuth2: the client is accepted), or an authenticated call (a probe)."""

VERIFICATIONS: tuple[Verification, ...] = get_args(Verification)


def verification_of(scheme: object) -> Verification:
    """A scheme's declared ``verification``; a plugin that declares none counts as presence-only,
    so an unknown check is never reported as stronger than it may be."""
    declared = getattr(scheme, "verification", None)
    return declared if declared in VERIFICATIONS else "presence-only"


def probed(probe: object | None) -> Verification:
    """What verify() asks of a scheme whose only provider call is an optional probe."""
    return "presence-only" if probe is None else "probe"


def strongest(kinds: list[Verification]) -> Verification:
    """The strongest check among several (a composite reports the best part that ran)."""
    return max(kinds, key=VERIFICATIONS.index, default="presence-only")


class SchemeBase:
    """Defaults shared by the built-in schemes; a plugin may use it or not."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[SchemeOptions]] = SchemeOptions
    verification: Verification = "presence-only"
    requires_request_body: bool = False
    replays_request: bool = False
    public_fields: tuple[str, ...] = ()
    secret_fields: tuple[str, ...] = ()
    optional_fields: tuple[str, ...] = ()

    def bind(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    def counters(self) -> Mapping[str, int]:
        return {}


@dataclass(frozen=True, slots=True)
class UpstreamContext:
    """What a scheme needs to know about the upstream it serves, fixed at config load."""

    name: str
    url: URL
    timeout: float = 10.0

    def join(self, path: str) -> URL:
        """An upstream-relative path (``/v1/x`` or ``v1/x``) or an absolute URL, resolved."""
        if path.startswith(("http://", "https://")):
            return URL(path)
        base = str(self.url).rstrip("/")
        return URL(base + "/" + path.lstrip("/"), encoded=False)


def now() -> datetime:
    """Current time with offset; one place so tests can reason about clocks."""
    return datetime.now().astimezone()
