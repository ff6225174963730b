"""``api_key``: a stored key into a header or query parameter through a template.

Azupay wants ``Authorization: <key>`` (seed 003); IntaSend wants ``Authorization: Bearer
<secret>`` plus ``INTASEND_PUBLIC_API_KEY: <public>``. Templates name credential fields
(``{api_key}``, ``{public_key}``, ``{key_id}``) and are parsed once, at load, so a typo is a
config error rather than a failed request. Neither provider has a verify endpoint, so
``verify()`` runs a configurable probe (Azupay: ``GET /v1/balance``; IntaSend:
``GET /api/v1/wallets/``); without one it can only check that the fields are usable.
"""

from __future__ import annotations

import aiohttp
from pydantic import Field, model_validator

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    SchemeOptions,
    UpstreamContext,
    check_header_names,
    probed,
)
from sidecar.schemes.probe import Probe, probe_with
from sidecar.schemes.template import CONTROL, Template

_PUBLIC = ("public_key", "key_id")


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
        check_header_names(self.header, *self.extra_headers)
        for template in (self.template, *self.extra_headers.values()):
            Template(template, self.known_fields())
        return self

    def known_fields(self) -> frozenset[str]:
        return frozenset({self.key_field, *_PUBLIC})


class ApiKey(SchemeBase):
    name = "api_key"
    Options = ApiKeyOptions

    def __init__(self, options: ApiKeyOptions, upstream: UpstreamContext) -> None:
        self.options = options
        self.upstream = upstream
        self.probe = options.probe
        self.verification = probed(options.probe)
        known = options.known_fields()
        self.value_template = Template(options.template, known)
        self.extra = {h: Template(t, known) for h, t in options.extra_headers.items()}
        self.used = frozenset(self.value_template.names).union(
            *(t.names for t in self.extra.values())
        )
        self.secret_fields = (options.key_field,)
        self.public_fields = tuple(f for f in _PUBLIC if f != options.key_field)
        self.optional_fields = tuple(f for f in self.public_fields if f not in self.used)

    def _render(self, header: str, template: Template, cred: Credential) -> str:
        """A control character would split or corrupt the request; the value is not echoed."""
        rendered = template.render({name: cred.value(name) for name in template.names})
        if CONTROL.search(rendered):
            raise SidecarError(
                "SC4010", f"{self.upstream.name}: {header} would carry a control character"
            )
        return rendered

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        opts = self.options
        if opts.query_param is not None:
            value = self._render(opts.query_param, self.value_template, cred)
            request.url = request.url.update_query({opts.query_param: value})
        else:
            header = opts.header or "Authorization"
            request.headers[header] = self._render(header, self.value_template, cred)
        for header, template in self.extra.items():
            request.headers[header] = self._render(header, template, cred)
        yield request

    def _usable(self, cred: Credential) -> bool:
        """Every field the templates use is present, non-empty and fit for a header."""
        for name in self.used | {self.options.key_field}:
            value = cred.secrets.get(name) or cred.fields.get(name)
            if not value or CONTROL.search(value):
                return False
        return True

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        """Probe when configured; otherwise only the fields' presence can be checked."""
        if not self._usable(cred):
            raise VerificationFailed(f"{self.upstream.name} - API Invalid credential")
        if self.probe is not None:
            await probe_with(self, cred, http, self.probe, self.upstream)
