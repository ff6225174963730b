"""Admin routes for credentials: parse, check, verify with the provider, store, answer.

No route returns a secret: responses come from ``record.describe``, which has public fields
and the *names* of secret fields only. Each route declares its contract (``operation``), from
which ``/v1/openapi.json`` is generated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from sidecar import audit
from sidecar.errors import SidecarError, VerificationFailed
from sidecar.handlers.auth import authorize, credential_store, key_store
from sidecar.handlers.common import (
    NAME_RE,
    VERIFY_LIMITER,
    check_name,
    if_match,
    json_response,
    parse_body,
    runtime,
)
from sidecar.handlers.contract import NAMED, VAULT, Ok, operation
from sidecar.handlers.keys import proxy_value
from sidecar.handlers.models import (
    CredentialList,
    Saved,
    SavedCredential,
    Verified,
    Versions,
    dump,
)
from sidecar.logging import get_logger
from sidecar.record import CredentialView, describe
from sidecar.schemes.base import Credential, Verification, verification_of
from sidecar.schemes.jws import FIELDS as JWS_FIELDS
from sidecar.schemes.mtls import CERT_FIELD

log = get_logger("sidecar.admin")
routes = web.RouteTableDef()
MTLS_REFUSALS = ("SC2017", "SC2018", "SC2019", "SC2020", "SC2021")  # verify of an mtls pair
JWS_REFUSALS = ("SC2013", "SC2014", "SC2015", "SC2016")  # verify of a jws private key
KEY_REFUSALS = (*JWS_REFUSALS, *MTLS_REFUSALS)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PutBody(_Body):
    upstream: str
    environment: Literal["sandbox", "live"] | None = None
    fields: dict[str, str]
    provider_data: dict[str, Any] = Field(default_factory=dict)
    type: str | None = None


class PismoBody(_Body):
    key: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    type: str = Field(min_length=1)
    provider_data: dict[str, Any] = Field(default_factory=dict)


class PatchBody(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    enabled: bool | None = None
    fields: dict[str, str] | None = None
    provider_data: dict[str, Any] | None = None


async def _verify_then_save(
    request: web.Request, name: str, body: PutBody, version: int | None
) -> tuple[CredentialView, bool, Verification]:
    """The provider says yes before anything is written; a no writes nothing. Also says what
    the yes rested on (probe, token or presence-only), so no answer claims more than was done."""
    rt = runtime(request)
    upstream = rt.upstream(body.upstream)
    environment = body.environment or upstream.cfg.environment
    if environment != upstream.cfg.environment:
        raise SidecarError(
            "SC1002", f"environment: upstream {upstream.name!r} is {upstream.cfg.environment}"
        )
    public, secret = upstream.spec.check(body.fields)
    stamp = datetime.now(UTC)
    candidate = Credential(
        name=name,
        upstream=upstream.name,
        scheme=upstream.spec.scheme,
        environment=environment,
        enabled=True,
        fields=public,
        secrets=secret,
        provider_data=body.provider_data,
        version=0,
        created_at=stamp,
        updated_at=stamp,
    )
    async with upstream.verify_session(candidate, rt.session_for(upstream.name)) as http:
        await upstream.scheme.verify(candidate, http)
    view, created = await credential_store(request).put(
        name, upstream.name, environment, body.fields, body.provider_data, version, body.type
    )
    return view, created, verification_of(upstream.scheme)


@routes.put("/v1/credentials/{name}")
@operation(
    "putCredential",
    "Create or replace; the provider verifies the credential before it is saved",
    Ok(201, "Created", SavedCredential, etag=True),
    Ok(200, "Replaced", SavedCredential, etag=True),
    errors=(*NAMED, "SC2002", "SC2003", "SC2004", "SC2005", "SC2006", *KEY_REFUSALS),
    params=("name", "If-Match"),
    body=PutBody,
)
async def put_credential(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    body = await parse_body(request, PutBody)
    await authorize(request, name, ("read",), ("create", "update"))
    view, created, checked = await _verify_then_save(request, name, body, if_match(request))
    answer = SavedCredential(**view.model_dump(), verification=checked)
    return json_response(dump(answer), status=201 if created else 200, version=view.version)


@routes.post("/v1/credentials")
@operation(
    "pismoCreate",
    "Pismo-compatible create-or-replace, saved as <provider>-<type> (lowercased)",
    Ok(201, "Created", Saved),
    Ok(200, "Replaced", Saved),
    errors=("SC1004", "SC2002", "SC2004", "SC2005", "SC2006", *VAULT, *KEY_REFUSALS),
    body=PismoBody,
)
async def pismo_create(request: web.Request) -> web.Response:
    """Seed 000's create-or-replace: ``{key, provider, type, provider_data}``."""
    body = await parse_body(request, PismoBody)
    rt = runtime(request)
    upstream = rt.upstream(body.provider.lower())
    if not upstream.spec.secret:
        raise SidecarError("SC1002", f"upstream {upstream.name!r} has no secret field")
    public = {k: str(v) for k, v in body.provider_data.items() if k in upstream.spec.public}
    rest = {k: v for k, v in body.provider_data.items() if k not in upstream.spec.public}
    name = f"{body.provider}-{body.type}".lower()
    if not NAME_RE.match(name):
        raise SidecarError("SC1004", "provider and type must form a valid name")
    await authorize(request, name, ("read",), ("create", "update"))
    put = PutBody(
        upstream=upstream.name,
        fields={**public, upstream.spec.secret[0]: body.key},
        provider_data=rest,
        type=body.type,
    )
    try:
        _, created, checked = await _verify_then_save(request, name, put, None)
    except VerificationFailed:
        raise VerificationFailed(f"{body.provider} - API Invalid credential") from None
    value = await proxy_value(key_store(request), upstream, name)
    answer = Saved(message="Credential saved", verification=checked, **value)
    return web.json_response(dump(answer), status=201 if created else 200)


