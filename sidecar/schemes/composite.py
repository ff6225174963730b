"""Several schemes applied in order over one credential (``scheme: [oauth2..., hmac]``).

PayNet's reports API wants a Bearer token *and* an ``X-Signature``; Azupay's HMAC-enabled keys
want the API key *and* a signature. Each part signs in turn; if one part asks for a retry (a
refreshed token after a 401), the parts after it sign the retried request afresh. Still at most
one retry in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    UpstreamContext,
)
from sidecar.schemes.probe import probe_with


def _union(groups: Sequence[Sequence[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))


class Composite(SchemeBase):
    name = "composite"

    def __init__(self, parts: Sequence[Any], upstream: UpstreamContext) -> None:
        self.parts = list(parts)
        self.upstream = upstream
        self.requires_request_body = any(p.requires_request_body for p in parts)
        self.replays_request = any(p.replays_request for p in parts)
        self.secret_fields = _union([p.secret_fields for p in parts])
        self.public_fields = tuple(
            f for f in _union([p.public_fields for p in parts]) if f not in self.secret_fields
        )
        declared = [(p, set(p.public_fields) | set(p.secret_fields)) for p in parts]
        self.optional_fields = tuple(
            f
            for f in (*self.public_fields, *self.secret_fields)
            if all(f in p.optional_fields for p, fields in declared if f in fields)
        )

    def bind(self, http: aiohttp.ClientSession) -> None:
        for part in self.parts:
            part.bind(http)

    async def _sign(
        self, parts: Sequence[Any], request: OutboundRequest, cred: Credential
    ) -> tuple[OutboundRequest, list[AuthFlow]]:
        flows: list[AuthFlow] = []
        for part in parts:
            flow = part.auth_flow(request, cred)
            request = await flow.__anext__()
            flows.append(flow)
        return request, flows

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        request, flows = await self._sign(self.parts, request, cred)
        response = yield request
        try:
            for i, flow in enumerate(flows):
                try:
                    retry = await flow.asend(response)
                except StopAsyncIteration:
                    continue
                retry, later = await self._sign(self.parts[i + 1 :], retry, cred)
                flows += later
                yield retry
                return
        finally:
            for flow in flows:
                await flow.aclose()

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Parts without a probe verify themselves (a token request); a probe runs through all."""
        probes = [p.probe for p in self.parts if getattr(p, "probe", None) is not None]
        for part in self.parts:
            if getattr(part, "probe", None) is None:
                await part.verify(cred, http)
        if probes:
            await probe_with(self, cred, http, probes[0], self.upstream)
