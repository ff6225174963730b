"""Admin routes for proxy keys: issue (the key is shown once), list, read, enable/disable, delete.

Modelled on Azupay's API key management (seed 003): permitted operations fixed at creation,
an optional HMAC key, enable/disable, and no key material ever stored or returned after the
201 that issues it. ``last_used_at`` is what *this* replica has seen since it started.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from sidecar.errors import SidecarError
from sidecar.handlers.auth import authorize, credential_store, key_store
from sidecar.handlers.common import check_name, parse_body
from sidecar.handlers.contract import NAMED, Ok, operation
from sidecar.handlers.models import IssuedKey, KeyList, ProxyKey, dump
from sidecar.proxykeys.index import KeyEntry
from sidecar.proxykeys.permissions import ALL, MAX_PERMISSIONS, parse, parse_all
from sidecar.proxykeys.store import KeyStore
from sidecar.upstreams import Upstream

routes = web.RouteTableDef()
NO_STORE = {"Cache-Control": "no-store"}
KEY_ID_CHARS = frozenset("0123456789abcdef")


class IssueBody(BaseModel):
    """``permissions`` like ``POST /api/session``; ``expires_at`` ISO 8601 with a time zone."""

    model_config = ConfigDict(extra="forbid")
    permissions: list[str] = Field(min_length=1, max_length=MAX_PERMISSIONS)
    hmac: StrictBool = False
    expires_at: str | None = None

    @field_validator("permissions")
    @classmethod
    def _permissions(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse(text)
            except ValueError as exc:
                raise ValueError(f"permissions[{i}]: {exc}") from None
        return value

    @field_validator("expires_at")
    @classmethod
    def _expires(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time") from None
        if when.tzinfo is None:
            raise ValueError("must carry a time zone (Z or +hh:mm)")
        if when <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class KeyPatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


def describe_key(entry: KeyEntry) -> ProxyKey:
    """The public view of a key: never the key, its digest or its HMAC key."""
    return ProxyKey(
        key_id=entry.key_id,
        credential=entry.credential,
        permissions=[p.text for p in entry.permissions],
        hmac_enabled=entry.hmac_enabled,
        enabled=entry.enabled,
        expires_at=entry.expires_at,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        last_used_at=entry.last_used_at,
    )


def _key_id(request: web.Request) -> str:
    """Checked before it becomes part of a KV path; anything else cannot name a key."""
    key_id = request.match_info["key_id"]
    if len(key_id) != 18 or not key_id.startswith("pk") or set(key_id[2:]) - KEY_ID_CHARS:
        raise SidecarError("SC5006")
    return key_id


@routes.post("/v1/credentials/{name}/keys")
@operation(
    "issueKey",
    "Issue a proxy key; the key (and HMAC key) are shown in this answer only",
    Ok(201, "Issued", IssuedKey),
    errors=NAMED,
    params=("name",),
    body=IssueBody,
)
async def issue_key(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    body = await parse_body(request, IssueBody)
    await authorize(request, name, ("read", "update"))  # a key spends the credential
    await credential_store(request).read(name)  # SC2001 when there is no such credential
    entry, key, hmac_key = await key_store(request).issue(
        name, parse_all(body.permissions), body.hmac, body.expires_at
    )
    extra = {"key": key} if hmac_key is None else {"key": key, "hmac_key": hmac_key}
    answer = IssuedKey(**describe_key(entry).model_dump(), **extra)
    return web.json_response(dump(answer), status=201, headers=NO_STORE)


@routes.get("/v1/credentials/{name}/keys")
@operation(
    "listKeys",
    "Key ids, permissions and flags; never key material",
    Ok(200, "Keys", KeyList),
    errors=NAMED,
    params=("name",),
)
async def list_keys(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    await authorize(request, name, ("read",))
    entries = await key_store(request).entries(name)
    answer = KeyList(credential=name, keys=[describe_key(e) for e in entries])
    return web.json_response(dump(answer))


@routes.get("/v1/credentials/{name}/keys/{key_id}")
@operation(
    "getKey",
    "One key's status; never key material",
    Ok(200, "The key", ProxyKey),
    errors=(*NAMED, "SC5006"),
    params=("name", "key_id"),
)
async def get_key(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    await authorize(request, name, ("read",))
    entry = await key_store(request).entry(name, _key_id(request))
    return web.json_response(dump(describe_key(entry)))


@routes.patch("/v1/credentials/{name}/keys/{key_id}")
@operation(
    "patchKey",
    "Enable or disable; effective on the next proxied request",
    Ok(200, "Changed", ProxyKey),
    errors=(*NAMED, "SC2002", "SC5006"),
    params=("name", "key_id"),
    body=KeyPatchBody,
)
async def patch_key(request: web.Request) -> web.Response:
    """Enable or disable; permissions are fixed at creation (issue a new key instead)."""
    name = check_name(request.match_info["name"])
    key_id = _key_id(request)
    body = await parse_body(request, KeyPatchBody)
    await authorize(request, name, ("read", "update"))
    entry = await key_store(request).set_enabled(name, key_id, body.enabled)
    return web.json_response(dump(describe_key(entry)))


@routes.delete("/v1/credentials/{name}/keys/{key_id}")
@operation(
    "deleteKey",
    "Delete the key; effective on the next proxied request",
    Ok(204, "Deleted"),
    errors=(*NAMED, "SC5006"),
    params=("name", "key_id"),
)
async def delete_key(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    await authorize(request, name, ("read", "update"))
    await key_store(request).delete(name, _key_id(request))
    return web.Response(status=204)


async def proxy_value(keys: KeyStore, upstream: Upstream, name: str) -> dict[str, str]:
    """Seed 000's proxy value: a key with every permission, for upstreams that require keys."""
    if not upstream.cfg.require_proxy_key:
        return {}
    _, key, _ = await keys.issue(name, parse_all([ALL]), False, None)
    return {"proxy_value": key}