class VerifyBody(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "description": 'Exactly one secret field: {"<field>": "<value>"}',
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {"type": "string"},
        },
    )


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise SidecarError("SC1009", "enabled must be true or false")


@routes.get("/v1/credentials")
@operation(
    "listCredentials",
    "List credential metadata, optionally filtered",
    Ok(200, "Metadata of every matching credential", CredentialList),
    errors=("SC1009", *VAULT),
    params=("provider", "environment", "enabled"),
)
async def list_credentials(request: web.Request) -> web.Response:
    await authorize(request, None, ("list",), metadata=True)
    store = credential_store(request)
    q = request.query
    provider, environment, enabled = (
        q.get("provider"),
        q.get("environment"),
        _flag(q.get("enabled")),
    )
    if environment not in (None, "sandbox", "live"):
        raise SidecarError("SC1009", "environment must be sandbox or live")
    items = []
    for name in await store.names():
        try:
            record, version = await store.read(name)
        except SidecarError as exc:
            if exc.code == "SC2001":  # deleted between list and read
                continue
            raise
        view = describe(name, record, version)
        if provider is not None and view.upstream != provider.lower():
            continue
        if environment is not None and view.environment != environment:
            continue
        if enabled is not None and view.enabled != enabled:
            continue
        items.append(view)
    return web.json_response(dump(CredentialList(credentials=items)))


