"""Every admin response body as a pydantic model: the handlers build them, the document shows them.

Why: the OpenAPI document is generated from these classes, and a handler cannot answer a shape
its model does not allow (construction validates), so contract and answers cannot drift.
``CredentialView`` lives with the stored record in ``sidecar.record``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sidecar.record import NAME_PATTERN, CredentialView
from sidecar.schemes.base import Verification

KEY_ID_PATTERN = r"^pk[0-9a-f]{16}$"
KEY_PATTERN = r"^sck_pk[0-9a-f]{16}_[A-Za-z0-9_-]{43}$"


class Answer(BaseModel):
    """Closed objects: an answer with an undeclared key is a bug, caught where it is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(Answer):
    message: str
    code: str = Field(pattern=r"^SC\d{4}$")
    details: dict[str, Any] | None = None


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    ready: bool
    checks: dict[str, bool]


class VaultSession(Answer):
    method: str
    valid: bool
    token_ttl: float | None
    last_ok_age: float | None
    last_error: str | None
    logins: int
    failed_logins: int
    renewals: int
    next_login_in: float | None


class CacheState(Answer):
    age: float | None
    max_stale: float
    credentials: int


class Status(Answer):
    """The why behind /readyz: never a secret, only ages, counts and error codes."""

    ready: bool
    checks: dict[str, bool]
    vault: VaultSession
    cache: CacheState
    last_errors: dict[str, str]
    errors: dict[str, int]


class CredentialList(Answer):
    credentials: list[CredentialView]


VERIFICATION = Field(
    description="what was checked before the save: probe (an authenticated call to the "
    "provider), token (the provider's token endpoint accepted the client) or presence-only "
    "(the provider was not asked; the fields are present and usable)"
)


class SavedCredential(CredentialView):
    """A create/replace answer: the record's view plus how far the provider vouched for it."""

    verification: Verification = VERIFICATION


class Saved(Answer):
    message: Literal["Credential saved"]
    verification: Verification = VERIFICATION
    proxy_value: str | None = Field(
        None,
        description="a proxy key with every permission, when the upstream requires proxy "
        "keys; shown in this answer only",
    )


class Verified(Answer):
    name: str = Field(pattern=NAME_PATTERN)
    is_valid: bool
    message: str


class VersionInfo(Answer):
    version: int = Field(ge=1)
    created_at: str | None
    deleted_at: str | None
    destroyed: bool
    current: bool


class Versions(Answer):
    name: str = Field(pattern=NAME_PATTERN)
    versions: list[VersionInfo]


class ProxyKey(Answer):
    """A key's public view: never the key, its digest or its HMAC key."""

    key_id: str = Field(pattern=KEY_ID_PATTERN)
    credential: str = Field(pattern=NAME_PATTERN)
    permissions: list[str]
    hmac_enabled: bool
    enabled: bool
    expires_at: str | None
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    last_used_at: str | None = Field(description="last use seen by this replica since it started")


class IssuedKey(ProxyKey):
    """The 201 of issuing a key: the only answer that ever holds the key (and HMAC key)."""

    key: str = Field(pattern=KEY_PATTERN)
    hmac_key: str | None = None


class KeyList(Answer):
    credential: str = Field(pattern=NAME_PATTERN)
    keys: list[ProxyKey]


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready, leaving out optional keys that were never set (``hmac_key``, ``details``)."""
    return model.model_dump(mode="json", exclude_unset=True)
