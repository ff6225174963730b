"""A configurable "cheapest authenticated call", used by verify() of key-style schemes.

Azupay has no verify endpoint, so the sidecar asks something harmless (``GET /v1/balance``)
with the candidate credential and reads the status: a 401/403 means the provider said no.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDict
from pydantic import Field

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeOptions,
    UpstreamContext,
    UpstreamResponse,
)


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


async def send_flow(
    flow: AuthFlow, http: aiohttp.ClientSession, timeout: float
) -> tuple[int, bytes]:
    """Drive an auth flow with buffered bodies: at most one extra send (a bounded retry)."""
    request = await flow.__anext__()
    status, body = 0, b""
    for _ in range(2):
        async with http.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            status, body = resp.status, await resp.read()
            seen = UpstreamResponse(resp.status, resp.headers)
        try:
            request = await flow.asend(seen)
        except StopAsyncIteration:
            break
    await flow.aclose()
    return status, body


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
    scheme: Any,
    cred: Credential,
    http: aiohttp.ClientSession,
    probe: Probe,
    upstream: UpstreamContext,
) -> None:
    """Send ``probe`` signed by ``scheme``'s own flow and judge the answer (run_probe)."""
    flow = scheme.auth_flow(probe_request(probe, upstream), cred)
    await run_probe(flow, http, probe, upstream)