@routes.get("/v1/credentials/{name}")
@operation(
    "getCredential",
    "Metadata and public fields; never a secret",
    Ok(200, "The credential", CredentialView, etag=True),
    errors=NAMED,
    params=("name",),
)
async def get_credential(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    await authorize(request, name, ("read",))
    record, version = await credential_store(request).read(name)
    return json_response(dump(describe(name, record, version)), version=version)


@routes.patch("/v1/credentials/{name}")
@operation(
    "patchCredential",
    "Change non-secret metadata: enabled, public fields, provider_data",
    Ok(200, "Changed", CredentialView, etag=True),
    errors=(*NAMED, "SC2002", "SC2003", "SC2004"),
    params=("name", "If-Match"),
    body=PatchBody,
)
async def patch_credential(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    body = await parse_body(request, PatchBody)
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise SidecarError("SC1002", "nothing to change: give enabled, fields or provider_data")
    if CERT_FIELD in changes.get("fields", {}):  # unverified, it could break every handshake
        raise SidecarError("SC1002", f"fields.{CERT_FIELD}: replace it with its key by PUT")
    await authorize(request, name, ("read", "update"))
    await _unsigned_fields_only(request, name, changes.get("fields", {}))
    view = await credential_store(request).patch(name, changes, if_match(request))
    return json_response(dump(view), version=view.version)


async def _unsigned_fields_only(request: web.Request, name: str, fields: dict[str, str]) -> None:
    """jws: issuer, subject and key_id go into every token and the probe checked them at save;
    PATCH verifies nothing, so they change by PUT (with the key), like client_certificate."""
    if not fields:
        return
    record, _ = await credential_store(request).read(name)
    upstream = runtime(request).upstreams.get(record.upstream)
    if upstream is None or all(scheme != "jws" for scheme, _ in upstream.specs):
        return
    signed = sorted(set(fields) & set(JWS_FIELDS))
    if signed:
        raise SidecarError("SC1002", f"fields.{signed[0]}: it is signed; replace it by PUT")


@routes.delete("/v1/credentials/{name}")
@operation(
    "deleteCredential",
    "Delete the credential",
    Ok(204, "Deleted"),
    errors=NAMED,
    params=("name",),
)
async def delete_credential(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    await authorize(request, name, ("read",))
    await authorize(request, name, ("delete",), metadata=True)
    await credential_store(request).delete(name)
    return web.Response(status=204)


@routes.post("/v1/credentials/{name}/verify")
@operation(
    "verifyCredential",
    "Compare one secret field with the stored one (transit HMAC, no decryption); "
    "rate-limited per credential (admin.verify_per_minute) and audited",
    Ok(200, "Compared", Verified),
    errors=(*NAMED, "SC1018"),
    params=("name",),
    body=VerifyBody,
    headers=("Retry-After",),
)
async def verify_credential(request: web.Request) -> web.Response:
    """Seed 001's verify, done safely: transit HMAC compare, nothing decrypted or returned.

    Rate-limited per credential (``admin.verify_per_minute``) and audited, allowed or not, so
    that verify cannot serve as an oracle for guessing a secret.
    """
    name = check_name(request.match_info["name"])
    field: str | None = None
    try:
        await authorize(request, name, ("read",))
        limit = runtime(request).config.admin.verify_per_minute
        request.app[VERIFY_LIMITER].hit(name, limit)
        body = await parse_body(request, VerifyBody)
        supplied = body.model_extra or {}
        if len(supplied) != 1 or not all(isinstance(v, str) for v in supplied.values()):
            raise SidecarError("SC1002", 'give exactly one secret field: {"<field>": "<value>"}')
        ((field, value),) = supplied.items()
        valid = await credential_store(request).verify_secret(name, field, value)
    except SidecarError as err:
        audit.verify_attempt(name, field, err.code, request.remote)
        raise
    audit.verify_attempt(name, field, "valid" if valid else "invalid", request.remote)
    message = "Credentials verified successfully" if valid else f"Invalid {field}"
    return web.json_response(dump(Verified(name=name, is_valid=valid, message=message)))


@routes.get("/v1/credentials/{name}/versions")
@operation(
    "credentialVersions",
    "KV v2 version history (metadata only)",
    Ok(200, "Versions", Versions),
    errors=NAMED,
    params=("name",),
)
async def versions(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    await authorize(request, name, ("read",), metadata=True)
    history = await credential_store(request).versions(name)
    return web.json_response(dump(Versions.model_validate({"name": name, "versions": history})))
