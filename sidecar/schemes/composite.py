"""Several schemes applied in order over one credential (``scheme: [oauth2..., hmac]``).

PayNet's reports API wants a Bearer token *and* an ``X-Signature``; Azupay's HMAC-enabled keys
want the API key *and* a signature. Each part signs in turn; if one part asks for a retry (a
refreshed token after a 401), the parts after it sign the retried request afresh. Still at most
one retry in all.

Every part's flow is closed on every way out (a part failing to sign, a part raising on the
answer, the driver closing this flow early), so a part's ``finally`` never waits for the
garbage collector. The proxy and verify probes drive this flow with the one driver
(``schemes/driver.py``) like any other.

``verification`` is the strongest of the parts' (probe > token > presence-only): a probe is
signed by every part, and a part without one verifies itself, so the strongest check that ran
is what the save rested on. One word rather than a list keeps the answer's field one type.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import aiohttp

from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    Scheme,
    SchemeBase,
    UpstreamContext,
    strongest,
    verification_of,
)
from sidecar.schemes.probe import Probe, probe_with


def _union(groups: Sequence[Sequence[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))


class Composite(SchemeBase):
    name = "composite"

    def __init__(self, parts: Sequence[Scheme], upstream: UpstreamContext) -> None:
        self.parts = list(parts)
        self.upstream = upstream
        self.requires_request_body = any(p.requires_request_body for p in parts)
        self.replays_request = any(p.replays_request for p in parts)
        self.verification = strongest([verification_of(p) for p in parts])
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

    def counters(self) -> Mapping[str, int]:
        """The parts' counters, summed by name (one token endpoint per part at most)."""
        total: Counter[str] = Counter()
        for part in self.parts:
            total.update(part.counters())
        return dict(total)

    async def _sign(
        self,
        parts: Sequence[Scheme],
        request: OutboundRequest,
        cred: Credential,
        flows: list[AuthFlow],
    ) -> OutboundRequest:
        """Each part signs in turn; its flow joins ``flows`` before it runs, to be closed."""
        for part in parts:
            flow = part.auth_flow(request, cred)
            flows.append(flow)
            request = await flow.__anext__()
        return request

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        flows: list[AuthFlow] = []
        try:
            response = yield await self._sign(self.parts, request, cred, flows)
            for i, flow in enumerate(list(flows)):
                try:
                    retry = await flow.asend(response)
                except StopAsyncIteration:
                    continue
                yield await self._sign(self.parts[i + 1 :], retry, cred, flows)
                return
        finally:
            for flow in flows:
                await flow.aclose()

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Parts without a probe verify themselves (a token request); a probe runs through all."""
        probes: list[Probe | None] = [getattr(p, "probe", None) for p in self.parts]
        for part, probe in zip(self.parts, probes, strict=True):
            if probe is None:
                await part.verify(cred, http)
        chosen = [probe for probe in probes if probe is not None]
        if chosen:
            await probe_with(self, cred, http, chosen[0], self.upstream)
