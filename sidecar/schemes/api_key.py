"""``api_key``: a stored key into a header or query parameter through a template.

Azupay wants ``Authorization: <key>`` (seed 003); IntaSend wants ``Authorization: Bearer
<secret>`` plus ``INTASEND_PUBLIC_API_KEY: <public>``. Neither has a verify endpoint, so
``verify()`` runs a configurable probe (Azupay: ``GET /v1/balance``).
"""

from __future__ import annotations

import re
import string
from typing import Any

import aiohttp
from pydantic import Field, model_validator

from sidecar.errors import VerificationFailed
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    SchemeOptions,
    UpstreamContext,
)
from sidecar.schemes.probe import Probe, probe_request, run_probe

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class ApiKeyOptions(SchemeOptions):
    header: str | None = Field("Authorization", description="header that carries the key")
    template: str = Field("{api_key}", description="value template over credential fields")
    query_param: str | None = Field(None, description="put the value in this query parameter")
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="more headers, each a template (IntaSend public key)"
    )
    key_field: str = Field("api_key", description="the secret field holding the key")
    probe: Probe | None = Field(None, description="the cheapest authenticated call, for verify")

    @model_validator(mode="after")
    def _check(self) -> ApiKeyOptions:
        if self.header is None and self.query_param is None:
            raise ValueError("set header or query_param")
        known = {self.key_field, "public_key", "key_id"}
        for template in (self.template, *self.extra_headers.values()):
            unknown = placeholders(template) - known
            if unknown:
                raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} in {template!r}")
        return self


class ApiKey(SchemeBase):
    name = "api_key"
    Options = ApiKeyOptions

    def __init__(self, options: ApiKeyOptions, upstream: UpstreamContext) -> None:
        self.options = options
        self.upstream = upstream
        self.probe = options.probe
        self.secret_fields = (options.key_field,)
        used = placeholders(options.template).union(
            *(placeholders(t) for t in options.extra_headers.values())
        )
        self.public_fields = tuple(f for f in ("public_key", "key_id") if f != options.key_field)
        self.optional_fields = tuple(f for f in self.public_fields if f not in used)

    def _render(self, template: str, cred: Credential) -> str:
        values = {name: cred.value(name) for name in placeholders(template)}
        rendered = template.format_map(values)
        if _CONTROL.search(rendered):
            raise VerificationFailed(
                f"{self.upstream.name}: a credential field holds a control character"
            )
        return rendered

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        opts = self.options
        value = self._render(opts.template, cred)
        if opts.query_param is not None:
            request.url = request.url.update_query({opts.query_param: value})
        else:
            request.headers[opts.header or "Authorization"] = value
        for header, template in opts.extra_headers.items():
            request.headers[header] = self._render(template, cred)
        yield request

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Probe when configured; otherwise only the key's presence can be checked."""
        if not cred.value(self.options.key_field):
            raise VerificationFailed(f"{self.upstream.name} - API Invalid credential")
        if self.probe is not None:
            flow = self.auth_flow(probe_request(self.probe, self.upstream), cred)
            await run_probe(flow, http, self.probe, self.upstream)

    def describe(self) -> dict[str, Any]:
        return {"header": self.options.header, "query_param": self.options.query_param}
