"""A credential as stored in KV v2, and its public view: typed, so neither drifts silently.

Why models and not dicts: the record is read back by every replica and every version of the
sidecar; a typo in a key or a missing field should fail where the record is parsed, with the
field named, not as a ``KeyError`` deep in the proxy. The public view is the one shape every
admin answer about a credential has, and the OpenAPI document is generated from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


def _stamp() -> Any:
    """An ISO 8601 UTC time stamp, kept as the text that was stored."""
    return Field(json_schema_extra={"format": "date-time"})


class SealedSecret(BaseModel):
    """One secret field: transit ciphertext (to decrypt) and transit HMAC (to compare)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ciphertext: str
    hmac: str


class CredentialRecord(BaseModel):
    """The KV v2 secret at ``<prefix>/credentials/<name>``; holds no plaintext secret.

    Unknown keys are ignored, so a newer sidecar's extra keys do not stop an older replica.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    upstream: str
    scheme: str
    environment: Literal["sandbox", "live"]
    enabled: bool = True
    fields: dict[str, str]
    secrets: dict[str, SealedSecret]
    provider_data: dict[str, Any] = Field(default_factory=dict)
    type: str | None = None
    created_at: str
    updated_at: str

    def to_kv(self) -> dict[str, Any]:
        """What is written to KV: plain JSON."""
        return self.model_dump(mode="json")


class CredentialView(BaseModel):
    """A credential's metadata and public fields, and the *names* of its secret fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    upstream: str
    scheme: str
    environment: Literal["sandbox", "live"]
    enabled: bool
    fields: dict[str, str] = Field(description="public fields only")
    secret_fields: list[str]
    provider_data: dict[str, Any]
    type: str | None
    version: int = Field(ge=1)
    created_at: str = _stamp()
    updated_at: str = _stamp()


def describe(name: str, record: CredentialRecord, version: int) -> CredentialView:
    """The public view of a record: metadata and public fields, never a secret."""
    return CredentialView(
        name=name,
        upstream=record.upstream,
        scheme=record.scheme,
        environment=record.environment,
        enabled=record.enabled,
        fields=dict(record.fields),
        secret_fields=sorted(record.secrets),
        provider_data=dict(record.provider_data),
        type=record.type,
        version=version,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
