"""A configurable "cheapest authenticated call", used by verify() of key-style schemes.

Azupay has no verify endpoint, so the sidecar asks something harmless (``GET /v1/balance``)
with the candidate credential and reads the status: a 401/403 means the provider said no.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import Field

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    Scheme,
    SchemeOptions,
    UpstreamContext,
)
from sidecar.schemes.driver import drive


class Probe(SchemeOptions):
    """``probe: {method: GET, path: /v1/balance, ok: [200], reject: [401, 403]}``."""

    method: str = "GET"
    path: str = "/"
    body: str | None = None
    content_type: str = "application/json"
    ok: list[int] = Field(
        default_factory=list, description="statuses that mean valid; empty = any not in reject"
    )
    reject: list[int] = Field(default_factory=lambda: [401, 403])


def probe_request(probe: Probe, upstream: UpstreamContext) -> OutboundRequest:
    headers: CIMultiDict[str] = CIMultiDict()
    body = probe.body.encode() if probe.body is not None else None
    if body is not None:
        headers["Content-Type"] = probe.content_type
    return OutboundRequest(probe.method.upper(), upstream.join(probe.path), headers, body)


@dataclass(frozen=True, slots=True)
class _Answer:
    """A probe's answer, read whole: what the flow sees, plus the body a verify may parse."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def _keep(_answer: _Answer) -> None:
    """Nothing to release: each answer was read whole and its connection returned at once."""


async def send_flow(
    flow: AuthFlow, http: aiohttp.ClientSession, timeout: float
) -> tuple[int, bytes]:
    """Drive an auth flow with buffered bodies through the one driver (a bounded retry)."""

    async def send(request: OutboundRequest) -> _Answer:
        async with http.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return _Answer(resp.status, resp.headers, await resp.read())

    answer = await drive(flow, send, _keep)
    return answer.status, answer.body


async def run_probe(
    flow: AuthFlow, http: aiohttp.ClientSession, probe: Probe, upstream: UpstreamContext
) -> None:
    """Raise VerificationFailed when the provider rejects, SC2006 when it cannot be asked."""
    try:
        status, _ = await send_flow(flow, http, upstream.timeout)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise SidecarError(
            "SC2006", f"{upstream.name}: provider unreachable ({type(exc).__name__})"
        ) from None
    if status in probe.reject or (probe.ok and status not in probe.ok):
        raise VerificationFailed(f"{upstream.name} - API Invalid credential")


async def probe_with(
    scheme: Scheme,
    cred: Credential,
    http: aiohttp.ClientSession,
    probe: Probe,
    upstream: UpstreamContext,
) -> None:
    """Send ``probe`` signed by ``scheme``'s own flow and judge the answer (run_probe)."""
    flow = scheme.auth_flow(probe_request(probe, upstream), cred)
    await run_probe(flow, http, probe, upstream)
